"""What a loss reports about itself, as explicit sums and counts.

Why sums and counts: a learner runs several mini-batches per step (and, with micro-batching, several pieces
per mini-batch); a mean of per-mini-batch means weights a mini-batch of 3 responses like one of 300, and a
minimum or a maximum cannot be averaged at all. Every loss returns a `LossStats`; the learner adds them up with
`merged` and turns the total into logged metrics once, in `UpdateStats.metrics`. Metric names are defined here
and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["LossStats", "RatioStats", "UpdateStats"]


@dataclass
class RatioStats:
    """Importance ratios of one group of terms (self or cross responses, or self tokens for GRPO).

    `count` is how many ratios (responses for sequence-level ratios, tokens for token-level ones); `outside`
    how many lie outside the clip interval; `below` / `above` how many lie under / over it (cross responses);
    `zero_grad` how many had their gradient removed by the clip; `weight_sum` the sum of the per-response
    weights (HACPO's omega) over the group.
    """

    count: int = 0
    ratio_sum: float = 0.0
    ratio_min: float = math.inf
    ratio_max: float = -math.inf
    outside: int = 0
    below: int = 0
    above: int = 0
    zero_grad: int = 0
    weight_sum: float = 0.0

    @classmethod
    def of(cls, ratio: Tensor, *, outside: Tensor | None = None, below: Tensor | None = None,
           above: Tensor | None = None, zero_grad: Tensor | None = None, weights: Tensor | None = None) -> RatioStats:
        """Stats of the ratios in `ratio` (any shape, already restricted to the group); masks of the same shape."""
        r = ratio.detach().double().reshape(-1)
        if r.numel() == 0:
            return cls()

        def count(mask: Tensor | None) -> int:
            return int(mask.sum()) if mask is not None else 0

        return cls(count=int(r.numel()), ratio_sum=float(r.sum()), ratio_min=float(r.min()), ratio_max=float(r.max()),
                   outside=count(outside), below=count(below), above=count(above), zero_grad=count(zero_grad),
                   weight_sum=float(weights.detach().double().sum()) if weights is not None else 0.0)

    def merged(self, other: RatioStats) -> RatioStats:
        return RatioStats(
            count=self.count + other.count, ratio_sum=self.ratio_sum + other.ratio_sum,
            ratio_min=min(self.ratio_min, other.ratio_min), ratio_max=max(self.ratio_max, other.ratio_max),
            outside=self.outside + other.outside, below=self.below + other.below, above=self.above + other.above,
            zero_grad=self.zero_grad + other.zero_grad, weight_sum=self.weight_sum + other.weight_sum)

    def metrics(self, prefix: str, *, bounds_below_above: bool = False, weighted: bool = False) -> dict[str, float]:
        """`{prefix}/count`, ratio mean/min/max and clip fractions (fractions of `count`)."""
        out = {f"{prefix}/count": float(self.count)}
        if not self.count:
            return out
        n = float(self.count)
        out |= {f"{prefix}/ratio_mean": self.ratio_sum / n, f"{prefix}/ratio_min": self.ratio_min,
                f"{prefix}/ratio_max": self.ratio_max, f"{prefix}/zero_grad_frac": self.zero_grad / n}
        if bounds_below_above:
            out |= {f"{prefix}/clip_low_frac": self.below / n, f"{prefix}/clip_high_frac": self.above / n}
        else:
            out[f"{prefix}/clip_frac"] = self.outside / n
        if weighted:
            out[f"{prefix}/omega_mean"] = self.weight_sum / n
        return out


@dataclass
class LossStats:
    """One loss evaluation: its value and the ratio statistics of its self and cross terms.

    `lower_bound` is HACPO's stepwise cross bound used for this mini-batch (None for losses without one).
    """

    loss: float
    self: RatioStats = field(default_factory=RatioStats)
    cross: RatioStats = field(default_factory=RatioStats)
    lower_bound: float | None = None

    def metrics(self) -> dict[str, float]:
        """The flat metric dict of this one evaluation (tests and single-call users read it)."""
        out = {"loss": self.loss, **self.self.metrics("self")}
        if self.lower_bound is not None:
            out["cross/lower_bound"] = self.lower_bound
            out |= self.cross.metrics("cross", bounds_below_above=True, weighted=True)
        return out


@dataclass
class UpdateStats:
    """A learner's whole step: the sum of its mini-batches' `LossStats` plus optimizer facts.

    `updates` counts optimizer steps taken (including all-zero mini-batches, which AdamW still steps on);
    `skipped` mini-batches dropped for NaN/inf; `losses` / `grad_norm_sum` / `kl_sum` sum over the mini-batches
    that computed a loss (`scored`). `lower_bounds` lists the cross bound of every mini-batch with cross rows.
    """

    updates: int = 0
    skipped: int = 0
    scored: int = 0
    loss_sum: float = 0.0
    grad_norm_sum: float = 0.0
    kl_sum: float = 0.0
    kl_terms: int = 0
    self: RatioStats = field(default_factory=RatioStats)
    cross: RatioStats = field(default_factory=RatioStats)
    lower_bounds: list[float] = field(default_factory=list)

    def add(self, stats: LossStats, *, grad_norm: float, kl: float | None) -> None:
        """Count one scored mini-batch."""
        self.scored += 1
        self.loss_sum += stats.loss
        self.grad_norm_sum += grad_norm
        if kl is not None:
            self.kl_sum += kl
            self.kl_terms += 1
        self.self = self.self.merged(stats.self)
        self.cross = self.cross.merged(stats.cross)
        if stats.lower_bound is not None and stats.cross.count > 0:
            self.lower_bounds.append(stats.lower_bound)

    def metrics(self) -> dict[str, float]:
        """Logged metrics of the step: means over scored mini-batches, pooled ratio statistics, counts."""
        out: dict[str, float] = {"updates": float(self.updates), "skipped_updates": float(self.skipped)}
        if self.scored:
            out["loss"] = self.loss_sum / self.scored
            out["grad_norm"] = self.grad_norm_sum / self.scored
        if self.kl_terms:
            out["kl"] = self.kl_sum / self.kl_terms
        out |= self.self.metrics("self")
        if self.cross.count or self.lower_bounds:
            out |= self.cross.metrics("cross", bounds_below_above=True, weighted=True)
        if self.lower_bounds:
            out["cross/lower_bound_first"], out["cross/lower_bound_last"] = self.lower_bounds[0], self.lower_bounds[-1]
        return out
