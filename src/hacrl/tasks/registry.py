"""Task construction from the `task:` section of a run configuration."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from pathlib import Path
from typing import Any

from hacrl.config import ConfigError, TaskConfig
from hacrl.tasks.base import FunctionRewardTask, RewardFunction, Task
from hacrl.tasks.splits import HeldOutHalf

TASK_NAMES = ("arithmetic", "math")


def make_task(cfg: TaskConfig) -> Task:
    """Build the task named in the config; a wrong option names `task.options.<field>` and the valid ones.

    With `reward_fn`, the task's problems are scored by the user's function instead of its verifier.
    """
    task = _base_task(cfg)
    if cfg.eval_split != "test":
        try:
            task = HeldOutHalf(task, cfg.eval_split)
        except ValueError as exc:
            raise ConfigError(f"task.eval_split: {exc}") from exc
    if cfg.reward_fn is None:
        return task
    return FunctionRewardTask(f"{task.name}+{cfg.reward_fn}", task.train_problems(), task.eval_problems(),
                              load_reward_function(cfg.reward_fn), max_error_rate=cfg.max_reward_error_rate)


def load_reward_function(spec: str) -> RewardFunction:
    """Import `module:function` or `file.py:function`; errors name `task.reward_fn` and what is wrong."""
    if ":" not in spec:
        raise ConfigError(f"task.reward_fn: expected 'module:function' or 'file.py:function', got {spec!r}")
    where, name = spec.rsplit(":", 1)
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise ConfigError(f"task.reward_fn: file {where!r} does not exist")
            module_spec = importlib.util.spec_from_file_location(f"hacrl_user_reward_{path.stem}", path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"task.reward_fn: cannot import {where!r}: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"task.reward_fn: {where!r} has no function {name!r}")
    return fn


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
