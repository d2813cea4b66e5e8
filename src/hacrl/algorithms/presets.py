"""Named algorithms and ablations as data: each preset fixes some fields of the `Objective` it resolves to.

A preset says which rows a learner trains on, which advantage estimator scores them, which loss it optimises
and how cross rows are weighted, and it may pin loss hyperparameters its definition fixes (`hacpo-alpha0`
pins alpha = 0). Everything it leaves open comes from the run's `algorithm:` section; `resolve_objective`
(hacrl.algorithms.objective) combines the two once, so nothing downstream looks at a preset name. An ablation is
HACPO with exactly one field changed (a test checks it). This module imports nothing heavy, so a config can
be validated before torch loads.

Method statement and equation numbers: docs/method.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

RowSelection = Literal["own", "pool"]
"""`own`: a learner trains on its own responses only (independent training). `pool`: on every agent's responses
to the step's prompts (self and cross)."""
AdvantageEstimator = Literal["source_group", "joint_group", "capability"]
"""`source_group`: mean/std over the responses of the same prompt by the same source agent (GRPO/GSPO; for own
rows this is the learner's own group). `joint_group`: plain mean/std over every agent's responses to the prompt
(Naive). `capability`: HACPO's capability-weighted baseline (docs/method.md §3.1, paper eq. 6-9)."""
LossKind = Literal["token_clip", "sequence_clip", "hacpo"]
"""`token_clip`: GRPO's token-level ratio against the learner's own old policy with DAPO's clip-higher.
`sequence_clip`: GSPO's length-normalised sequence ratio against the rollout log-prob, every row alike.
`hacpo`: GSPO for self rows, the capability-weighted, exponentially importance-sampled, stepwise-clipped term
for cross rows (docs/method.md §3.3-3.5)."""
CrossWeights = Literal["none", "omega"]
"""How a cross row's term is weighted: `omega` = Phat[source] / Phat[learner] (paper eq. 10), `none` = 1."""

PINNABLE = ("alpha", "delta_step", "clip_cross")
"""Loss hyperparameters a preset may fix, overriding the run configuration."""


@dataclass(frozen=True)
class Preset:
    """The objective fields one named algorithm fixes.

    `rollout_multiplier`: responses per prompt relative to G (2 for GSPO x2: with a mini-batch size fixed in
    responses that also doubles the updates). `pins`: `(name, value)` pairs from `PINNABLE`.
    """

    name: str
    description: str
    rows: RowSelection
    advantage: AdvantageEstimator
    loss: LossKind
    cross_weights: CrossWeights = "none"
    rollout_multiplier: int = 1
    pins: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        unknown = [k for k, _ in self.pins if k not in PINNABLE]
        if unknown:
            raise ValueError(f"preset {self.name!r} pins {unknown}; only {PINNABLE} can be pinned")
        if self.rows == "own" and self.advantage != "source_group":
            raise ValueError(f"preset {self.name!r}: advantage {self.advantage!r} mixes agents' rewards, which needs "
                             "rows='pool'; independent training uses advantage='source_group'")
        if self.rows == "own" and (self.loss == "hacpo" or self.cross_weights != "none"):
            raise ValueError(f"preset {self.name!r}: a cross-row loss or weighting needs rows='pool'")

    @property
    def shares_rollouts(self) -> bool:
        return self.rows == "pool"

    def pinned(self) -> dict[str, Any]:
        return dict(self.pins)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


HACPO = Preset(
    name="hacpo",
    description="HACPO: capability-aware advantages, omega-weighted cross terms, exponential importance sampling, "
    "stepwise clipping",
    rows="pool", advantage="capability", loss="hacpo", cross_weights="omega",
)


def _ablation(name: str, description: str, **changes: Any) -> Preset:
    return replace(HACPO, name=name, description=description, **changes)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(name="grpo", description="single agent, token-level ratio, clip-higher 0.2/0.28, group mean/std",
               rows="own", advantage="source_group", loss="token_clip"),
        Preset(name="gspo", description="single agent, sequence-level ratio, clip 3e-4/4e-4, group mean/std",
               rows="own", advantage="source_group", loss="sequence_clip"),
        Preset(name="gspo_x2", description="GSPO with 2G responses per prompt (2x rollouts, 2x updates)",
               rows="own", advantage="source_group", loss="sequence_clip", rollout_multiplier=2),
        Preset(name="naive", description="shared pool, plain joint mean/std, cross responses treated as self",
               rows="pool", advantage="joint_group", loss="sequence_clip"),
        HACPO,
        _ablation("hacpo-no-adv", "HACPO with the plain joint baseline instead of eq. 6-9", advantage="joint_group"),
        _ablation("hacpo-no-omega", "HACPO with omega only in the baseline, not in the loss", cross_weights="none"),
        _ablation("hacpo-alpha0", "HACPO without exponential importance sampling (alpha = 0)",
                  pins=(("alpha", 0.0),)),
        _ablation("hacpo-no-stepwise", "HACPO with a fixed cross lower bound (delta_step = 0)",
                  pins=(("delta_step", 0.0),)),
        _ablation("hacpo-no-clip", "HACPO with the cross ratio unclipped", pins=(("clip_cross", False),)),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; a ValueError lists the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; choose one of: {', '.join(PRESETS)}") from None
