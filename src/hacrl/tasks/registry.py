"""Task construction from the `task:` section of a run configuration."""

from __future__ import annotations

import dataclasses
from typing import Any

from hacrl.config import ConfigError, TaskConfig
from hacrl.rewards import load_reward_function, reward_specs
from hacrl.tasks.base import FunctionRewardTask, Task
from hacrl.tasks.splits import HeldOutHalf

__all__ = ["TASK_NAMES", "HeldOutHalf", "load_reward_function", "make_task"]

TASK_NAMES = ("arithmetic", "math", "dataset")


def make_task(cfg: TaskConfig) -> Task:
    """Build the task named in the config; a wrong option names `task.options.<field>` and the valid ones.

    With `reward_fn` (one spec or a list, weighted by `reward_weights` as TRL's `reward_funcs` and
    `reward_weights`), the task's problems are scored by the user's functions instead of its verifier.
    """
    specs = reward_specs(cfg.reward_fn)
    functions = [load_reward_function(spec, where=f"task.reward_fn[{i}]" if len(specs) > 1 else "task.reward_fn")
                 for i, spec in enumerate(specs)]  # imported first: a typo fails before any data is read
    task = _base_task(cfg)
    if cfg.eval_split != "test":
        try:
            task = HeldOutHalf(task, cfg.eval_split)
        except ValueError as exc:
            raise ConfigError(f"task.eval_split: {exc}") from exc
    if not functions:
        return task
    return FunctionRewardTask(f"{task.name}+{'+'.join(specs)}", task.train_problems(), task.eval_problems(),
                              functions, weights=cfg.reward_weights, labels=specs,
                              max_error_rate=cfg.max_reward_error_rate)


def _base_task(cfg: TaskConfig) -> Task:
    if cfg.name == "arithmetic":
        from hacrl.tasks.arithmetic import ArithmeticConfig, ArithmeticTask

        return ArithmeticTask(_dataclass_from_options(ArithmeticConfig, cfg.options))
    if cfg.name == "math":
        from hacrl.tasks.math import math_task_from_options

        try:
            return math_task_from_options(cfg.options)
        except (TypeError, ValueError, FileNotFoundError) as exc:
            raise ConfigError(f"task.options: {exc}") from exc
    if cfg.name == "dataset":
        from hacrl.tasks.dataset import dataset_task_from_options

        return dataset_task_from_options(cfg.options, needs_answer=cfg.reward_fn is None)
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
