"""Named algorithms and ablations as data: each preset fixes some fields of the `Objective` it resolves to.

A preset says which rows a learner trains on, which advantage estimator scores them, which loss it optimises
and how peer rows are weighted or gated, and it may pin loss hyperparameters its definition fixes
(`hacpo-alpha0` pins alpha = 0). Everything it leaves open comes from the run's `algorithm:` section;
`resolve_objective` (hacrl.algorithms.objective) combines the two once, so nothing downstream looks at a preset
name. An ablation is its rule with exactly one field changed (a test checks it). Independent baselines at a
larger budget are named by their responses per prompt: `grpo_n16` is GRPO with 16 responses per prompt and
mini-batches fixed in prompts. This module imports nothing heavy, so a config can be validated before torch loads.

Method statement and equation numbers: docs/method.md.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

RowSelection = Literal["own", "pool", "graft", "sgt"]
"""`own`: a learner trains on its own responses only (independent training). `pool`: on every agent's responses
to the step's prompts (HACPO, Naive). `graft`: its own responses, with each all-fail group it is assigned replaced
by a peer's whole group (GRAFT). `sgt`: its own responses plus one correct peer response per all-fail prompt as a
supervised row (SGT)."""
AdvantageEstimator = Literal["source_group", "joint_group", "capability"]
"""`source_group`: mean/std over the responses of the same prompt by the same source agent (GRPO/GSPO; for own
rows this is the learner's own group, for GRAFT's transferred rows the source's). `joint_group`: plain mean/std
over every agent's responses to the prompt (Naive). `capability`: HACPO's capability-weighted baseline."""
LossKind = Literal["token_clip", "sequence_clip", "sequence_clip_old", "hacpo"]
"""`token_clip`: GRPO's token-level ratio against the learner's own old policy with DAPO's clip-higher (GRAFT and SGT
use it for every row). `sequence_clip`: GSPO's length-normalised sequence ratio against the rollout log-prob.
`sequence_clip_old`: a sequence ratio against the learner's old policy (GRAFT's sequence-level ablation).
`hacpo`: GSPO for self rows, the capability-weighted, exponentially importance-sampled, stepwise-clipped term for
cross rows."""
CrossWeights = Literal["none", "omega"]
"""How a pooled cross row's term is weighted: `omega` = Phat[source] / Phat[learner] (HACPO eq. 10), `none` = 1."""
MinibatchOrder = Literal["self_first", "shuffle", "peer_last", "peer_first"]
"""`self_first`: the learner's own rows, then peer rows, cut into consecutive mini-batches (a mini-batch may hold
both; HACPO's reference order). `peer_last` / `peer_first`: the same consecutive chunks with peer rows after
(GRAFT's default) or before. `shuffle`: a seeded permutation."""
Transfer = Literal["whole_group", "successes"]

PINNABLE = ("alpha", "delta_step", "clip_cross", "gate_delta")
"""Hyperparameters a preset may fix, overriding the run configuration."""
BASELINE_PATTERN = re.compile(r"^(grpo|gspo)_n([1-9][0-9]*)$")
"""`grpo_n16`: independent GRPO with 16 responses per prompt (mini-batches fixed in prompts)."""


@dataclass(frozen=True)
class Preset:
    """The objective fields one named algorithm fixes.

    * `rollout_multiplier`: responses per prompt relative to G with the mini-batch size unchanged in responses
      (GSPO x2 of the HACPO paper: 2x the responses and 2x the updates).
    * `num_generations`: responses per prompt, replacing G, with the mini-batch size scaled so mini-batches stay
      fixed in prompts (more responses per update, not more updates: `grpo_n16`).
    * `gate` / `weighting` / `balance` / `transfer`: GRAFT's compatibility gate, its weight min(score, 1), the
      pairwise balancing of transfers, and whether whole groups or only their successes move.
    * `nll_weight`: weight of SGT's supervised term (None = the configured `algorithm.nll_weight`).
    * `baseline`: the independent rule this one is compared with at equal cost (`grpo` or `gspo`).
    * `pins`: `(name, value)` pairs from `PINNABLE`.
    """

    name: str
    description: str
    rows: RowSelection
    advantage: AdvantageEstimator
    loss: LossKind
    baseline: Literal["grpo", "gspo"]
    cross_weights: CrossWeights = "none"
    minibatch_order: MinibatchOrder = "self_first"
    rollout_multiplier: int = 1
    num_generations: int | None = None
    gate: bool = False
    weighting: bool = False
    balance: bool = False
    transfer: Transfer = "whole_group"
    pins: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        unknown = [k for k, _ in self.pins if k not in PINNABLE]
        if unknown:
            raise ValueError(f"preset {self.name!r} pins {unknown}; only {PINNABLE} can be pinned")
        if self.rows == "own" and self.advantage != "source_group":
            raise ValueError(f"preset {self.name!r}: advantage {self.advantage!r} mixes agents' rewards, which needs "
                             "shared rows; independent training uses advantage='source_group'")
        if self.rows == "own" and (self.loss == "hacpo" or self.cross_weights != "none" or self.gate):
            raise ValueError(f"preset {self.name!r}: a cross-row loss, weighting or gate needs shared rows")
        if self.gate and self.rows != "graft":
            raise ValueError(f"preset {self.name!r}: the compatibility gate belongs to rows='graft'")

    @property
    def shares_rollouts(self) -> bool:
        """Whether a learner may train on other agents' responses (needs at least two agents or a replayed peer)."""
        return self.rows != "own"

    def pinned(self) -> dict[str, Any]:
        return dict(self.pins)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


HACPO = Preset(
    name="hacpo",
    description="HACPO: capability-aware advantages, omega-weighted cross terms, exponential importance sampling, "
    "stepwise clipping",
    rows="pool", advantage="capability", loss="hacpo", baseline="gspo", cross_weights="omega",
)
GRAFT = Preset(
    name="graft",
    description="GRAFT: all-fail groups replaced by a mixed peer group (balanced per pair), source advantages, "
    "compatibility gate, token-level PPO against the receiver's old policy, peers last",
    rows="graft", advantage="source_group", loss="token_clip", baseline="grpo", minibatch_order="peer_last",
    gate=True, weighting=True, balance=True,
)
SGT = Preset(
    name="sgt",
    description="SGT: GRPO on own rollouts plus lambda * NLL on one correct peer response per all-fail prompt",
    rows="sgt", advantage="source_group", loss="token_clip", baseline="grpo", minibatch_order="peer_last",
)


def _variant(base: Preset, name: str, description: str, **changes: Any) -> Preset:
    return replace(base, name=name, description=description, **changes)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(name="grpo", description="single agent, token-level ratio, clip-higher 0.2/0.28, group mean/std",
               rows="own", advantage="source_group", loss="token_clip", baseline="grpo"),
        Preset(name="gspo", description="single agent, sequence-level ratio, clip 3e-4/4e-4, group mean/std",
               rows="own", advantage="source_group", loss="sequence_clip", baseline="gspo"),
        Preset(name="gspo_x2", description="GSPO with 2G responses per prompt (2x rollouts, 2x updates)",
               rows="own", advantage="source_group", loss="sequence_clip", baseline="gspo", rollout_multiplier=2),
        Preset(name="naive", description="shared pool, plain joint mean/std, cross responses treated as self",
               rows="pool", advantage="joint_group", loss="sequence_clip", baseline="gspo"),
        HACPO,
        _variant(HACPO, "hacpo-no-adv", "HACPO with the plain joint baseline instead of eq. 6-9",
                 advantage="joint_group"),
        _variant(HACPO, "hacpo-no-omega", "HACPO with omega only in the baseline, not in the loss",
                 cross_weights="none"),
        _variant(HACPO, "hacpo-alpha0", "HACPO without exponential importance sampling (alpha = 0)",
                 pins=(("alpha", 0.0),)),
        _variant(HACPO, "hacpo-no-stepwise", "HACPO with a fixed cross lower bound (delta_step = 0)",
                 pins=(("delta_step", 0.0),)),
        _variant(HACPO, "hacpo-no-clip", "HACPO with the cross ratio unclipped", pins=(("clip_cross", False),)),
        GRAFT,
        _variant(GRAFT, "graft-no-weight", "GRAFT with transferred responses weighted 1 (gate kept)", weighting=False),
        _variant(GRAFT, "graft-no-gate", "GRAFT without the compatibility gate (delta = 0)",
                 pins=(("gate_delta", 0.0),)),
        _variant(GRAFT, "graft-no-balance", "GRAFT without pairwise balancing", balance=False),
        _variant(GRAFT, "graft-seq", "GRAFT with a sequence-level ratio instead of token-level",
                 loss="sequence_clip_old"),
        _variant(GRAFT, "graft-peer-first", "GRAFT with transferred mini-batches before the receiver's own",
                 minibatch_order="peer_first"),
        _variant(GRAFT, "graft-successes", "GRAFT transferring only the source group's correct responses",
                 transfer="successes"),
        SGT,
    )
}


def get_preset(name: str) -> Preset:
    """The preset called `name` (or an independent baseline at a budget, `grpo_n16`); a ValueError lists the names."""
    if name in PRESETS:
        return PRESETS[name]
    match = BASELINE_PATTERN.match(name)
    if match:
        base, n = PRESETS[match.group(1)], int(match.group(2))
        return replace(base, name=name, num_generations=n,
                       description=f"{base.name.upper()} with {n} responses per prompt (mini-batches fixed in prompts)")
    raise ValueError(f"unknown algorithm {name!r}; choose one of: {', '.join(PRESETS)}, or grpo_nK / gspo_nK "
                     "(K responses per prompt)")


def is_known(name: str) -> bool:
    return name in PRESETS or BASELINE_PATTERN.match(name) is not None
