"""The one evaluator: how every accuracy hacrl reports is decoded and scored.

Training-time evaluation (`Trainer.evaluate`), `hacrl eval` and the zoo's warm-start measurement all decode with
`decode` (an agent's rollout backend, prompts longest first in fixed-size batches, greedy or sampled from a
generator seeded per call) and score with `score_completions`. So the zoo's recorded warm start is the trainer's
step-0 accuracy, and a number from `hacrl eval` is comparable to one logged during training.

Metrics over an n x k correctness matrix C (problem i, sample j), a score counting as correct when >= 1.0:
* avg@k = mean of C (the expected accuracy of one sample; k = 1 greedy: the greedy accuracy);
* pass@k = mean over problems of the unbiased estimator of Chen et al. (2021), `1 - C(n-c, k) / C(n, k)`, which at
  n = k is exactly "any of the k samples is correct";
* best@k = the best accuracy among the k sample columns (treat sample j of every problem as run j); between avg@k
  and pass@k. Reported where asked (AIME, whose 30 problems make one run noisy).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hacrl.rollout.backend import RolloutBackend
from hacrl.rollout.sampler import Sample, SamplingParams
from hacrl.tasks.base import Problem

__all__ = ["EvalResult", "aggregate", "context_limit", "decode", "pass_at_k", "score_completions"]

Scorer = Callable[[Sequence[Problem], Sequence[str]], list[float]]


def context_limit(config: Any) -> int | None:
    """A model config's position limit, or None when it states none (e.g. rotary models without a cap)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def decode(backend: RolloutBackend, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
           seed: int | None = None, batch_size: int = 128, device: torch.device | str = "cpu",
           on_batch: Callable[[int], None] | None = None) -> list[Sample]:
    """One completion per prompt, in input order.

    Prompts are decoded longest first in batches of `batch_size`: similar lengths waste less padding, and a batch
    too large for the device fails at once rather than at the end. The order is a pure function of the inputs,
    and sampling draws from a generator seeded with `seed` (greedy decoding draws nothing), so a call reproduces
    its completions and never touches the caller's training RNG. `on_batch(n)` reports progress.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = None
    if not params.greedy:
        generator = torch.Generator(device=device).manual_seed(0 if seed is None else seed)
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    out: list[Sample | None] = [None] * len(prompt_ids)
    for at in range(0, len(order), batch_size):
        chunk = order[at:at + batch_size]
        samples = backend.generate([prompt_ids[i] for i in chunk], params, generator=generator, batch_size=batch_size)
        for i, s in zip(chunk, samples, strict=True):
            out[i] = s
        if on_batch is not None:
            on_batch(len(chunk))
    return [s for s in out if s is not None]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k) (Chen et al., 2021).

    Computed as a running product so large n does not overflow; with n == k it is 1.0 if c > 0 else 0.0.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail


def aggregate(correct: Sequence[Sequence[float]], *, best: bool = False) -> dict[str, float | None]:
    """avg@k, pass@k (and best@k when `best`) of a correctness matrix: one row per problem, k scores each.

    A score counts as correct when >= 1.0 (rewards are 0/1; anything in between is partial and counts toward
    avg@k by value but never as a pass). No rows (every prompt skipped) gives None for every metric.
    """
    rows = [list(map(float, r)) for r in correct]
    out: dict[str, float | None] = {"avg_at_k": None, "pass_at_k": None}
    if best:
        out["best_at_k"] = None
    if not rows:
        return out
    k = len(rows[0])
    if k < 1 or any(len(r) != k for r in rows):
        raise ValueError("aggregate: every problem needs the same number (>= 1) of scores")
    out["avg_at_k"] = math.fsum(v for r in rows for v in r) / (len(rows) * k)
    out["pass_at_k"] = math.fsum(pass_at_k(k, sum(v >= 1.0 for v in r), k) for r in rows) / len(rows)
    if best:
        out["best_at_k"] = max(math.fsum(r[j] for r in rows) / len(rows) for j in range(k))
    return out


@dataclass
class EvalResult:
    """Scores of one agent on one problem set. `matrix[i]` holds the k scores of problem i."""

    k: int
    matrix: list[list[float]]
    metrics: dict[str, float | None]
    per_kind: dict[str, float] = field(default_factory=dict)
    truncated_frac: float | None = None
    mean_completion_tokens: float | None = None

    @property
    def accuracy(self) -> float | None:
        """avg@k (the greedy accuracy for k = 1)."""
        return self.metrics["avg_at_k"]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("matrix")
        return out


def score_completions(problems: Sequence[Problem], samples: Sequence[Sample], scorer: Scorer, *, k: int = 1,
                      best: bool = False) -> EvalResult:
    """Score k completions per problem (problem-major: samples[i * k + j] is sample j of problem i).

    `per_kind` holds avg@k per problem kind when the problems have more than one kind.
    """
    if len(samples) != len(problems) * k:
        raise ValueError(f"score_completions: {len(samples)} samples for {len(problems)} problems x k = {k}")
    scores = scorer([p for p in problems for _ in range(k)], [s.text for s in samples])
    matrix = [list(scores[i * k:(i + 1) * k]) for i in range(len(problems))]
    kinds = sorted({p.kind for p in problems})
    per_kind: dict[str, float] = {}
    if len(kinds) > 1:
        for kind in kinds:
            rows = [m for m, p in zip(matrix, problems, strict=True) if p.kind == kind]
            per_kind[kind] = math.fsum(v for r in rows for v in r) / (len(rows) * k)
    n = len(samples)
    return EvalResult(
        k=k, matrix=matrix, metrics=aggregate(matrix, best=best), per_kind=per_kind,
        truncated_frac=sum(s.truncated for s in samples) / n if n else None,
        mean_completion_tokens=sum(len(s.completion_ids) for s in samples) / n if n else None,
    )
