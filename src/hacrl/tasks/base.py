"""The Task interface: prompts plus a verifier.

A task is all the trainer knows about the problem domain. It hands out problems (a training stream and a
fixed held-out split) and scores completions. Scoring happens once per response in the coordinator, so
the reward is shared by every learner (docs/method.md §2, step 3).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One prompt of a task, before any agent's prompt template is applied.

    `kind` groups problems for per-kind accuracy (e.g. "add" vs "mul", or a benchmark subject);
    `columns` carries extra dataset fields that user reward functions receive as keyword arguments.
    """

    id: str
    prompt: str
    answer: str
    kind: str = "default"
    columns: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    """Prompts + verifier. Implementations: arithmetic (built-in default), math benchmarks, user functions."""

    name: str

    def train_problems(self) -> Sequence[Problem]:
        """The training pool; the trainer draws batches from it in a seeded order."""
        ...

    def eval_problems(self) -> Sequence[Problem]:
        """A fixed held-out split, disjoint from the training problems."""
        ...

    def score(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        """One reward per completion (problems[i] is the problem completions[i] answers)."""
        ...


RewardFunction = Callable[..., Sequence[float | None]]
"""TRL convention: `f(prompts=list[str], completions=list[str], **columns) -> list[float | None]`."""


class RewardFunctionError(RuntimeError):
    """A user reward function failed too often or returned something unusable."""


@dataclass
class RewardStats:
    """Counts of what went wrong inside reward functions, so nothing is dropped silently."""

    calls: int = 0
    scored: int = 0
    exceptions: int = 0
    invalid_values: int = 0

    @property
    def error_rate(self) -> float:
        return (self.exceptions + self.invalid_values) / max(self.scored, 1)


def check_same_length(problems: Sequence[Problem], completions: Sequence[str]) -> None:
    """A scorer gets one completion per problem; anything else is a caller bug worth a clear message."""
    if len(problems) != len(completions):
        raise ValueError(f"score: {len(problems)} problems but {len(completions)} completions")


class FixedSplits:
    """The part most tasks share: a fixed training split and a fixed held-out split, both non-empty."""

    def __init__(self, name: str, train: Sequence[Problem], evaluation: Sequence[Problem]) -> None:
        if not train:
            raise ValueError(f"task {name!r}: the training set is empty")
        if not evaluation:
            raise ValueError(f"task {name!r}: the evaluation set is empty")
        self.name = name
        self._train = list(train)
        self._eval = list(evaluation)

    def train_problems(self) -> Sequence[Problem]:
        return self._train

    def eval_problems(self) -> Sequence[Problem]:
        return self._eval


class FunctionRewardTask(FixedSplits):
    """Wraps a user's TRL-style reward function (and the problems it scores) as a Task.

    A function that raises scores the whole call 0.0 and is counted; a value that is None, NaN or not a
    number scores 0.0 and is counted; a wrong-length result is an error. Past `max_error_rate` (after at
    least `min_calls_before_abort` calls) training stops with a `RewardFunctionError`, because a reward
    that is mostly failures trains the model on noise.
    """

    def __init__(
        self,
        name: str,
        train: Sequence[Problem],
        evaluation: Sequence[Problem],
        reward_fn: RewardFunction,
        *,
        max_error_rate: float = 0.5,
        min_calls_before_abort: int = 3,
    ) -> None:
        super().__init__(name, train, evaluation)
        self._fn = reward_fn
        self.max_error_rate = max_error_rate
        self.min_calls_before_abort = min_calls_before_abort
        self.stats = RewardStats()

    def score(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        check_same_length(problems, completions)
        self.stats.calls += 1
        self.stats.scored += len(completions)
        columns = _columns_of(problems)
        try:
            raw = self._fn(prompts=[p.prompt for p in problems], completions=list(completions), **columns)
        except Exception as exc:  # a user function may raise anything; count it, never crash silently
            self.stats.exceptions += len(completions)
            logger.warning("reward function %s raised %s: %s; scoring %d completions 0.0",
                           getattr(self._fn, "__name__", self._fn), type(exc).__name__, exc, len(completions))
            self._check_error_rate()
            return [0.0] * len(completions)
        values = list(raw) if raw is not None else []
        if len(values) != len(completions):
            raise RewardFunctionError(
                f"reward function {getattr(self._fn, '__name__', self._fn)} returned {len(values)} values "
                f"for {len(completions)} completions; it must return one float (or None) per completion"
            )
        rewards = []
        bad = 0
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
                bad += 1
                rewards.append(0.0)
            else:
                rewards.append(float(v))
        if bad:
            self.stats.invalid_values += bad
            logger.warning("reward function returned %d None/NaN/non-numeric values of %d; scored 0.0",
                           bad, len(values))
        self._check_error_rate()
        return rewards

    def _check_error_rate(self) -> None:
        if self.stats.calls >= self.min_calls_before_abort and self.stats.error_rate > self.max_error_rate:
            raise RewardFunctionError(
                f"reward function failed on {self.stats.error_rate:.0%} of completions "
                f"({self.stats.exceptions} raised, {self.stats.invalid_values} invalid values, "
                f"{self.stats.scored} scored); the limit is {self.max_error_rate:.0%}"
            )


def _columns_of(problems: Sequence[Problem]) -> dict[str, list[Any]]:
    """Dataset columns as TRL passes them: one list per column, plus the gold `answer`."""
    columns: dict[str, list[Any]] = {"answer": [p.answer for p in problems]}
    keys = {k for p in problems for k in p.columns}
    for key in sorted(keys - {"prompts", "completions", "answer"}):
        columns[key] = [p.columns.get(key) for p in problems]
    return columns
