"""Why a run ended where it did: its logged training diagnostics, summarised per agent.

A comparison table says *which* algorithm ended better; it cannot say why. The trainer already logs, per agent and
step, the quantities that explain a policy-gradient update (CleanRL style): the on-policy reward, the gradient norm
before clipping, how many self responses the GSPO clip silenced, how many cross responses fell outside the stepwise
window (and so carried no gradient), the capability ratio omega applied to them, and how many rows had an advantage
of exactly zero. This module turns a run's ``train`` records into one number per quantity, so `hacrl compare` can
print them beside the accuracies and store them in ``results.json``.

Pure functions over plain records (no torch), so they are cheap to test with hand-made rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

MEAN_OVER_STEPS: dict[str, str] = {
    "grad_norm": "grad norm (pre-clip)",
    "self/clip_frac": "self clipped",
    "cross/zero_grad_frac": "cross without gradient",
    "cross/clip_low_frac": "cross below clip",
    "cross/clip_high_frac": "cross above clip",
    "cross/weight_mean": "cross weight",
    "zero_advantage_frac": "zero-advantage rows",
}
"""Metrics averaged over every training step that logged them, with the label a report prints for each.
Cross metrics are absent for single-agent algorithms; their summary is then None ("-" in a table)."""
SHARING_PER_STEP: dict[str, str] = {
    "share/candidates": "candidate prompts",
    "share/kept": "kept after balancing",
    "gate/pass_frac": "gate pass",
    "gate/weight_mean": "gate weight",
    "transfer/responses": "transferred responses",
    "transfer/tokens": "transferred tokens",
    "share/sgt_pairs": "SGT pairs",
}
"""Sharing diagnostics (GRAFT, SGT), averaged per step. Candidates and kept prompts are summed over the sources of
each step (`share/from_<source>/candidates`) before averaging."""


def _mean(values: Sequence[float]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return math.fsum(finite) / len(finite) if finite else None


def reward_window(steps: int) -> int:
    """Steps in the first and last reward windows: a quarter of the run, at least one step."""
    return max(1, steps // 4)


def summarise_agent(records: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """One agent's ``train`` records (one per step, in step order) -> its diagnostics.

    ``reward_first`` / ``reward_last``: mean on-policy reward (sampled at the training temperature, on fresh
    training prompts) over the first and last quarter of the steps; their difference is the learning signal the
    greedy held-out evaluation measures only coarsely. Every key of `MEAN_OVER_STEPS`: its mean over the steps.
    """
    rows = sorted(records, key=lambda r: int(r["step"]))
    window = reward_window(len(rows))
    rewards = [r.get("reward") for r in rows]
    out: dict[str, float | None] = {
        "steps": float(len(rows)),
        "reward_first": _mean(rewards[:window]) if rows else None,
        "reward_last": _mean(rewards[-window:]) if rows else None,
    }
    for key in MEAN_OVER_STEPS:
        out[key] = _mean([r[key] for r in rows if key in r])
    for key in SHARING_PER_STEP:
        out[key] = _mean([_summed(r, key) for r in rows if _summed(r, key) is not None])
    return out


def _summed(record: Mapping[str, Any], key: str) -> float | None:
    """A sharing metric of one step; candidates / kept are summed over the per-source keys."""
    if key in record:
        return record[key]
    prefix, _, name = key.partition("/")
    parts = [v for k, v in record.items() if k.startswith(f"{prefix}/from_") and k.endswith(f"/{name}")]
    return math.fsum(parts) if parts else None


def mean_over_runs(summaries: Sequence[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Average several runs' (seeds') summaries key by key, ignoring runs where a key is missing."""
    keys = list(dict.fromkeys(k for s in summaries for k in s))
    return {k: _mean([s.get(k) for s in summaries if s.get(k) is not None]) for k in keys}


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def sharing_table(rows: Sequence[tuple[str, Mapping[str, float | None]]]) -> list[str]:
    """Markdown lines of one agent's sharing diagnostics (rules that logged any), per step on average."""
    shown = [(name, d) for name, d in rows if any(d.get(k) is not None for k in SHARING_PER_STEP)]
    if not shown:
        return []
    lines = ["| Method | " + " | ".join(label.capitalize() for label in SHARING_PER_STEP.values()) + " |",
             "|---|" + "---:|" * len(SHARING_PER_STEP)]
    for name, d in shown:
        cells = [_fraction(d.get(k)) if k == "gate/pass_frac" else _number(d.get(k)) for k in SHARING_PER_STEP]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def diagnostics_table(rows: Sequence[tuple[str, Mapping[str, float | None]]]) -> list[str]:
    """Markdown lines of one agent's diagnostics table: one (method name, summary) row per algorithm."""
    lines = ["| Method | Train reward, first → last quarter | " + " | ".join(
        label.capitalize() for label in MEAN_OVER_STEPS.values()) + " |",
        "|---|---|" + "---:|" * len(MEAN_OVER_STEPS)]
    for name, d in rows:
        reward = f"{_fraction(d.get('reward_first'))} → {_fraction(d.get('reward_last'))}"
        cells = [_number(d.get(k)) if k in ("grad_norm", "cross/weight_mean") else _fraction(d.get(k))
                 for k in MEAN_OVER_STEPS]
        lines.append(f"| {name} | {reward} | " + " | ".join(cells) + " |")
    return lines
