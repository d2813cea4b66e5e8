"""Executors run the agent workers. The coordinator only calls `map(method, per-worker args)`.

`SequentialExecutor` runs every worker in this process, one after the other: deterministic and easy to
debug. A parallel executor (one process or remote actor per agent) implements the same two methods, so
the trainer and the algorithm code do not change when agents run side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from hacrl.config import AgentConfig
from hacrl.workers import AgentWorker, WorkerSettings


class Executor(Protocol):
    n_workers: int

    def map(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Call `worker.method(*args[i])` on worker i for every worker; results in worker order."""
        ...

    def close(self) -> None: ...


class SequentialExecutor:
    """All workers in this process, one after another.

    `threads` sets torch's intra-op threads for the process. The default is 1: on small machines shared with
    anything else, 2 threads per process were measured 4x to 50x slower per step (README, "Threads").
    """

    def __init__(self, agents: Sequence[AgentConfig], settings: Sequence[WorkerSettings],
                 threads: int | None = 1) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.workers = [AgentWorker(a, s) for a, s in zip(agents, settings, strict=True)]
        self.n_workers = len(self.workers)

    def map(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        if len(args) != self.n_workers:
            raise ValueError(f"map({method!r}): {len(args)} argument tuples for {self.n_workers} workers")
        return [getattr(w, method)(*a) for w, a in zip(self.workers, args, strict=True)]

    def close(self) -> None:
        self.workers = []
