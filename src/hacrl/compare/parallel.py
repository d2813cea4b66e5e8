"""Running a comparison's runs several at a time, each in its own process (`hacrl compare --jobs N`).

Why processes: a run is one `Trainer` whose agents train with one torch thread each, and two such processes on two
cores run side by side without slowing each other (two threads in one process do not; README, "Threads"). A fresh
process per run also starts every run from the same state (no vLLM engine, RNG or cache left behind by the run
before). Each run's console output goes to ``compare.log`` in its run directory, so the parent prints one line per
start and finish and the logs stay readable.

Ordering: a stored-peer arm (``graft-stored``) replays the recorded ``grpo`` run of its seed, so it starts only
after that run has finished. A run that fails stops new starts; the runs already going finish (or checkpoint and
stop on Ctrl-C, which every process of the group receives), then the first failure is raised with its log's path.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from hacrl.compare.runs import RunSpec, execute_run, run_dir, stored_rule
from hacrl.config import RunConfig

LOG_FILE = "compare.log"
"""A run's console output when `compare` runs it in a child process (inside its run directory)."""


class RunFailedError(RuntimeError):
    """A run of a parallel comparison failed; the message names the run and its log."""


def dependency(spec: RunSpec) -> tuple[str, int] | None:
    """The (algorithm, seed) run that `spec` needs finished before it starts: a stored arm's recorded grpo run."""
    return ("grpo", spec.seed) if stored_rule(spec.algorithm) is not None else None


def _run_logged(cfg: RunConfig, log_path: str) -> dict[str, Any]:
    """Child-process body: send fds 1 and 2 (Python's and native libraries' output) to the run's log, then train."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    return execute_run(cfg)


def run_parallel(pending: Sequence[tuple[RunSpec, RunConfig, str, str]], jobs: int, *,
                 finished: set[tuple[str, int]], report: Callable[[str], None],
                 out: Path) -> dict[RunSpec, dict[str, Any]]:
    """Run `pending` ((spec, config, label, start note) in order) at most `jobs` at a time; returns each run's
    attempt record.

    `finished` holds the (algorithm, seed) runs already complete before this call (their dependants may start at
    once). `report` receives one line per start and finish.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    waiting = list(pending)
    done = set(finished)
    attempts: dict[RunSpec, dict[str, Any]] = {}
    running: dict[Future[dict[str, Any]], tuple[RunSpec, str, Path]] = {}
    failure: BaseException | None = None
    failed_label = ""
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads or an engine
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, max_tasks_per_child=1) as pool:
        while waiting or running:
            if failure is None:
                for item in list(waiting):
                    if len(running) >= jobs:
                        break
                    spec, cfg, label, note = item
                    need = dependency(spec)
                    if need is not None and need not in done:
                        continue
                    waiting.remove(item)
                    log = run_dir(out, spec.algorithm, spec.seed, spec.agent) / LOG_FILE
                    report(f"{label}: {note} (log: {log.name})")
                    running[pool.submit(_run_logged, cfg, str(log))] = (spec, label, log)
            elif not running:
                break
            if not running:
                blocked = ", ".join(item[0].label for item in waiting)
                raise RunFailedError(f"runs waiting on runs that are not in this comparison: {blocked}")
            complete, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in complete:
                spec, label, log = running.pop(future)
                try:
                    attempts[spec] = future.result()
                except BaseException as exc:
                    if failure is None:
                        failure, failed_label = exc, f"{label} failed ({type(exc).__name__}: {exc}); see {log}"
                    continue
                done.add((spec.algorithm, spec.seed))
                report(f"{label}: done in {attempts[spec]['wall_seconds']:.0f} s")
    if failure is not None:
        if isinstance(failure, KeyboardInterrupt):
            raise KeyboardInterrupt(failed_label)
        raise RunFailedError(failed_label) from failure
    return attempts
