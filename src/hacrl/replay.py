"""Recorded rollouts and replayed peers: learning from another run's verified responses without loading its model.

Recording (`logging.record_rollouts: true`): after every step the trainer writes
`OUTPUT_DIR/rollouts/step-NNNNNN.jsonl.gz`, one JSON line per response of every live agent: problem id, prompt,
response text, source agent, mean per-token log-prob under the source (in its own tokenization), reward, whether
it hit the length limit, and the step. Text, not token ids, so any tokenizer can read it. `rollouts/meta.json`
names the task and the agents. A file is written to a temporary name and renamed, so a killed run never leaves a
half-written step; a resumed run deletes the steps after its checkpoint before writing them again.

Replay (`replay: [{name, path, agent}]`): a replayed peer is a source in the pool that is neither loaded nor trained.
At each step, the recorded responses of `agent` for the same problems (matched by problem id, not position)
join the pool; their rewards are re-verified with the current task. A problem seen at several recorded steps
takes the record of the same step if it has one, else the latest earlier one, else the earliest later one; a
problem the record lacks simply has no peer group (counted). Method: docs/method.md §4.3.

Refused with a clear error: a record of another task, recorded problem ids that are not training problems of the
current task, an unknown agent, an unreadable file. A malformed line is skipped and counted (logged at load).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hacrl.config import ConfigError, ReplayConfig, TaskConfig
from hacrl.pool import Trajectory
from hacrl.tasks.base import Problem

logger = logging.getLogger(__name__)

__all__ = ["RecordedResponse", "ReplayedPeer", "RolloutRecorder", "record_dir"]

RECORD_DIR = "rollouts"
META_FILE = "meta.json"
FORMAT = 1


def record_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / RECORD_DIR


def _task_key(task: TaskConfig) -> dict[str, Any]:
    """What a record must share with a run that replays it: the task and its options (which fix the problems)."""
    return {"name": task.name, "options": task.options}


def _step_file(directory: Path, step: int) -> Path:
    return directory / f"step-{step:06d}.jsonl.gz"


class RolloutRecorder:
    """Writes one file per step of every live agent's verified responses (module docstring)."""

    def __init__(self, output_dir: str | Path, task: TaskConfig, agents: Sequence[str], *, resume_step: int | None):
        self.directory = record_dir(output_dir)
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "task": _task_key(task), "agents": list(agents)}
        (self.directory / META_FILE).write_text(json.dumps(meta, indent=1))
        if resume_step is not None:  # steps after the checkpoint are trained (and recorded) again
            for path in self.directory.glob("step-*.jsonl.gz"):
                if int(path.name[5:11]) > resume_step:
                    path.unlink()

    def write(self, step: int, pool: Sequence[Trajectory], agents: Sequence[str]) -> None:
        lines = [json.dumps({"step": step, "problem_id": t.problem_id, "prompt": t.prompt, "text": t.completion,
                             "source": agents[t.source], "mean_logp": t.source_logp, "reward": t.reward,
                             "truncated": t.truncated, "kind": t.kind})
                 for t in pool if t.source < len(agents)]
        final = _step_file(self.directory, step)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        os.replace(tmp, final)


@dataclass(frozen=True)
class RecordedResponse:
    step: int
    text: str
    mean_logp: float
    truncated: bool


class ReplayedPeer:
    """One replayed peer: the recorded responses of one agent of an earlier run, indexed by problem id."""

    def __init__(self, spec: ReplayConfig, task: TaskConfig, train_problems: Sequence[Problem]) -> None:
        self.name = spec.name
        directory = Path(spec.path).expanduser()
        if (directory / RECORD_DIR / META_FILE).is_file():  # the run directory was given
            directory = directory / RECORD_DIR
        meta_path = directory / META_FILE
        where = f"replay {spec.name!r} ({str(directory)!r})"
        if not meta_path.is_file():
            raise ConfigError(f"{where}: no {META_FILE}; record a run with logging.record_rollouts: true and point "
                              "replay.path at its output_dir (or its rollouts/ directory)")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}: {META_FILE} is not valid JSON: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise ConfigError(f"{where}: record format {meta.get('format')!r}, expected {FORMAT}")
        if meta.get("task") != _task_key(task):
            raise ConfigError(f"{where}: recorded for task {meta.get('task')!r}, but this run's task is "
                              f"{_task_key(task)!r}; a replayed peer must have answered the same problems")
        if spec.agent not in meta.get("agents", []):
            raise ConfigError(f"{where}: no agent {spec.agent!r} in the record (it has {meta.get('agents')})")
        known = {p.id for p in train_problems}
        self.by_problem: dict[str, dict[int, list[RecordedResponse]]] = {}
        self.skipped_lines = 0
        files = sorted(directory.glob("step-*.jsonl.gz"))
        if not files:
            raise ConfigError(f"{where}: the record holds no steps")
        for path in files:
            self._read(path, spec.agent, known, where)
        if not self.by_problem:
            raise ConfigError(f"{where}: the record holds no response of agent {spec.agent!r}")
        if self.skipped_lines:
            logger.warning("%s: %d malformed record line(s) skipped", where, self.skipped_lines)

    def _read(self, path: Path, agent: str, known: set[str], where: str) -> None:
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: {path.name} cannot be read ({exc}); the record is corrupt or truncated") \
                from exc
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                problem, step = str(row["problem_id"]), int(row["step"])
                response = RecordedResponse(step, str(row["text"]), float(row["mean_logp"]), bool(row["truncated"]))
                source = str(row["source"])
            except (ValueError, KeyError, TypeError):
                self.skipped_lines += 1
                continue
            if problem not in known:
                raise ConfigError(f"{where}: {path.name} holds problem {problem!r}, which is not a training problem "
                                  "of this run's task; a replayed peer must have answered the same problems")
            if source == agent:
                self.by_problem.setdefault(problem, {}).setdefault(step, []).append(response)

    def responses(self, problem_id: str, step: int) -> list[RecordedResponse]:
        """The recorded responses to `problem_id` closest to `step` (module docstring); [] if never recorded."""
        steps = self.by_problem.get(problem_id)
        if not steps:
            return []
        if step in steps:
            return steps[step]
        earlier = [s for s in steps if s < step]
        return steps[max(earlier)] if earlier else steps[min(steps)]

    def trajectories(self, problems: Sequence[Problem], step: int, source: int) -> tuple[list[Trajectory], int]:
        """Pool rows (reward 0.0: re-verified by the caller) for this step's problems, and how many had none."""
        rows: list[Trajectory] = []
        missing = 0
        for q, problem in enumerate(problems):
            found = self.responses(problem.id, step)
            missing += not found
            rows += [Trajectory(prompt_index=q, problem_id=problem.id, prompt=problem.prompt, completion=r.text,
                                source=source, source_logp=r.mean_logp, reward=0.0, truncated=r.truncated,
                                completion_ids=(), prompt_ids=(), kind=problem.kind) for r in found]
        return rows, missing
