"""Pure tensor math of HACPO and its baselines: no models, no I/O (see docs/algorithms.md)."""

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
from hacrl.algorithms.presets import PRESETS, AlgorithmPreset, get_preset

__all__ = [
    "PRESETS",
    "AlgorithmPreset",
    "CapabilityTracker",
    "capability_aware_advantages",
    "capability_aware_baseline",
    "cross_lower_bound",
    "get_preset",
    "group_advantages",
    "grpo_loss",
    "gspo_loss",
    "hacpo_loss",
    "kl_penalty",
    "sequence_logps",
]
