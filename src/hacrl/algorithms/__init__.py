"""Pure tensor math of HACPO and its baselines: no models, no I/O (see docs/method.md and docs/algorithms.md).

The names below are imported lazily (PEP 562), so `hacrl.algorithms.presets` and `hacrl.algorithms.names`
(plain data) can be imported without torch: `hacrl.config` validates a run configuration with them before
torch and transformers are loaded, which keeps `hacrl --help` and config errors fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "capability_aware_advantages": "advantages",
    "capability_aware_baseline": "advantages",
    "group_advantages": "advantages",
    "CapabilityTracker": "capability",
    "cross_lower_bound": "losses",
    "grpo_loss": "losses",
    "gspo_loss": "losses",
    "hacpo_loss": "losses",
    "kl_penalty": "losses",
    "sequence_logps": "losses",
    "Objective": "objective",
    "resolve_objective": "objective",
    "PRESETS": "presets",
    "Preset": "presets",
    "get_preset": "presets",
    "LossStats": "stats",
    "RatioStats": "stats",
    "UpdateStats": "stats",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'hacrl.algorithms' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hacrl.algorithms.{home}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
