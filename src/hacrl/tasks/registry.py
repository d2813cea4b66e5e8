"""Task construction from the `task:` section of a run configuration."""

from __future__ import annotations

import dataclasses
from typing import Any

from hacrl.config import ConfigError, TaskConfig
from hacrl.tasks.base import Task

TASK_NAMES = ("arithmetic", "math")


def make_task(cfg: TaskConfig) -> Task:
    """Build the task named in the config; a wrong option names `task.options.<field>` and the valid ones."""
    if cfg.name == "arithmetic":
        from hacrl.tasks.arithmetic import ArithmeticConfig, ArithmeticTask

        return ArithmeticTask(_dataclass_from_options(ArithmeticConfig, cfg.options))
    if cfg.name == "math":
        from hacrl.tasks.math import math_task_from_options

        try:
            return math_task_from_options(cfg.options)
        except (TypeError, ValueError, FileNotFoundError) as exc:
            raise ConfigError(f"task.options: {exc}") from exc
    raise ConfigError(f"task.name: {cfg.name!r} is not one of {', '.join(TASK_NAMES)}")


def _dataclass_from_options(cls: type, options: dict[str, Any]) -> Any:
    valid = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise ConfigError(f"task.options.{unknown[0]}: unknown option (valid: {', '.join(valid)})")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"task.options: {exc}") from exc
