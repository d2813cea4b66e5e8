"""The math task: problems with gold answers from the math benchmarks, scored with a binary reward.

`MathTask` holds disjoint training and evaluation problems (an overlap is an error) and scores completions
with `hacrl.tasks.math_verify.score_many` (final answer extracted by `hacrl.tasks.math_answers`, compared as
strings and then by math-verify under a deadline). Each task keeps its own `ScoreStats` (`MathTask.stats`),
so timeouts and verifier errors are reported by whoever owns the task. `math_task_from_options` builds one
from a run config's `task.options`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from hacrl.tasks.base import FixedSplits, Problem, check_same_length
from hacrl.tasks.benchmarks import BENCHMARK_FILES, load_benchmark
from hacrl.tasks.math_verify import DEFAULT_TIMEOUT_S, ScoreStats, score_many


class MathTask(FixedSplits):
    """A math task: problems with gold answers, scored by `hacrl.tasks.math_verify.score_many` (binary reward).

    The training and evaluation problems must not share a prompt: held-out accuracy is meaningless
    otherwise, so an overlap is an error rather than a warning. `stats` counts what this task's `score`
    calls saw (timeouts, verifier errors, cache hits, ...); read it with `stats.snapshot()`.
    """

    def __init__(
        self,
        train: Sequence[Problem],
        evaluation: Sequence[Problem],
        *,
        name: str = "math",
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(name, train, evaluation)
        train_prompts = {p.prompt.strip() for p in train}
        overlap = [p for p in evaluation if p.prompt.strip() in train_prompts]
        if overlap:
            raise ValueError(
                f"task {name!r}: {len(overlap)} evaluation problems also appear in the training set "
                f"(first: {overlap[0].id!r}); use disjoint splits"
            )
        self.timeout_s = timeout_s
        self.stats = ScoreStats()

    @classmethod
    def from_benchmarks(
        cls,
        train: str = "math_train",
        evaluation: str | Sequence[str] = "math500",
        *,
        data_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
        max_train: int | None = None,
        max_eval: int | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        skip_bad_rows: bool = False,
    ) -> MathTask:
        """Build from benchmark names (see `BENCHMARK_FILES`) in `data_dir` (default: $HACRL_MATH_DATA).

        Several evaluation benchmarks are concatenated; `Problem.kind` tells them apart.
        """
        eval_names = [evaluation] if isinstance(evaluation, str) else list(evaluation)
        for n in [train, *eval_names]:  # all names checked before any file is read
            if n not in BENCHMARK_FILES:
                raise ValueError(f"unknown benchmark {n!r}; valid names: {', '.join(BENCHMARK_FILES)}")
        train_rows = load_benchmark(train, data_dir, limit=max_train, skip_bad_rows=skip_bad_rows)
        eval_rows = [p for n in eval_names
                     for p in load_benchmark(n, data_dir, limit=max_eval, skip_bad_rows=skip_bad_rows)]
        return cls(train_rows, eval_rows, name=name or f"{train}->{'+'.join(eval_names)}", timeout_s=timeout_s)

    def score(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        check_same_length(problems, completions)
        return score_many(list(completions), [p.answer for p in problems], timeout_s=self.timeout_s,
                          stats=self.stats)


_OPTION_KEYS = ("train", "eval", "data_dir", "max_train", "max_eval", "timeout_s", "name", "skip_bad_rows")


def math_task_from_options(options: Mapping[str, Any]) -> MathTask:
    """A MathTask from a run config's `task.options` (all keys optional):

    `train` (benchmark name, default "math_train"), `eval` (a name, a comma-separated string or a list;
    default "math500"), `data_dir` (default $HACRL_MATH_DATA), `max_train` / `max_eval` (first N rows),
    `timeout_s` (per-answer deadline, default 5; null disables it), `name`, `skip_bad_rows` (skip, count and
    log rows without a question or gold answer instead of stopping; default false). Wrong keys or types raise
    ValueError / TypeError naming the option, so the config error points at the line to fix.
    """
    unknown = [k for k in options if k not in _OPTION_KEYS]
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for the math task (valid: {', '.join(_OPTION_KEYS)})")
    train = options.get("train", "math_train")
    if not isinstance(train, str):
        raise TypeError(f"option 'train' must be a benchmark name, got {train!r}")
    ev = options.get("eval", "math500")
    if isinstance(ev, str):
        eval_names = [n.strip() for n in ev.split(",") if n.strip()]
    elif isinstance(ev, list | tuple) and all(isinstance(n, str) for n in ev):
        eval_names = list(ev)
    else:
        raise TypeError(f"option 'eval' must be a benchmark name or a list of names, got {ev!r}")
    if not eval_names:
        raise ValueError("option 'eval' names no benchmark")
    limits: dict[str, int | None] = {}
    for key in ("max_train", "max_eval"):
        v = options.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise TypeError(f"option {key!r} must be a positive integer, got {v!r}")
        limits[key] = v
    timeout = options.get("timeout_s", DEFAULT_TIMEOUT_S)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
        raise TypeError(f"option 'timeout_s' must be a positive number of seconds or null, got {timeout!r}")
    data_dir = options.get("data_dir")
    if data_dir is not None and not isinstance(data_dir, str | os.PathLike):
        raise TypeError(f"option 'data_dir' must be a path, got {data_dir!r}")
    name = options.get("name")
    skip = options.get("skip_bad_rows", False)
    if not isinstance(skip, bool):
        raise TypeError(f"option 'skip_bad_rows' must be true or false, got {skip!r}")
    return MathTask.from_benchmarks(
        train, eval_names, data_dir=data_dir, name=str(name) if name is not None else None,
        max_train=limits["max_train"], max_eval=limits["max_eval"],
        timeout_s=float(timeout) if timeout is not None else None, skip_bad_rows=skip,
    )


__all__ = ["MathTask", "math_task_from_options"]
