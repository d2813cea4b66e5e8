"""Task construction from the `task:` section of a run configuration."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hacrl.config import ConfigError, TaskConfig
from hacrl.tasks.base import FixedSplits, FunctionRewardTask, Problem, RewardFunction, Task

TASK_NAMES = ("arithmetic", "math")


def make_task(cfg: TaskConfig) -> Task:
    """Build the task named in the config; a wrong option names `task.options.<field>` and the valid ones.

    With `reward_fn`, the task's problems are scored by the user's function instead of its verifier.
    """
    task = _base_task(cfg)
    if cfg.eval_split != "test":
        task = HeldOutHalf(task, cfg.eval_split)
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


class HeldOutHalf(FixedSplits):
    """One half of a task's held-out split, balanced over problem kinds.

    `validation` is every other held-out problem of each kind; `test-holdout` is the rest. Tune
    hyperparameters on `validation` and report on `test-holdout`: both are unseen in training (and by the
    zoo's warm start, which draws only from the training problems), and neither informs the other.
    """

    def __init__(self, task: Task, half: str) -> None:
        by_kind: dict[str, list[Problem]] = {}
        for p in task.eval_problems():
            by_kind.setdefault(p.kind, []).append(p)
        parity = 0 if half == "validation" else 1
        chosen = {p.id for ps in by_kind.values() for i, p in enumerate(ps) if i % 2 == parity}
        evaluation = [p for p in task.eval_problems() if p.id in chosen]
        if not evaluation:
            raise ConfigError(f"task.eval_split: {half!r} is empty: the held-out split has too few problems")
        super().__init__(f"{task.name}[{half}]", task.train_problems(), evaluation)
        self._task = task

    def score(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        return self._task.score(problems, completions)


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
