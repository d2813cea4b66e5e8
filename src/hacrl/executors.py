"""Executors run the agent workers. The coordinator calls worker methods by reference, never by name:

    results = executor.call(AgentWorker.learn, [(request_0,), (request_1,)])

runs `worker_i.learn(request_i)` on every worker and returns the results in worker order, so a type checker sees
which method runs and what it returns. `SequentialExecutor` runs every worker in this process, one after the
other: deterministic and easy to debug. `hacrl.ray_executor.RayExecutor` runs one actor per agent behind the same
two methods, so the trainer and the algorithm code do not change when agents run side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import torch

from hacrl.config import AgentConfig
from hacrl.workers import AgentWorker, WorkerSettings

R = TypeVar("R")

__all__ = ["Executor", "SequentialExecutor", "check_arity"]


class Executor(Protocol):
    n_workers: int

    def call(self, method: Callable[..., R], args: Sequence[tuple[Any, ...]]) -> list[R]:
        """`method(worker_i, *args[i])` on every worker i; results in worker order."""
        ...

    def close(self) -> None: ...


def check_arity(method: Callable[..., Any], args: Sequence[tuple[Any, ...]], n_workers: int) -> None:
    """One argument tuple per worker, and `method` a function of `AgentWorker` (not a bound method or a name)."""
    if not callable(method) or getattr(method, "__self__", None) is not None:
        raise TypeError(f"call(): pass an AgentWorker method such as AgentWorker.learn, got {method!r}")
    if len(args) != n_workers:
        raise ValueError(f"call({getattr(method, '__name__', method)}): {len(args)} argument tuples for "
                         f"{n_workers} workers")


class SequentialExecutor:
    """All workers in this process, one after another.

    `threads` sets torch's intra-op threads for the process. The default is 1: on small machines shared with
    anything else, 2 threads per process were measured several times slower and erratic (README, "Threads").
    """

    def __init__(self, agents: Sequence[AgentConfig], settings: Sequence[WorkerSettings],
                 threads: int | None = 1) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.workers = [AgentWorker(a, s) for a, s in zip(agents, settings, strict=True)]
        self.n_workers = len(self.workers)

    def call(self, method: Callable[..., R], args: Sequence[tuple[Any, ...]]) -> list[R]:
        check_arity(method, args, self.n_workers)
        return [method(w, *a) for w, a in zip(self.workers, args, strict=True)]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.workers = []
