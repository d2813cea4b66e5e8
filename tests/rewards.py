"""Reward functions for tests, importable as `rewards:NAME` with tests/ on the path (TRL convention)."""

from __future__ import annotations


def graded(prompts: list[str], completions: list[str], **columns: list) -> list[float]:
    """Varies between responses, so untrained test agents still get a learning signal."""
    return [(len(c) % 7) / 6 for c in completions]


def always_raises(prompts: list[str], completions: list[str], **columns: list) -> list[float]:
    raise RuntimeError("reward server unavailable")


def wrong_length(prompts: list[str], completions: list[str], **columns: list) -> list[float]:
    return [1.0]


def some_nan(prompts: list[str], completions: list[str], **columns: list) -> list[float | None]:
    return [float("nan") if i % 4 == 0 else (None if i % 4 == 1 else 1.0) for i in range(len(completions))]


def coin(prompts: list[str], completions: list[str], **columns: list) -> list[float]:
    """0/1, earned by about a third of responses: all-fail and mixed groups both occur (GRAFT, SGT)."""
    return [float(len(c) % 3 == 0) for c in completions]
