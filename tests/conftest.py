"""Shared fixtures: a per-session zoo cache (never the user's), tiny real agents, a run-config factory, LoRA helpers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

torch.set_num_threads(1)  # one thread per process: measured faster and steadier on 2-core machines


@pytest.fixture(scope="session", autouse=True)
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HACRL_CACHE for the whole session: CI sets it (inside the clone); locally a temporary directory."""
    cache = os.environ.get("HACRL_CACHE")
    if not cache:
        cache = str(tmp_path_factory.mktemp("hacrl-cache"))
        os.environ["HACRL_CACHE"] = cache
    return Path(cache)


def shipped_math_data() -> Path | None:
    """The reference copies of the math benchmarks (`shared/data/math` beside the repo, or $HACRL_MATH_DATA)."""
    shipped = Path(__file__).resolve().parents[2] / "shared/data/math"
    if shipped.is_dir():
        return shipped
    env = os.environ.get("HACRL_MATH_DATA")
    return Path(env) if env and Path(env).is_dir() else None


def tiny_run_config(out: Path, *, algorithm: str = "hacpo", agents: list[tuple[str, str]] | None = None,
                    **training: Any) -> dict[str, Any]:
    """A run config dict over the test zoo recipes: seconds per step, real models and tokenizers."""
    agents = agents or [("char", "zoo:test-gpt2-char"), ("bpe", "zoo:test-llama-bpe")]
    train = {"steps": 1, "prompts_per_step": 2, "num_generations": 4, "minibatch_size": 6, "max_new_tokens": 16,
             "eval_every": 100, "eval_limit": 4} | training
    return {
        "run_name": "test", "seed": 0, "output_dir": str(out),
        "agents": [{"name": n, "model": m, "lr": 1e-3} for n, m in agents],
        "algorithm": {"name": algorithm},
        "task": {"name": "arithmetic", "options": {"n_train": 200, "n_eval": 20}},
        "training": train,
        "checkpoint": {"every": 100, "keep_last": 2},
        "logging": {"tensorboard": False, "progress": False},
    }


def nonzero_adapters(model: torch.nn.Module) -> torch.nn.Module:
    """A LoRA model with seeded random lora_B: at peft's zero start the adapters add nothing and lora_A gets no
    gradient, which would leave half of what a LoRA test checks untested."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    return model
