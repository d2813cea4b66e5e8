"""Pure tensor math of HACPO and its baselines: no models, no I/O (see docs/method.md and docs/algorithms.md)."""

from hacrl.algorithms.advantages import (
    capability_aware_advantages,
    capability_aware_baseline,
    group_advantages,
)
from hacrl.algorithms.capability import CapabilityTracker
from hacrl.algorithms.losses import (
    cross_lower_bound,
    grpo_loss,
    gspo_loss,
    hacpo_loss,
    kl_penalty,
    sequence_logps,
)
from hacrl.algorithms.objective import Objective, resolve_objective
from hacrl.algorithms.presets import PRESETS, Preset, get_preset
from hacrl.algorithms.stats import LossStats, RatioStats, UpdateStats

__all__ = [
    "PRESETS",
    "CapabilityTracker",
    "LossStats",
    "Objective",
    "Preset",
    "RatioStats",
    "UpdateStats",
    "capability_aware_advantages",
    "capability_aware_baseline",
    "cross_lower_bound",
    "get_preset",
    "group_advantages",
    "grpo_loss",
    "gspo_loss",
    "hacpo_loss",
    "kl_penalty",
    "resolve_objective",
    "sequence_logps",
]
