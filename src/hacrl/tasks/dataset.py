"""Your own data as a task: local JSONL / JSON / CSV / Parquet files, read with Hugging Face `datasets`.

    task:
      name: dataset
      options:
        train: data/train.jsonl       # required
        eval: data/test.jsonl         # or leave it out and hold out `eval_fraction` of the training prompts
        prompt_field: question        # default "prompt"
        answer_field: solution        # default "answer"; the gold answer math-verify compares against
        kind_field: subject           # optional: per-kind accuracy
        columns: [difficulty]         # extra columns passed to reward functions (default: every other column)
        skip_bad_rows: false          # true: skip (and count, and log) rows without a prompt or answer
      reward_fn: my_rewards.py:score  # optional: score with your TRL-style function instead of math-verify

Why through `datasets`: it is the field-standard reader (TRL's trainers take its `Dataset`s), it reads every
common format, and the same files then work in both. One exception keeps errors precise: when `datasets` cannot
read a JSONL file (a bad line, or a column whose type changes between rows), the file is read line by line with
the standard `json` module instead, so a broken line is reported by its line number and a mixed-type column
still loads.

Rows are numbered from 1 in file order (CSV: data rows after the header; JSONL errors also give the line). Without
`reward_fn`, completions are scored with math-verify against the answer (`hacrl.tasks.math.score_many`), so every
row needs one; with `reward_fn` the answer is optional and passed to the function as `answer`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hacrl.config import ConfigError
from hacrl.tasks.base import FixedSplits, Problem, check_same_length

logger = logging.getLogger(__name__)

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
"""File extension -> `datasets` builder name."""


class DatasetError(ConfigError):
    """A data file that cannot be used: missing, unreadable, or a row without the fields a task needs."""


@dataclass(frozen=True)
class DatasetOptions:
    """`task.options` of the dataset task (module docstring); validated by `from_options`."""

    train: str
    eval: str | None = None
    eval_fraction: float | None = None
    split_seed: int = 0
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    kind_field: str | None = None
    columns: tuple[str, ...] | None = None
    skip_bad_rows: bool = False
    max_train: int | None = None
    max_eval: int | None = None
    timeout_s: float | None = 5.0
    name: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> DatasetOptions:
        valid = list(cls.__dataclass_fields__)
        for key in options:
            if key not in valid:
                raise ConfigError(f"task.options.{key}: unknown option for the dataset task "
                                  f"(valid: {', '.join(valid)})")
        if "train" not in options:
            raise ConfigError("task.options.train: required for the dataset task (a .jsonl, .json, .csv or .parquet "
                              "file)")
        values = dict(options)
        for key in ("train", "eval", "prompt_field", "answer_field", "kind_field", "name"):
            v = values.get(key)
            if v is not None and not (isinstance(v, str) and v.strip()):
                raise ConfigError(f"task.options.{key}: expected a non-empty string, got {v!r}")
        cols = values.get("columns")
        if cols is not None:
            if not isinstance(cols, list | tuple) or not all(isinstance(c, str) for c in cols):
                raise ConfigError(f"task.options.columns: expected a list of column names, got {cols!r}")
            values["columns"] = tuple(cols)
        frac = values.get("eval_fraction")
        if frac is not None and (isinstance(frac, bool) or not isinstance(frac, int | float) or not 0 < frac < 1):
            raise ConfigError(f"task.options.eval_fraction: expected a number in (0, 1), got {frac!r}")
        if frac is not None and values.get("eval") is not None:
            raise ConfigError("task.options.eval_fraction: give either an eval file or eval_fraction, not both")
        for key in ("max_train", "max_eval"):
            v = values.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"task.options.{key}: expected a positive integer, got {v!r}")
        if not isinstance(values.get("skip_bad_rows", False), bool):
            raise ConfigError(f"task.options.skip_bad_rows: expected true or false, got {values['skip_bad_rows']!r}")
        seed = values.get("split_seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"task.options.split_seed: expected an integer, got {seed!r}")
        t = values.get("timeout_s", 5.0)
        if t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or t <= 0):
            raise ConfigError(f"task.options.timeout_s: expected a positive number of seconds or null, got {t!r}")
        return cls(**values)


# ------------------------------------------------------------------------------------------ reading


def read_rows(path: str | Path, *, option: str = "train") -> tuple[list[dict[str, Any]], list[str]]:
    """All rows of a data file as dicts, and how to name each row in messages ("row 3" / "line 4 (row 3)")."""
    p = Path(path).expanduser()
    where = f"task.options.{option}"
    if not p.exists():
        raise DatasetError(f"{where}: data file {str(p)!r} does not exist")
    if not p.is_file():
        raise DatasetError(f"{where}: {str(p)!r} is not a file")
    builder = FORMATS.get(p.suffix.lower())
    if builder is None:
        raise DatasetError(f"{where}: {str(p)!r}: unknown format {p.suffix!r}; use one of {', '.join(FORMATS)}")
    try:
        rows = _read_with_datasets(p, builder)
    except DatasetError:
        raise
    except Exception as exc:
        if p.suffix.lower() != ".jsonl":
            raise DatasetError(f"{where}: cannot read {str(p)!r}: {_first_line(exc)}") from exc
        logger.debug("datasets could not read %s (%s); reading it line by line", p, _first_line(exc))
        rows, lines = _read_jsonl(p, where)
        return rows, [f"line {line} (row {i})" for i, line in enumerate(lines, start=1)]
    if p.suffix.lower() == ".jsonl":
        lines = _nonblank_lines(p)
        if len(lines) == len(rows):
            return rows, [f"line {line} (row {i})" for i, line in enumerate(lines, start=1)]
    return rows, [f"row {i}" for i in range(1, len(rows) + 1)]


def _read_with_datasets(path: Path, builder: str) -> list[dict[str, Any]]:
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    cache = tempfile.mkdtemp(prefix="hacrl-datasets-")  # nothing is left in ~/.cache for a local file
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True)
        return [dict(row) for row in ds]
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _read_jsonl(path: Path, where: str) -> tuple[list[dict[str, Any]], list[int]]:
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{where}: {str(path)!r}, line {lineno}: not valid JSON ({exc.msg})") from None
                lines.append(lineno)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{where}: {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DatasetError(f"{where}: cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    return rows, lines


def _nonblank_lines(path: Path) -> list[int]:
    with contextlib.suppress(OSError, UnicodeDecodeError), path.open(encoding="utf-8") as fh:
        return [i for i, line in enumerate(fh, start=1) if line.strip()]
    return []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


# ------------------------------------------------------------------------------------------ rows -> problems


class _BadRow(Exception):
    pass


def _text(value: Any) -> str:
    """A field as text: strings stripped, integral floats without '.0' (CSV reads 4 as 4.0 sometimes)."""
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).strip()


def problems_from_rows(rows: Sequence[Mapping[str, Any]], labels: Sequence[str], *, file: str, split: str,
                       opts: DatasetOptions, needs_answer: bool, limit: int | None) -> list[Problem]:
    """Rows -> Problems; a row without a prompt (or a needed answer) is an error naming the file, row and field,
    or, with `skip_bad_rows`, skipped, counted and logged."""
    problems: list[Problem] = []
    skipped: list[str] = []
    _check_mapping(rows, file, opts, needs_answer)
    for number, (row, label) in enumerate(zip(rows, labels, strict=True), start=1):
        try:
            problems.append(_problem(row, f"{split}/{number}", opts, needs_answer))
        except _BadRow as exc:
            msg = f"{file}, {label}: {exc}"
            if not opts.skip_bad_rows:
                raise DatasetError(msg + " (set task.options.skip_bad_rows: true to skip such rows)") from None
            skipped.append(msg)
        if limit is not None and len(problems) >= limit:
            break
    if skipped:
        logger.warning("dataset %s: skipped %d bad rows of %d (skip_bad_rows); first: %s", file, len(skipped),
                       len(rows), skipped[0])
    if not rows:
        raise DatasetError(f"{file} has no rows")
    if not problems:
        raise DatasetError(f"{file}: all {len(rows)} rows are bad (first: {skipped[0]})")
    return problems


def _check_mapping(rows: Sequence[Mapping[str, Any]], file: str, opts: DatasetOptions, needs_answer: bool) -> None:
    """A field no row has is a mapping mistake, not a bad row: say which option to set (skipping cannot help)."""
    present: set[str] = set()
    for row in rows:
        if isinstance(row, Mapping):
            present.update(map(str, row))
    if not present:
        return
    wanted = [("prompt_field", opts.prompt_field)] + ([("answer_field", opts.answer_field)] if needs_answer else [])
    wanted += [("kind_field", opts.kind_field)] if opts.kind_field else []
    wanted += [("columns", c) for c in opts.columns or ()]
    for option, name in wanted:
        if name not in present:
            raise DatasetError(f"task.options.{option}: {file} has no column {name!r} (columns: "
                               f"{', '.join(sorted(present))})")


def _problem(row: Mapping[str, Any], ident: str, opts: DatasetOptions, needs_answer: bool) -> Problem:
    if not isinstance(row, Mapping):
        raise _BadRow(f"the row is a {type(row).__name__}, not an object with fields")
    present = ", ".join(sorted(map(str, row))) or "none"
    if opts.prompt_field not in row:
        raise _BadRow(f"no field {opts.prompt_field!r} (task.options.prompt_field; fields present: {present})")
    prompt = row[opts.prompt_field]
    if not isinstance(prompt, str) or not prompt.strip():
        what = "missing or null" if prompt is None else "empty" if isinstance(prompt, str) else "not text"
        raise _BadRow(f"field {opts.prompt_field!r} is {what}" + (f" ({prompt!r})" if prompt is not None else ""))
    answer = _text(row.get(opts.answer_field))
    if needs_answer and not answer:
        # `datasets` gives a row that lacks a column None in it, so "missing" and null cannot be told apart
        why = "missing or null" if row.get(opts.answer_field) is None else "empty"
        raise _BadRow(f"field {opts.answer_field!r} is {why} (task.options.answer_field; math-verify scoring needs a "
                      f"gold answer in every row, or set task.reward_fn; fields present: {present})")
    kind = "default"
    if opts.kind_field is not None:
        kind = _text(row.get(opts.kind_field)) or "default"
    reserved = {opts.prompt_field, opts.answer_field}
    if opts.columns is not None:
        missing = [c for c in opts.columns if c not in row]
        if missing:
            raise _BadRow(f"no column(s) {', '.join(map(repr, missing))} (task.options.columns; fields present: "
                          f"{present})")
        columns = {c: row[c] for c in opts.columns}
    else:
        columns = {k: v for k, v in row.items() if k not in reserved}
    return Problem(id=ident, prompt=prompt.strip(), answer=answer, kind=kind, columns=columns)


def held_out_split(problems: Sequence[Problem], fraction: float, seed: int) -> tuple[list[Problem], list[Problem]]:
    """Split by prompt, not by row, so a prompt repeated in the file never lands on both sides. Which prompts go
    to the held-out side depends only on the prompt text and `seed` (a hash), not on the file's order."""
    prompts = sorted({p.prompt for p in problems},
                     key=lambda s: hashlib.sha256(f"{seed}\0{s}".encode()).hexdigest())
    n_eval = max(1, round(fraction * len(prompts)))
    if n_eval >= len(prompts):
        raise DatasetError(f"task.options.eval_fraction: {fraction} of {len(prompts)} distinct prompts leaves no "
                           "training prompt; lower it or give an eval file")
    held = set(prompts[:n_eval])
    return [p for p in problems if p.prompt not in held], [p for p in problems if p.prompt in held]


# ------------------------------------------------------------------------------------------ the task


class DatasetTask(FixedSplits):
    """Problems from local files; scored with math-verify against the answer column (see module docstring).

    Training and evaluation must not share a prompt: held-out accuracy is meaningless otherwise.
    """

    def __init__(self, opts: DatasetOptions, *, needs_answer: bool = True) -> None:
        rows, labels = read_rows(opts.train, option="train")
        train = problems_from_rows(rows, labels, file=opts.train, split="train", opts=opts,
                                   needs_answer=needs_answer, limit=None)
        if opts.eval is not None:
            rows, labels = read_rows(opts.eval, option="eval")
            evaluation = problems_from_rows(rows, labels, file=opts.eval, split="eval", opts=opts,
                                            needs_answer=needs_answer, limit=opts.max_eval)
        else:
            train, evaluation = held_out_split(train, opts.eval_fraction or 0.1, opts.split_seed)
            if opts.max_eval is not None:
                evaluation = evaluation[: opts.max_eval]
        if opts.max_train is not None:
            train = train[: opts.max_train]
        train_prompts = {p.prompt for p in train}
        overlap = [p for p in evaluation if p.prompt in train_prompts]
        if overlap:
            raise DatasetError(f"task.options.eval: {len(overlap)} evaluation prompts also appear in the training data "
                               f"(first: {overlap[0].id}, {overlap[0].prompt[:60]!r}); use disjoint files")
        super().__init__(opts.name or f"dataset:{Path(opts.train).name}", train, evaluation)
        self.timeout_s = opts.timeout_s
        from hacrl.tasks.math_verify import ScoreStats

        self.stats = ScoreStats()  # this task's answer checks (timeouts, errors), as MathTask keeps them

    def score(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        from hacrl.tasks.math_verify import score_many

        check_same_length(problems, completions)
        return score_many(list(completions), [p.answer for p in problems], timeout_s=self.timeout_s,
                          stats=self.stats)


def dataset_task_from_options(options: Mapping[str, Any], *, needs_answer: bool = True) -> DatasetTask:
    return DatasetTask(DatasetOptions.from_options(options), needs_answer=needs_answer)
