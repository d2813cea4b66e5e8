"""The Task interface: prompts plus a verifier.

A task is all the trainer knows about the problem domain. It hands out problems (a training stream and a
fixed held-out split) and scores completions. Scoring happens once per response in the coordinator, so
the reward is shared by every learner (docs/method.md §2, step 3).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from hacrl.rewards import (
    RewardFunction,
    RewardFunctionError,
    RewardFunctions,
    RewardStats,
    TrainerState,
)

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
    """Wraps user reward functions written for TRL (and the problems they score) as a Task.

    `reward_fn` is one function or several (combined with `weights`, as TRL's `reward_funcs` and
    `reward_weights`); what they may return and how failures are counted is described in `hacrl.rewards`.
    Past `max_error_rate` (after at least `min_calls_before_abort` calls) training stops with a
    `RewardFunctionError`, because a reward that is mostly failures trains the model on noise.
    """

    def __init__(
        self,
        name: str,
        train: Sequence[Problem],
        evaluation: Sequence[Problem],
        reward_fn: RewardFunction | Sequence[RewardFunction],
        *,
        weights: Sequence[float] | None = None,
        labels: Sequence[str] | None = None,
        max_error_rate: float = 0.5,
        min_calls_before_abort: int = 3,
    ) -> None:
        super().__init__(name, train, evaluation)
        functions = list(reward_fn) if isinstance(reward_fn, list | tuple) else [reward_fn]
        self.rewards = RewardFunctions(functions, weights, labels=labels, max_error_rate=max_error_rate,
                                       min_calls_before_abort=min_calls_before_abort)

    @property
    def stats(self) -> RewardStats:
        return self.rewards.stats

    @property
    def trainer_state(self) -> TrainerState:
        return self.rewards.trainer_state

    def score(self, problems: Sequence[Problem], completions: Sequence[str], *,
              completion_ids: Sequence[Sequence[int]] | None = None) -> list[float]:
        check_same_length(problems, completions)
        return self.rewards([p.prompt for p in problems], completions, _columns_of(problems),
                            completion_ids=completion_ids)


def _columns_of(problems: Sequence[Problem]) -> dict[str, list[Any]]:
    """Dataset columns as TRL passes them: one list per column, plus the gold `answer` (TRL's own arguments
    `prompts`, `completions`, `completion_ids` and `trainer_state` win over columns of the same name)."""
    columns: dict[str, list[Any]] = {"answer": [p.answer for p in problems]}
    keys = {k for p in problems for k in p.columns}
    for key in sorted(keys - {"prompts", "completions", "completion_ids", "trainer_state", "answer"}):
        columns[key] = [p.columns.get(key) for p in problems]
    return columns


__all__ = ["FixedSplits", "FunctionRewardTask", "Problem", "RewardFunction", "RewardFunctionError", "RewardStats",
           "Task", "check_same_length"]
