"""Named algorithms and ablations as data (HACPO.md §7 and the paper's ablation table).

Each preset spells out every switch, so `hacpo` and an ablation differ visibly in one field. Numeric
hyperparameters (eps, alpha, delta, delta_step) come from the run configuration; a preset only pins
the ones its definition fixes (e.g. `hacpo-alpha0` pins alpha = 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

LossKind = Literal["grpo", "gspo", "hacpo"]
AdvantageKind = Literal["group", "joint", "capability"]


@dataclass(frozen=True)
class AlgorithmPreset:
    """The switches that define one algorithm.

    * `shares_rollouts`: a learner trains on the whole pool (self + cross) rather than its own responses.
    * `advantage`: "group" = mean/std over the learner's own responses to the prompt; "joint" = plain
      mean/std over every agent's responses to the prompt; "capability" = HACPO eq. 6-9.
    * `loss`: "grpo" token ratio with clip-higher; "gspo" sequence ratio, every response treated alike;
      "hacpo" GSPO for self responses and the capability-weighted, stepwise-clipped term for cross ones.
    * `omega_in_loss`: multiply cross terms by omega^(j,k) (HACPO.md §4.2).
    * `clip_cross`: clip cross ratios into [lower_m, 1] (HACPO.md §4.4); False = `hacpo-no-clip`.
    * `stepwise`: raise the cross lower bound with the update index; False forces delta_step = 0.
    * `alpha`: pinned exponent of the cross ratio (None = the configured value).
    * `rollout_multiplier`: responses per prompt relative to G (2 for GSPO x2: 2G responses and, with a
      fixed mini-batch size in responses, 2M updates).
    """

    name: str
    description: str
    shares_rollouts: bool
    advantage: AdvantageKind
    loss: LossKind
    omega_in_loss: bool = False
    clip_cross: bool = False
    stepwise: bool = False
    alpha: float | None = None
    rollout_multiplier: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_HACPO = AlgorithmPreset(
    name="hacpo",
    description="HACPO: capability-aware advantages, omega-weighted cross terms, exponential importance "
    "sampling, stepwise clipping",
    shares_rollouts=True, advantage="capability", loss="hacpo",
    omega_in_loss=True, clip_cross=True, stepwise=True,
)


def _ablation(name: str, description: str, **switches: Any) -> AlgorithmPreset:
    fields = {**_HACPO.to_dict(), "name": name, "description": description, **switches}
    return AlgorithmPreset(**fields)


PRESETS: dict[str, AlgorithmPreset] = {
    p.name: p
    for p in (
        AlgorithmPreset(
            name="grpo", description="single agent, token-level ratio, clip-higher 0.2/0.28, group mean/std",
            shares_rollouts=False, advantage="group", loss="grpo",
        ),
        AlgorithmPreset(
            name="gspo", description="single agent, sequence-level ratio, clip 3e-4/4e-4, group mean/std",
            shares_rollouts=False, advantage="group", loss="gspo",
        ),
        AlgorithmPreset(
            name="gspo_x2", description="GSPO with 2G responses per prompt (2x rollouts, 2x updates)",
            shares_rollouts=False, advantage="group", loss="gspo", rollout_multiplier=2,
        ),
        AlgorithmPreset(
            name="naive", description="shared pool, plain joint mean/std, cross responses treated as self",
            shares_rollouts=True, advantage="joint", loss="gspo",
        ),
        _HACPO,
        _ablation("hacpo-no-adv", "HACPO with the plain joint baseline instead of eq. 6-9", advantage="joint"),
        _ablation("hacpo-no-omega", "HACPO with omega only in the baseline, not in the loss",
                  omega_in_loss=False),
        _ablation("hacpo-alpha0", "HACPO without exponential importance sampling (alpha = 0)", alpha=0.0),
        _ablation("hacpo-no-stepwise", "HACPO with a fixed cross lower bound (delta_step = 0)", stepwise=False),
        _ablation("hacpo-no-clip", "HACPO with the cross ratio unclipped", clip_cross=False),
    )
}


def get_preset(name: str) -> AlgorithmPreset:
    """The preset called `name`; a ValueError lists the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; choose one of: {', '.join(PRESETS)}") from None
