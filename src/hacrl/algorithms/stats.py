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
    """Importance ratios of one group of terms (self or cross responses; tokens for token-level losses).

    `count` is how many ratios; `below` / `above` how many lie under / over the clip interval (`outside` is
    either); `zero_grad` how many had their gradient removed by the clip; `weighted` terms also carry a weight
    (HACPO's omega, GRAFT's compatibility weight) summed in `weight_sum`.
    """

    count: int = 0
    ratio_sum: float = 0.0
    ratio_min: float = math.inf
    ratio_max: float = -math.inf
    below: int = 0
    above: int = 0
    zero_grad: int = 0
    weighted: bool = False
    weight_sum: float = 0.0

    @classmethod
    def of(cls, ratio: Tensor, *, low: float, high: float, zero_grad: Tensor,
           weights: Tensor | None = None) -> RatioStats:
        """Stats of `ratio` (any shape, already restricted to the group) against the interval [low, high]."""
        r = ratio.detach().double().reshape(-1)
        if r.numel() == 0:
            return cls(weighted=weights is not None)
        return cls(count=int(r.numel()), ratio_sum=float(r.sum()), ratio_min=float(r.min()), ratio_max=float(r.max()),
                   below=int((r < low).sum()), above=int((r > high).sum()), zero_grad=int(zero_grad.sum()),
                   weighted=weights is not None,
                   weight_sum=float(weights.detach().double().sum()) if weights is not None else 0.0)

    @property
    def outside(self) -> int:
        return self.below + self.above

    def merged(self, other: RatioStats) -> RatioStats:
        return RatioStats(
            count=self.count + other.count, ratio_sum=self.ratio_sum + other.ratio_sum,
            ratio_min=min(self.ratio_min, other.ratio_min), ratio_max=max(self.ratio_max, other.ratio_max),
            below=self.below + other.below, above=self.above + other.above, zero_grad=self.zero_grad + other.zero_grad,
            weighted=self.weighted or other.weighted, weight_sum=self.weight_sum + other.weight_sum)

    def metrics(self, prefix: str) -> dict[str, float]:
        """`{prefix}/count`, ratio mean/min/max, clip fractions (of `count`) and the mean weight."""
        out = {f"{prefix}/count": float(self.count)}
        if not self.count:
            return out
        n = float(self.count)
        out |= {f"{prefix}/ratio_mean": self.ratio_sum / n, f"{prefix}/ratio_min": self.ratio_min,
                f"{prefix}/ratio_max": self.ratio_max, f"{prefix}/clip_frac": self.outside / n,
                f"{prefix}/clip_low_frac": self.below / n, f"{prefix}/clip_high_frac": self.above / n,
                f"{prefix}/zero_grad_frac": self.zero_grad / n}
        if self.weighted:
            out[f"{prefix}/weight_mean"] = self.weight_sum / n
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

    def merged(self, other: LossStats) -> LossStats:
        """Two pieces of one mini-batch (micro-batches): their scaled losses add up, their ratios pool."""
        return LossStats(loss=self.loss + other.loss, self=self.self.merged(other.self),
                         cross=self.cross.merged(other.cross),
                         lower_bound=self.lower_bound if self.lower_bound is not None else other.lower_bound)

    def metrics(self) -> dict[str, float]:
        """The flat metric dict of this one evaluation (tests and single-call users read it)."""
        out = {"loss": self.loss, **self.self.metrics("self")}
        if self.lower_bound is not None:
            out["cross/lower_bound"] = self.lower_bound
        if self.cross.count or self.lower_bound is not None:
            out |= self.cross.metrics("cross")
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
            out |= self.cross.metrics("cross")
        if self.lower_bounds:
            out["cross/lower_bound_first"], out["cross/lower_bound_last"] = self.lower_bounds[0], self.lower_bounds[-1]
        return out
