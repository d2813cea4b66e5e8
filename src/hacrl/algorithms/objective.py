"""What a learner optimises, resolved once from the run configuration: the `Objective`.

`resolve_objective` combines a preset (hacrl.algorithms.presets) with the `algorithm:` section of the run
configuration into one frozen, picklable object with every number filled in. The coordinator uses its planning
half (`plan_rows`: which pooled rows a learner trains on, their advantages and weights); the learner calls its
loss (`Objective.loss`) on each mini-batch. Neither looks at a preset name, so a new rule is a new preset and,
at most, a new estimator, row selection or loss class here.

Equations and conventions: docs/method.md (numbers refer to the HACPO paper, arXiv 2603.02604).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import Tensor

from hacrl.algorithms.advantages import capability_aware_advantages, group_advantages
from hacrl.algorithms.capability import CapabilityTracker
from hacrl.algorithms.losses import GRPOLossType, cross_lower_bound, grpo_loss, gspo_loss, hacpo_loss
from hacrl.algorithms.presets import AdvantageEstimator, CrossWeights, LossKind, RowSelection, get_preset
from hacrl.algorithms.stats import LossStats

if TYPE_CHECKING:
    from hacrl.config import AlgorithmConfig

__all__ = ["HACPOLoss", "LossInputs", "Objective", "PlannedRows", "SequenceClipLoss", "TokenClipLoss",
           "resolve_objective"]

Normaliser = Literal["responses", "tokens"]
"""What a loss averages over within a mini-batch: its rows, or its completion tokens (GRPO's bnpo/dapo)."""

DEFAULT_EPS: dict[LossKind, tuple[float, float]] = {
    "token_clip": (0.2, 0.28),  # DAPO clip-higher
    "sequence_clip": (3e-4, 4e-4),  # GSPO
    "hacpo": (3e-4, 4e-4),  # GSPO for self rows
}


@dataclass(frozen=True)
class LossInputs:
    """The tensors one mini-batch's loss may read (by keyword; each loss reads what it needs).

    `logps [B, T]` (with grad) and `mask [B, T]` as in `hacrl.rollout.logprobs.completion_logps`; per row
    `source_logps` (length-normalised rollout log-prob under the source), `advantages`, `is_self`, `weights`
    (omega for HACPO's cross rows, else 1); `old_token_logps [B, T]` the learner's own no-grad log-probs at the
    start of the step, for losses that need them (`needs_old_token_logps`).
    """

    logps: Tensor
    mask: Tensor
    source_logps: Tensor
    advantages: Tensor
    is_self: Tensor
    weights: Tensor
    old_token_logps: Tensor | None = None


@dataclass(frozen=True)
class TokenClipLoss:
    """GRPO: token-level ratio against the learner's old policy, DAPO clip-higher, TRL `loss_type` aggregation."""

    eps_low: float
    eps_high: float
    loss_type: GRPOLossType
    max_completion_length: int
    needs_old_token_logps: ClassVar[bool] = True

    @property
    def normaliser(self) -> Normaliser:
        return "tokens" if self.loss_type in ("bnpo", "dapo") else "responses"

    def __call__(self, inputs: LossInputs, update_index: int) -> tuple[Tensor, LossStats]:
        if inputs.old_token_logps is None:
            raise ValueError("TokenClipLoss needs old_token_logps (the learner's log-probs at the start of the step)")
        return grpo_loss(logps=inputs.logps, mask=inputs.mask, old_logps=inputs.old_token_logps,
                         advantages=inputs.advantages, eps_low=self.eps_low, eps_high=self.eps_high,
                         loss_type=self.loss_type, max_completion_length=self.max_completion_length)


@dataclass(frozen=True)
class SequenceClipLoss:
    """GSPO: length-normalised sequence ratio against the rollout log-prob, every row treated alike."""

    eps_low: float
    eps_high: float
    needs_old_token_logps: ClassVar[bool] = False
    normaliser: ClassVar[Normaliser] = "responses"

    def __call__(self, inputs: LossInputs, update_index: int) -> tuple[Tensor, LossStats]:
        return gspo_loss(logps=inputs.logps, mask=inputs.mask, old_logps=inputs.source_logps,
                         advantages=inputs.advantages, eps_low=self.eps_low, eps_high=self.eps_high)


@dataclass(frozen=True)
class HACPOLoss:
    """HACPO: GSPO for self rows; `c * sg(c)^alpha * omega * A` with `c` clipped into `[lower_m, 1]` for cross
    rows (docs/method.md §3.3-3.5, paper eq. 10-13)."""

    eps_low: float
    eps_high: float
    alpha: float
    delta: float
    delta_step: float
    clip_cross: bool
    needs_old_token_logps: ClassVar[bool] = False
    normaliser: ClassVar[Normaliser] = "responses"

    def lower_bound(self, update_index: int) -> float:
        """The stepwise cross lower bound of the `update_index`-th update of the step (paper eq. 12)."""
        return cross_lower_bound(update_index, self.delta, self.delta_step)

    def __call__(self, inputs: LossInputs, update_index: int) -> tuple[Tensor, LossStats]:
        return hacpo_loss(logps=inputs.logps, mask=inputs.mask, source_logps=inputs.source_logps,
                          advantages=inputs.advantages, is_self=inputs.is_self, omegas=inputs.weights,
                          update_index=update_index, eps_low=self.eps_low, eps_high=self.eps_high, alpha=self.alpha,
                          delta=self.delta, delta_step=self.delta_step, clip_cross=self.clip_cross)


Loss = TokenClipLoss | SequenceClipLoss | HACPOLoss


@dataclass(frozen=True)
class PlannedRows:
    """One learner's share of the step's pool: pool indices, and an advantage and a weight per index."""

    indices: list[int]
    advantages: list[float]
    weights: list[float]


@dataclass(frozen=True)
class Objective:
    """Everything that defines what a learner optimises, with every number filled in.

    * `rows`, `advantage`, `cross_weights`: the coordinator's half (`plan_rows`).
    * `loss`: the per-mini-batch loss, called by the learner; `loss.normaliser` says what it averages over.
    * `minibatch_order`: `self_first` (the reference implementation's order: self rows, then cross) or `shuffle`.
    * `kl_beta`: weight of the k3 KL penalty to a frozen copy of the initial model (0 = none).
    * `rollout_multiplier`: responses per prompt relative to each agent's G.
    """

    name: str
    rows: RowSelection
    advantage: AdvantageEstimator
    cross_weights: CrossWeights
    loss: Loss
    rollout_multiplier: int
    minibatch_order: Literal["self_first", "shuffle"]
    kl_beta: float
    advantage_eps: float
    max_reward: float
    ratio_bounds: tuple[float, float]

    @property
    def shares_rollouts(self) -> bool:
        return self.rows == "pool"

    def plan_rows(self, *, rewards: Tensor, groups: Tensor, sources: Tensor, learner: int,
                  capability: CapabilityTracker) -> PlannedRows:
        """Which pool rows learner `learner` trains on, with their advantages and weights.

        `rewards` / `groups` (prompt index) / `sources` have one entry per pooled response; `capability` has been
        updated with this step's rewards (docs/method.md §2, step 4) before this is called.
        """
        if self.rows == "own":
            own = (sources == learner).nonzero().flatten()
            adv = group_advantages(rewards[own], groups[own], eps=self.advantage_eps)
            return PlannedRows(own.tolist(), adv.tolist(), [1.0] * len(own))
        adv = self._pooled_advantages(rewards, groups, sources, learner, capability)
        weights = (capability.ratios_for(sources, learner).tolist() if self.cross_weights == "omega"
                   else [1.0] * len(rewards))
        return PlannedRows(list(range(len(rewards))), adv.tolist(), weights)

    def _pooled_advantages(self, rewards: Tensor, groups: Tensor, sources: Tensor, learner: int,
                           capability: CapabilityTracker) -> Tensor:
        if self.advantage == "capability":
            return capability_aware_advantages(rewards, groups, sources, learner, capability.capabilities(),
                                               ratio_bounds=self.ratio_bounds, max_reward=self.max_reward,
                                               eps=self.advantage_eps)
        if self.advantage == "joint_group":
            return group_advantages(rewards, groups, eps=self.advantage_eps)
        adv = torch.zeros_like(rewards)  # source_group: each source's rows against its own group
        for source in sources.unique().tolist():
            rows = (sources == source).nonzero().flatten()
            adv[rows] = group_advantages(rewards[rows], groups[rows], eps=self.advantage_eps)
        return adv


def _loss(kind: LossKind, algo: AlgorithmConfig, pins: dict[str, object], max_completion_length: int) -> Loss:
    low, high = DEFAULT_EPS[kind]
    eps_low = algo.eps_low if algo.eps_low is not None else low
    eps_high = algo.eps_high if algo.eps_high is not None else high
    if kind == "token_clip":
        return TokenClipLoss(eps_low=eps_low, eps_high=eps_high, loss_type=algo.loss_type,  # type: ignore[arg-type]
                             max_completion_length=max_completion_length)
    if kind == "sequence_clip":
        return SequenceClipLoss(eps_low=eps_low, eps_high=eps_high)
    return HACPOLoss(eps_low=eps_low, eps_high=eps_high, alpha=float(pins.get("alpha", algo.alpha)),  # type: ignore[arg-type]
                     delta=algo.delta, delta_step=float(pins.get("delta_step", algo.delta_step)),  # type: ignore[arg-type]
                     clip_cross=bool(pins.get("clip_cross", True)))


def resolve_objective(algo: AlgorithmConfig, *, max_completion_length: int) -> Objective:
    """The `Objective` of `algo.name` with this run's hyperparameters (pinned preset values win).

    `max_completion_length` is the sampler's `max_new_tokens` (GRPO's `dr_grpo` divides by it).
    """
    preset = get_preset(algo.name)
    low, high = algo.ratio_bounds
    return Objective(
        name=preset.name, rows=preset.rows, advantage=preset.advantage, cross_weights=preset.cross_weights,
        loss=_loss(preset.loss, algo, preset.pinned(), max_completion_length),
        rollout_multiplier=preset.rollout_multiplier, minibatch_order=algo.minibatch_order, kl_beta=algo.beta,
        advantage_eps=algo.advantage_eps, max_reward=algo.max_reward, ratio_bounds=(float(low), float(high)),
    )
