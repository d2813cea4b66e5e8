"""Where metrics go: a JSONL file (the record of truth), TensorBoard, and the console.

One JSONL line per (step, agent) for training metrics and one per (step, agent) for evaluations, each
with `type`, `step`, `agent`; that file is what `hacrl compare` and the docs read back.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None marks it without breaking parsers
    return value


class Tracker:
    def __init__(self, out_dir: Path, *, tensorboard: bool = True, resume_step: int | None = None) -> None:
        """`resume_step`: continue an existing file, dropping records written after that step by the run
        that was interrupted (they will be written again), so every step appears exactly once."""
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / "metrics.jsonl"
        if resume_step is not None and self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and _step_of(line) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._file = self.path.open("a" if resume_step is not None else "w")
        self._tb = None
        self._write_failed = False
        self.tensorboard_dir: Path | None = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard_dir = out_dir / "tensorboard"
                self._tb = SummaryWriter(log_dir=str(self.tensorboard_dir))
            except ImportError:  # tensorboard is a core dependency, but say so if it is missing
                logger.warning("tensorboard is not installed; metrics go to %s only", self.path)

    def log(self, kind: str, step: int, agent: str, metrics: dict[str, Any]) -> None:
        record = {"type": kind, "step": step, "agent": agent, **{k: _clean(v) for k, v in metrics.items()}}
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as exc:  # a file object's OSError names no file; name it (a torn line is dropped on resume)
            self._write_failed = True
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(f"{agent}/{kind}/{key}", value, step)

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as exc:
            if not self._write_failed:  # after a failed write, closing fails on the same bytes: that error stands
                raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        if self._tb is not None:
            self._tb.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62  # a torn last line from a killed run: drop it

def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (it reads fine in a terminal too)."""
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
