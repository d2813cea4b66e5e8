"""What a learner optimises, resolved once from the run configuration: the `Objective`.

`resolve_objective` combines a preset (hacrl.algorithms.presets) with the `algorithm:` section of the run
configuration into one frozen, picklable object with every number filled in. The coordinator uses its planning
half (`plan_rows`: which pooled rows a learner trains on, their advantages and weights); the learner calls its
loss (`Objective.loss`) on each mini-batch. Neither looks at a preset name, so a new rule is a new preset and,
at most, a new estimator, row selection or loss class here.

Equations and conventions: docs/method.md (numbers refer to the HACPO paper, arXiv 2603.02604).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import Tensor

from hacrl.algorithms.advantages import capability_aware_advantages, group_advantages
from hacrl.algorithms.capability import CapabilityTracker
from hacrl.algorithms.losses import GRPOLossType, cross_lower_bound, grpo_loss, gspo_loss, hacpo_loss, nll_loss
from hacrl.algorithms.presets import (
    AdvantageEstimator,
    CrossWeights,
    LossKind,
    MinibatchOrder,
    Preset,
    RowSelection,
    Transfer,
    get_preset,
)
from hacrl.algorithms.sharing import (
    SuccessCounts,
    graft_assignments,
    graft_candidates,
    sgt_draws,
    success_counts,
)
from hacrl.algorithms.stats import LossStats

if TYPE_CHECKING:
    from hacrl.config import AlgorithmConfig

__all__ = ["CompatibilityGate", "HACPOLoss", "LossInputs", "Objective", "PlannedRows", "SequenceClipLoss",
           "SequenceOldClipLoss", "TokenClipLoss", "resolve_objective"]

Normaliser = Literal["responses", "tokens"]
"""What a loss averages over within a mini-batch: its rows, or its completion tokens (GRPO's bnpo/dapo)."""

DEFAULT_EPS: dict[LossKind, tuple[float, float]] = {
    "token_clip": (0.2, 0.28),  # DAPO clip-higher
    "sequence_clip": (3e-4, 4e-4),  # GSPO
    "sequence_clip_old": (0.2, 0.28),  # GRAFT's sequence-level ablation keeps GRAFT's clip
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

    def rows(self, keep: Tensor) -> LossInputs:
        """The inputs of the rows where `keep` (a [B] bool mask) is True."""
        return LossInputs(logps=self.logps[keep], mask=self.mask[keep], source_logps=self.source_logps[keep],
                          advantages=self.advantages[keep], is_self=self.is_self[keep], weights=self.weights[keep],
                          old_token_logps=None if self.old_token_logps is None else self.old_token_logps[keep])


@dataclass(frozen=True)
class TokenClipLoss:
    """GRPO: token-level ratio against the learner's old policy, DAPO clip-higher, TRL `loss_type` aggregation."""

    eps_low: float
    eps_high: float
    loss_type: GRPOLossType
    max_completion_length: int
    weighted: bool = False
    """Multiply each row's terms by its weight (GRAFT's compatibility weight)."""
    needs_old_token_logps: ClassVar[bool] = True

    @property
    def normaliser(self) -> Normaliser:
        return "tokens" if self.loss_type in ("bnpo", "dapo") else "responses"

    def __call__(self, inputs: LossInputs, update_index: int) -> tuple[Tensor, LossStats]:
        return grpo_loss(logps=inputs.logps, mask=inputs.mask, old_logps=_old(inputs), advantages=inputs.advantages,
                         eps_low=self.eps_low, eps_high=self.eps_high, loss_type=self.loss_type,
                         max_completion_length=self.max_completion_length,
                         weights=inputs.weights if self.weighted else None, is_self=inputs.is_self)


def _old(inputs: LossInputs) -> Tensor:
    if inputs.old_token_logps is None:
        raise ValueError("this loss needs old_token_logps (the learner's own log-probs at the start of the step)")
    return inputs.old_token_logps


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
class SequenceOldClipLoss:
    """A length-normalised sequence ratio against the learner's own old policy with DAPO's clip, rows weighted
    (GRAFT's sequence-level ablation of its token-level ratio)."""

    eps_low: float
    eps_high: float
    weighted: bool = False
    needs_old_token_logps: ClassVar[bool] = True
    normaliser: ClassVar[Normaliser] = "responses"

    def __call__(self, inputs: LossInputs, update_index: int) -> tuple[Tensor, LossStats]:
        return gspo_loss(logps=inputs.logps, mask=inputs.mask, old_logps=_old(inputs), advantages=inputs.advantages,
                         eps_low=self.eps_low, eps_high=self.eps_high,
                         weights=inputs.weights if self.weighted else None)


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


Loss = TokenClipLoss | SequenceClipLoss | SequenceOldClipLoss | HACPOLoss


@dataclass(frozen=True)
class CompatibilityGate:
    """GRAFT's gate on transferred responses: keep score = exp(lbar_r_old - lbar_s) > delta, weight min(score, 1)
    (or 1 without `weighting`); computed by the learner once at the start of the step (docs/method.md §4.1)."""

    delta: float
    weighting: bool


@dataclass(frozen=True)
class PlannedRows:
    """One learner's share of the step's pool: pool indices, and per index an advantage, a weight and whether it is
    a supervised row (SGT); `diagnostics` counts what the selection did (candidates, kept, transferred)."""

    indices: list[int]
    advantages: list[float]
    weights: list[float]
    supervised: list[bool] = field(default_factory=list)
    diagnostics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Objective:
    """Everything that defines what a learner optimises, with every number filled in.

    * `rows`, `advantage`, `cross_weights`, `balance`, `transfer`, `nll_weight`: the coordinator's half (`plan_rows`).
    * `loss`: the per-mini-batch policy loss, called by the learner (`minibatch_loss`); `loss.normaliser` says what it
      averages over. `gate`: GRAFT's compatibility gate, applied by the learner before its mini-batches.
    * `minibatch_order`: how own and peer rows are laid out into mini-batches (hacrl.algorithms.presets).
    * `kl_beta`: weight of the k3 KL penalty to a frozen copy of the initial model (0 = none).
    * `rollout_multiplier` / `num_generations`: responses per prompt, relative to each agent's G or absolute.
    """

    name: str
    rows: RowSelection
    advantage: AdvantageEstimator
    cross_weights: CrossWeights
    loss: Loss
    minibatch_order: MinibatchOrder
    rollout_multiplier: int
    num_generations: int | None
    kl_beta: float
    advantage_eps: float
    max_reward: float
    ratio_bounds: tuple[float, float]
    gate: CompatibilityGate | None = None
    balance: bool = False
    transfer: Transfer = "whole_group"
    nll_weight: float = 0.0

    @property
    def shares_rollouts(self) -> bool:
        return self.rows != "own"

    def responses_per_prompt(self, g: int) -> int:
        """What an agent with G = `g` samples per prompt under this objective."""
        return self.num_generations if self.num_generations is not None else g * self.rollout_multiplier

    def minibatch_size(self, size: int, g: int) -> int:
        """The mini-batch size (in responses) for an agent with G = `g`: fixed in prompts for `num_generations`."""
        if self.num_generations is None:
            return size
        return max(1, round(size * self.num_generations / g))

    # ---------------------------------------------------------------- the coordinator's half

    def plan_rows(self, *, rewards: Tensor, groups: Tensor, sources: Tensor, learner: int,
                  capability: CapabilityTracker, n_live: int | None = None, seed: int = 0) -> PlannedRows:
        """Which pool rows learner `learner` trains on, with their advantages, weights and roles.

        `rewards` / `groups` (prompt index) / `sources` have one entry per pooled response; `capability` has been
        updated with this step's rewards (docs/method.md §2, step 4) before this is called. Sources `>= n_live`
        are replayed peers: they give rows but never learn. `seed` seeds SGT's draw for this learner and step.
        """
        if self.rows == "own":
            own = (sources == learner).nonzero().flatten()
            adv = group_advantages(rewards[own], groups[own], eps=self.advantage_eps)
            return PlannedRows(own.tolist(), adv.tolist(), [1.0] * len(own), [False] * len(own))
        if self.rows == "pool":
            adv = self._pooled_advantages(rewards, groups, sources, learner, capability)
            weights = (capability.ratios_for(sources, learner).tolist() if self.cross_weights == "omega"
                       else [1.0] * len(rewards))
            return PlannedRows(list(range(len(rewards))), adv.tolist(), weights, [False] * len(rewards))
        n_sources = int(sources.max()) + 1
        counts = success_counts(rewards, groups, sources, n_agents=n_sources, n_prompts=int(groups.max()) + 1,
                                max_reward=self.max_reward)
        adv = _source_group_advantages(rewards, groups, sources, self.advantage_eps)
        live = n_live if n_live is not None else n_sources
        if self.rows == "graft":
            return self._graft_rows(counts, adv, rewards, groups, sources, learner, live)
        return self._sgt_rows(counts, adv, rewards, groups, sources, learner, seed)

    def _pooled_advantages(self, rewards: Tensor, groups: Tensor, sources: Tensor, learner: int,
                           capability: CapabilityTracker) -> Tensor:
        if self.advantage == "capability":
            return capability_aware_advantages(rewards, groups, sources, learner, capability.capabilities(),
                                               ratio_bounds=self.ratio_bounds, max_reward=self.max_reward,
                                               eps=self.advantage_eps)
        if self.advantage == "joint_group":
            return group_advantages(rewards, groups, eps=self.advantage_eps)
        return _source_group_advantages(rewards, groups, sources, self.advantage_eps)

    def _graft_rows(self, counts: SuccessCounts, adv: Tensor, rewards: Tensor, groups: Tensor, sources: Tensor,
                    learner: int, n_live: int) -> PlannedRows:
        """GRAFT (docs/method.md §4.1): the learner's own rows, except each all-fail group it is assigned, which is
        replaced by the assigned source's group (successes only for `transfer='successes'`), every row keeping the
        advantage computed on its source's full group."""
        n_sources = counts.n_agents
        kept = graft_assignments(counts, sources=range(n_sources), receivers=range(n_live), balance=self.balance)
        incoming = {q: s for (s, r), qs in kept.items() if r == learner for q in qs}
        rows: list[int] = []
        for i, (q, j, r) in enumerate(zip(groups.tolist(), sources.tolist(), rewards.tolist(), strict=True)):
            own = j == learner and q not in incoming
            moved = j != learner and incoming.get(q) == j
            if own or (moved and (self.transfer == "whole_group" or r >= self.max_reward)):
                rows.append(i)
        diagnostics: dict[str, float] = {"share/transferred_rows": float(sum(int(sources[i]) != learner
                                                                             for i in rows))}
        for s in range(n_sources):
            if s != learner:
                diagnostics[f"share/from{s}/candidates"] = float(len(graft_candidates(counts, s, learner)))
                diagnostics[f"share/from{s}/kept"] = float(len(kept.get((s, learner), [])))
        return PlannedRows(rows, adv[rows].tolist(), [1.0] * len(rows), [False] * len(rows), diagnostics)

    def _sgt_rows(self, counts: SuccessCounts, adv: Tensor, rewards: Tensor, groups: Tensor, sources: Tensor,
                  learner: int, seed: int) -> PlannedRows:
        """SGT (docs/method.md §4.2): the learner's own rows (GRPO), plus for each prompt it failed one correct peer
        response drawn uniformly (seeded) as a supervised row."""
        own = (sources == learner).nonzero().flatten().tolist()
        correct: dict[tuple[int, int], list[int]] = {}
        for i, (q, j, r) in enumerate(zip(groups.tolist(), sources.tolist(), rewards.tolist(), strict=True)):
            if r >= self.max_reward:
                correct.setdefault((j, q), []).append(i)
        draws = sgt_draws(counts, correct, receiver=learner, sources=range(counts.n_agents),
                          generator=torch.Generator().manual_seed(seed))
        peer = [draws[q] for q in sorted(draws)]
        rows = own + peer
        return PlannedRows(rows, adv[own].tolist() + [0.0] * len(peer), [1.0] * len(rows),
                           [False] * len(own) + [True] * len(peer), {"share/sgt_pairs": float(len(peer))})

    # ---------------------------------------------------------------- the learner's half

    def minibatch_loss(self, inputs: LossInputs, update_index: int, *, supervised: Tensor, policy_scale: float = 1.0,
                       supervised_scale: float = 1.0) -> tuple[Tensor, LossStats]:
        """The loss of (a piece of) one mini-batch: the policy loss over its policy rows times `policy_scale` (the
        zero-advantage skip's and the micro-batch's share of the mini-batch normaliser) plus `nll_weight` x the
        token-mean NLL over its supervised rows (SGT) times `supervised_scale` (its share of the supervised tokens)."""
        if not bool(supervised.any()):
            loss, stats = self.loss(inputs, update_index)
            if policy_scale != 1.0:
                loss = loss * policy_scale
                stats.loss = float(loss.detach())
            return loss, stats
        sft = self.nll_weight * nll_loss(logps=inputs.logps[supervised], mask=inputs.mask[supervised])
        if supervised_scale != 1.0:
            sft = sft * supervised_scale
        if bool(supervised.all()):
            return sft, LossStats(loss=float(sft.detach()))
        loss, stats = self.loss(inputs.rows(~supervised), update_index)
        total = loss * policy_scale + sft
        stats.loss = float(total.detach())
        return total, stats


def _source_group_advantages(rewards: Tensor, groups: Tensor, sources: Tensor, eps: float) -> Tensor:
    """Each row's advantage within its own (prompt, source) group: GRPO's estimator for every source at once."""
    adv = torch.zeros_like(rewards)
    for source in sources.unique().tolist():
        rows = (sources == source).nonzero().flatten()
        # a replayed peer may lack some prompts: renumber its groups 0..Q'-1 (the identity for a live agent)
        compact = torch.unique(groups[rows], return_inverse=True)[1]
        adv[rows] = group_advantages(rewards[rows], compact, eps=eps)
    return adv


def _loss(kind: LossKind, algo: AlgorithmConfig, preset: Preset, max_completion_length: int) -> Loss:
    low, high = DEFAULT_EPS[kind]
    eps_low = algo.eps_low if algo.eps_low is not None else low
    eps_high = algo.eps_high if algo.eps_high is not None else high
    pins = preset.pinned()
    if kind == "token_clip":
        return TokenClipLoss(eps_low=eps_low, eps_high=eps_high, loss_type=algo.loss_type,  # type: ignore[arg-type]
                             max_completion_length=max_completion_length, weighted=preset.gate)
    if kind == "sequence_clip":
        return SequenceClipLoss(eps_low=eps_low, eps_high=eps_high)
    if kind == "sequence_clip_old":
        return SequenceOldClipLoss(eps_low=eps_low, eps_high=eps_high, weighted=preset.gate)
    return HACPOLoss(eps_low=eps_low, eps_high=eps_high, alpha=float(pins.get("alpha", algo.alpha)),
                     delta=algo.delta, delta_step=float(pins.get("delta_step", algo.delta_step)),
                     clip_cross=bool(pins.get("clip_cross", True)))


def resolve_objective(algo: AlgorithmConfig, *, max_completion_length: int) -> Objective:
    """The `Objective` of `algo.name` with this run's hyperparameters (pinned preset values win).

    `max_completion_length` is the sampler's `max_new_tokens` (GRPO's `dr_grpo` divides by it).
    """
    preset = get_preset(algo.name)
    low, high = algo.ratio_bounds
    gate = None
    if preset.gate:
        gate = CompatibilityGate(delta=float(preset.pinned().get("gate_delta", algo.gate_delta)),
                                 weighting=preset.weighting)
    return Objective(
        name=preset.name, rows=preset.rows, advantage=preset.advantage, cross_weights=preset.cross_weights,
        loss=_loss(preset.loss, algo, preset, max_completion_length),
        minibatch_order=algo.minibatch_order or preset.minibatch_order,  # type: ignore[arg-type]
        rollout_multiplier=preset.rollout_multiplier, num_generations=preset.num_generations, kl_beta=algo.beta,
        advantage_eps=algo.advantage_eps, max_reward=algo.max_reward, ratio_bounds=(float(low), float(high)),
        gate=gate, balance=preset.balance, transfer=preset.transfer,
        nll_weight=algo.nll_weight if preset.rows == "sgt" else 0.0,
    )
