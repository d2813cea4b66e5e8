"""User reward functions written for TRL's GRPOTrainer, loaded and called the way TRL does.

Why TRL's convention: it is what reward functions in the wild are written for, so a function that works with
`GRPOTrainer(reward_funcs=[...], reward_weights=[...])` should work here unchanged:

* **Call**: `f(prompts=[...], completions=[...], completion_ids=[...], trainer_state=..., **columns)`, one list
  entry per completion; `columns` are the dataset's other fields (`answer` and any extra column). A function
  without `**kwargs` gets only the arguments it names. `completion_ids` are each completion's token ids in the
  tokenizer of the agent that wrote it (agents differ), and None during held-out evaluation; `trainer_state`
  has `global_step` and `max_steps`, as TRL's `TrainerState` does.
* **Return**: one value per completion, as a list/tuple or a 1-D numpy array or torch tensor. Each value may be
  a float, int, bool, a numpy/torch scalar, or None (or NaN) for "not applicable to this completion" (TRL
  turns None into NaN and sums with `nansum`). A single number, a 2-D array or the wrong length is a
  `RewardFunctionError`, because guessing which completion a lone number belongs to would train on noise.
* **Several functions**: the reward is the weighted sum of the applicable values (`reward_weights`, default 1
  each); a completion no function applies to scores 0.0 and is counted and logged, as TRL warns.
* **Failures** are counted, never silent: a function that raises contributes nothing to that call
  (`stats.exceptions`), a value that is not a number or is infinite contributes nothing (`stats.invalid_values`),
  and past `max_error_rate` of (function, completion) pairs the run stops.

Specs: `package.module:function` (the current directory is searched first, as `python -c` does) or
`path/to/file.py:function` (relative to the current directory).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hacrl.config import ConfigError

logger = logging.getLogger(__name__)

RewardFunction = Callable[..., Any]
"""TRL convention: `f(prompts, completions, **kwargs) -> list[float | None]` (module docstring)."""

_RESERVED = ("prompts", "completions", "completion_ids", "trainer_state")


class RewardFunctionError(RuntimeError):
    """A user reward function failed too often or returned something unusable."""


@dataclass
class RewardStats:
    """Counts of what happened inside reward functions, per (function, completion), so nothing is dropped
    silently. `not_applicable` (None/NaN) is TRL's "does not apply" and is not an error."""

    calls: int = 0
    scored: int = 0
    exceptions: int = 0
    invalid_values: int = 0
    not_applicable: int = 0
    no_reward: int = 0  # completions that no function applied to (scored 0.0)

    @property
    def error_rate(self) -> float:
        return (self.exceptions + self.invalid_values) / max(self.scored, 1)


class TrainerState:
    """The part of TRL's `TrainerState` a reward function reads for reward shaping: the current step."""

    def __init__(self, step: Callable[[], int] | None = None, max_steps: int = 0) -> None:
        self._step = step
        self.max_steps = max_steps

    @property
    def global_step(self) -> int:
        return int(self._step()) if self._step is not None else 0

    def __repr__(self) -> str:
        return f"TrainerState(global_step={self.global_step}, max_steps={self.max_steps})"


# ------------------------------------------------------------------------------------------ loading


def load_reward_function(spec: str, *, where: str = "task.reward_fn") -> RewardFunction:
    """Import `module:function` or `path/to/file.py:function`; errors name the config field and what is wrong."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(f"{where}: expected 'module:function' or 'path/to/file.py:function', got {spec!r}")
    target, name = spec.rsplit(":", 1)
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser()
            if not path.is_file():
                raise ConfigError(f"{where}: file {target!r} does not exist (relative paths start at the current "
                                  f"directory, {os.getcwd()})")
            module_spec = importlib.util.spec_from_file_location(f"hacrl_user_reward_{path.stem}", path)
            if module_spec is None or module_spec.loader is None:
                raise ConfigError(f"{where}: cannot load {target!r} as a Python file")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = _import_from_cwd(target)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{where}: cannot import {target!r}: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"{where}: {target!r} has no function {name!r}")
    return fn


def _import_from_cwd(module: str) -> Any:
    """`importlib.import_module` with the current directory searched first, as `python -c`/`-m` do; the
    console script `hacrl` does not put it on `sys.path`, so `my_rewards:f` would not be found otherwise."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module)
    finally:
        if added:
            sys.path.remove(cwd)


def reward_specs(spec: str | Sequence[str] | None) -> list[str]:
    if spec is None:
        return []
    return [spec] if isinstance(spec, str) else list(spec)


# ------------------------------------------------------------------------------------------ calling


class _Bound:
    """One reward function with the keyword arguments it can take."""

    def __init__(self, fn: RewardFunction, label: str) -> None:
        self.fn = fn
        self.label = label
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):  # builtins / C callables: pass everything
            params = ()
            self.accepts: set[str] | None = None
        else:
            self.accepts = None if any(p.kind is p.VAR_KEYWORD for p in params) else {
                p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        self.required = {p.name for p in params if p.default is p.empty
                         and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    def __call__(self, kwargs: dict[str, Any]) -> Any:
        if self.accepts is not None:
            missing = sorted(self.required - set(kwargs))
            if missing:
                raise RewardFunctionError(
                    f"reward function {self.label} needs argument(s) {', '.join(map(repr, missing))}, which are "
                    f"neither TRL's arguments nor dataset columns (available: {', '.join(sorted(kwargs))})")
            kwargs = {k: v for k, v in kwargs.items() if k in self.accepts}
        return self.fn(**kwargs)


def _label(fn: RewardFunction) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


class RewardFunctions:
    """Several TRL-style reward functions and their weights, combined as TRL does (module docstring)."""

    def __init__(self, functions: Sequence[RewardFunction], weights: Sequence[float] | None = None, *,
                 labels: Sequence[str] | None = None, max_error_rate: float = 0.5,
                 min_calls_before_abort: int = 3) -> None:
        if not functions:
            raise ValueError("at least one reward function is needed")
        weights = [1.0] * len(functions) if weights is None else [float(w) for w in weights]
        if len(weights) != len(functions):
            raise ConfigError(f"task.reward_weights: {len(weights)} weights for {len(functions)} reward functions; "
                              "give one weight per function")
        labels = list(labels) if labels is not None else [_label(f) for f in functions]
        self.functions = [_Bound(f, label) for f, label in zip(functions, labels, strict=True)]
        self.weights = weights
        self.max_error_rate = max_error_rate
        self.min_calls_before_abort = min_calls_before_abort
        self.stats = RewardStats()
        self.trainer_state = TrainerState()

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], columns: dict[str, list[Any]],
                 completion_ids: Sequence[Sequence[int]] | None = None) -> list[float]:
        n = len(completions)
        self.stats.calls += 1
        kwargs: dict[str, Any] = {**columns, "prompts": list(prompts), "completions": list(completions),
                                  "completion_ids": [list(c) for c in completion_ids] if completion_ids else None,
                                  "trainer_state": self.trainer_state}
        totals = [0.0] * n
        applied = [False] * n
        for bound, weight in zip(self.functions, self.weights, strict=True):
            self.stats.scored += n
            try:
                raw = bound(kwargs)
            except RewardFunctionError:
                raise
            except Exception as exc:  # a user function may raise anything: count it, never crash silently
                self.stats.exceptions += n
                logger.warning("reward function %s raised %s: %s; it adds nothing to these %d completions",
                               bound.label, type(exc).__name__, exc, n)
                continue
            values, invalid = coerce_rewards(raw, n, bound.label)
            if invalid:
                self.stats.invalid_values += invalid
                logger.warning("reward function %s returned %d non-numeric or infinite values of %d; they add "
                               "nothing (counted as errors)", bound.label, invalid, n)
            for i, v in enumerate(values):
                if v is None:
                    continue
                totals[i] += weight * v
                applied[i] = True
            self.stats.not_applicable += sum(v is None for v in values) - invalid
        unscored = applied.count(False)
        if unscored:  # TRL warns here too: a reward that never applies carries no signal
            logger.warning("no reward function applied to %d of %d completions (None/NaN); they score 0.0",
                           unscored, n)
        self.stats.no_reward += unscored
        self._check_error_rate()
        return totals

    def _check_error_rate(self) -> None:
        if self.stats.calls >= self.min_calls_before_abort and self.stats.error_rate > self.max_error_rate:
            raise RewardFunctionError(
                f"reward function failed on {self.stats.error_rate:.0%} of completions "
                f"({self.stats.exceptions} raised, {self.stats.invalid_values} invalid values, "
                f"{self.stats.scored} scored); the limit is {self.max_error_rate:.0%} (task.max_reward_error_rate)")


def coerce_rewards(raw: Any, n: int, label: str = "reward function") -> tuple[list[float | None], int]:
    """TRL-accepted return values -> one `float | None` per completion, and how many were invalid.

    None and NaN become None ("not applicable"); bools, ints, floats and numpy/torch scalars become floats;
    strings, other objects and infinities are invalid (None, counted). Container problems raise.
    """
    if raw is None:
        raise RewardFunctionError(f"reward function {label} returned None for {n} completions; it must return one "
                                  "value per completion (a list, or None inside the list for 'not applicable')")
    if isinstance(raw, str | bytes | dict):
        raise RewardFunctionError(f"reward function {label} returned a {type(raw).__name__}; it must return a list "
                                  f"of {n} numbers (one per completion)")
    ndim = getattr(raw, "ndim", None)
    if ndim == 0 or isinstance(raw, bool | int | float):
        value = raw.item() if hasattr(raw, "item") else raw
        raise RewardFunctionError(f"reward function {label} returned a single number ({value!r}) for {n} "
                                  "completions; it must return a list with one number per completion")
    if ndim is not None and ndim != 1:
        raise RewardFunctionError(f"reward function {label} returned an array of shape "
                                  f"{tuple(getattr(raw, 'shape', ()))}; it must be 1-D with one value per completion")
    if ndim == 1 and hasattr(raw, "tolist"):
        items = raw.detach().cpu().tolist() if hasattr(raw, "detach") else raw.tolist()
    else:
        try:
            items = list(raw)
        except TypeError:
            raise RewardFunctionError(f"reward function {label} returned {type(raw).__name__}, not a list of "
                                      f"{n} numbers") from None
    if len(items) != n:
        raise RewardFunctionError(f"reward function {label} returned {len(items)} values for {n} completions; it "
                                  "must return one float (or None) per completion")
    out: list[float | None] = []
    invalid = 0
    for item in items:
        value = _number(item)
        if value is _INVALID:
            invalid += 1
            out.append(None)
        else:
            out.append(value)  # type: ignore[arg-type]
    return out, invalid


_INVALID = object()


def _number(item: Any) -> float | object | None:
    if item is None:
        return None
    if getattr(item, "ndim", None) == 0 and hasattr(item, "item"):  # numpy / torch scalars
        item = item.item()
    if isinstance(item, bool | int | float):
        value = float(item)
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else _INVALID
    return _INVALID


# ------------------------------------------------------------------------------------------ trainer hooks


def bind_trainer_state(task: Any, step: Callable[[], int], max_steps: int) -> None:
    """Let the reward functions of `task` (if it has any) read the trainer's current step as TRL's
    `trainer_state.global_step`."""
    state = getattr(task, "trainer_state", None)
    if isinstance(state, TrainerState):
        state._step = step
        state.max_steps = max_steps


def score_with_ids(task: Any, problems: Sequence[Any], completions: Sequence[str],
                   completion_ids: Sequence[Sequence[int]]) -> list[float]:
    """`task.score`, passing the completions' token ids to tasks that take them (user reward functions get
    them as TRL's `completion_ids`); other tasks never see them."""
    try:
        takes_ids = "completion_ids" in inspect.signature(task.score).parameters
    except (TypeError, ValueError):
        takes_ids = False
    if takes_ids:
        return list(task.score(problems, completions, completion_ids=completion_ids))
    return list(task.score(problems, completions))
