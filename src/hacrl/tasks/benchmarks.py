"""Load math benchmarks (MATH, MATH-500, GSM8K, AIME 2025, AMC 2023, Minerva, OlympiadBench) as Problems.

Each source file names its fields differently and stores the gold answer differently (a `\\boxed{}` in a
worked solution, text after GSM8K's `####`, a JSON float, a list of strings), so each benchmark has a small
spec saying where the question and the gold answer are. The gold answer is always turned into one
non-empty string that `hacrl.tasks.math_verify.score` accepts:

* MATH / Minerva: the `answer` field if the file has one, else the last `\\boxed{}` in `solution`
  (two boxes joined only by "and" make a list, see `hacrl.tasks.math_answers.last_boxed`); two MATH train rows
  have an empty box and get their gold from `_ERRATA` (by `unique_id`);
* GSM8K: the text after the last `#### ` in `answer`, thousands commas removed (`1,080` -> `1080`);
* AMC: a float answer is written as an integer when it is one (`27.0` -> `27`);
* OlympiadBench: `final_answer` is a list of strings, often in `$...$` (`["$69$,$84$"]`); the `$` are removed
  and the items joined with ", ", so a multi-answer gold reads as a set (`69,84`) that math-verify compares
  in any order. The original list stays in `Problem.columns["final_answer"]`.

Row numbers in error messages are 1-based line numbers of the JSONL file (or row indices + 1 for parquet).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hacrl.tasks.base import Problem
from hacrl.tasks.math_answers import last_boxed

logger = logging.getLogger(__name__)

DATA_ENV = "HACRL_MATH_DATA"

BENCHMARK_FILES: dict[str, str] = {
    "math_train": "math_train.jsonl",
    "math": "math_test.jsonl",
    "math500": "math500_test.jsonl",
    "gsm8k_train": "gsm8k_train.jsonl",
    "gsm8k": "gsm8k_test.jsonl",
    "aime2025": "aime2025.jsonl",
    "amc23": "amc23.jsonl",
    "minerva": "minerva_math.jsonl",
    "olympiadbench": "olympiadbench.jsonl",
}
"""Default file name of each benchmark inside a data directory."""

SHIPPED_ROWS: dict[str, int] = {
    "math_train": 7500,
    "math": 5000,
    "math500": 500,
    "gsm8k_train": 7473,
    "gsm8k": 1319,
    "aime2025": 30,
    "amc23": 40,
    "minerva": 272,
    "olympiadbench": 675,
}
"""Row counts of the files in BENCHMARK_FILES as shipped (for checks; `load_benchmark` does not enforce them)."""


class BenchmarkDataError(ValueError):
    """A benchmark file is missing, unreadable, empty or has a row without a question or gold answer."""


def default_data_dir() -> Path | None:
    """The directory named by $HACRL_MATH_DATA, or None when it is unset (no path is assumed)."""
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value).expanduser() if value else None


# --------------------------------------------------------------------------------------------------------
# Gold answers
# --------------------------------------------------------------------------------------------------------


class _NoGold(Exception):
    """A row's gold answer cannot be found; the message says why."""


def _unwrap_dollars(s: str) -> str:
    """`$\\frac{1}{2}$` -> `\\frac{1}{2}`; `$69$,$84$` -> `69,84`; an escaped `\\$` is kept."""
    return re.sub(r"(?<!\\)\$", "", s).strip()


def _gold_value(value: Any) -> str:
    """A direct answer field (string, number or list of strings) as one gold string; '' when empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        raise _NoGold(f"the answer is a boolean ({value!r}), not an answer")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise _NoGold(f"the answer is {value!r}")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return _unwrap_dollars(value)
    if isinstance(value, list | tuple):
        parts = [_gold_value(v) for v in value]
        return ", ".join(p for p in parts if p)
    raise _NoGold(f"the answer has an unsupported type {type(value).__name__}")


def _gold_boxed(solution: Any) -> str:
    if isinstance(solution, list):  # some files keep the solution as a list of paragraphs
        solution = "\n".join(str(s) for s in solution)
    if not isinstance(solution, str) or not solution.strip():
        return ""
    boxed = last_boxed(solution)
    if boxed is None:
        raise _NoGold("the solution has no closed \\boxed{...}")
    return boxed.strip()


def _gold_gsm8k(answer: Any) -> str:
    if answer is None:
        return ""
    if not isinstance(answer, str):
        return _gold_value(answer)
    if "####" not in answer:
        if "\n" in answer.strip():
            raise _NoGold("the answer has no '#### <number>' line")
        return _gold_value(answer)  # a file that already holds just the final answer
    final = answer.rsplit("####", 1)[1].strip().split("\n", 1)[0].strip()
    final = final.replace("$", "").rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", final):
        final = final.replace(",", "")
    return final


_ERRATA: dict[str, str] = {
    # MATH train rows whose solution ends in an empty `\boxed{}` (as in the original release). Both are
    # multiple choice with "(A) 0" and the solution argues that no term is prime, so the answer is 0.
    # Used only when the row has no gold of its own.
    "train/number_theory/7115.json": "0",
    "train/number_theory/7117.json": "0",
}


@dataclass(frozen=True)
class _Spec:
    question: tuple[str, ...]
    gold: tuple[tuple[str, Callable[[Any], str]], ...]  # (field, how to read it), tried in order
    subject: tuple[str, ...] = ()
    ident: tuple[str, ...] = ("unique_id", "id", "idx")
    extra: tuple[str, ...] = ()


_MATH = _Spec(
    question=("problem", "question"),
    gold=(("answer", _gold_value), ("solution", _gold_boxed)),
    subject=("type", "subject"),
    extra=("level",),
)
_SPECS: dict[str, _Spec] = {
    "math_train": _MATH,
    "math": _MATH,
    "math500": _MATH,
    "gsm8k_train": _Spec(question=("question", "problem"), gold=(("answer", _gold_gsm8k),)),
    "gsm8k": _Spec(question=("question", "problem"), gold=(("answer", _gold_gsm8k),)),
    "aime2025": _Spec(question=("problem", "question"),
                      gold=(("answer", _gold_value), ("solution", _gold_boxed)), extra=("url",)),
    "amc23": _Spec(question=("problem", "question"), gold=(("answer", _gold_value),), extra=("url",)),
    "minerva": _Spec(question=("problem", "question"),
                     gold=(("answer", _gold_value), ("solution", _gold_boxed)), subject=("type",)),
    "olympiadbench": _Spec(
        question=("question", "problem"),
        gold=(("final_answer", _gold_value), ("answer", _gold_value)),
        subject=("subfield", "subject"),
        extra=("final_answer", "answer_type", "unit", "is_multiple_answer", "error"),
    ),
}
assert set(_SPECS) == set(BENCHMARK_FILES)


# --------------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------------


def _resolve(name: str, path: str | os.PathLike[str] | None) -> Path:
    if path is None:
        path = default_data_dir()
        if path is None:
            raise BenchmarkDataError(
                f"no data path given for benchmark {name!r} and ${DATA_ENV} is not set; pass the file or "
                f"its directory (default file name {BENCHMARK_FILES[name]!r})"
            )
    p = Path(path).expanduser()
    if p.is_dir():
        candidates = [p / BENCHMARK_FILES[name], p / (Path(BENCHMARK_FILES[name]).stem + ".parquet")]
        for c in candidates:
            if c.is_file():
                return c
        raise BenchmarkDataError(
            f"benchmark {name!r}: no {' or '.join(c.name for c in candidates)} in directory {p}"
        )
    if not p.exists():
        raise BenchmarkDataError(f"benchmark {name!r}: file not found: {p}")
    if not p.is_file():
        raise BenchmarkDataError(f"benchmark {name!r}: not a regular file: {p}")
    return p


def _read_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based row number, decoded row) for a .jsonl (blank lines skipped) or .parquet file."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise BenchmarkDataError(
                f"{path} is a parquet file; reading it needs pyarrow (pip install pyarrow), "
                "or convert it to .jsonl"
            ) from exc
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as exc:
            raise BenchmarkDataError(f"cannot read parquet file {path}: {exc}") from exc
        yield from enumerate(rows, start=1)
        return
    try:
        f = path.open(encoding="utf-8")
    except OSError as exc:
        raise BenchmarkDataError(f"cannot open {path}: {exc.strerror or exc}") from exc
    with f:
        try:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BenchmarkDataError(f"{path}, row {lineno}: not valid JSON ({exc.msg})") from exc
        except UnicodeDecodeError as exc:
            raise BenchmarkDataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except OSError as exc:
            raise BenchmarkDataError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _first_text(row: Mapping[str, Any], fields: tuple[str, ...]) -> str:
    for f in fields:
        v = row.get(f)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return ""


def _row_to_problem(name: str, spec: _Spec, row: Any, rowno: int, kind_by: str) -> Problem:
    if not isinstance(row, Mapping):
        raise _NoGold(f"the row is a JSON {type(row).__name__}, not an object")
    question = _first_text(row, spec.question)
    if not question:
        raise _NoGold(f"no question text (looked for {', '.join(map(repr, spec.question))}; "
                      f"fields present: {', '.join(sorted(map(str, row)))})")
    context = row.get("context")
    if isinstance(context, str) and context.strip():
        question = context.strip() + "\n\n" + question
    gold = ""
    problem: _NoGold | None = None
    for fld, read in spec.gold:
        if fld in row:
            try:
                gold = read(row[fld])
            except _NoGold as exc:
                problem = problem or exc
                continue
            if gold:
                break
    if not gold and str(row.get("unique_id")) in _ERRATA:
        gold = _ERRATA[str(row["unique_id"])]
    if not gold and problem is not None:
        raise problem
    if not gold:
        raise _NoGold(f"no gold answer (looked for {', '.join(repr(f) for f, _ in spec.gold)}; "
                      f"fields present: {', '.join(sorted(map(str, row)))})")
    subject = _first_text(row, spec.subject)
    ident = next((str(row[k]) for k in spec.ident if row.get(k) not in (None, "")), str(rowno))
    columns: dict[str, Any] = {"benchmark": name}
    if subject:
        columns["subject"] = subject
    for k in spec.extra:
        if row.get(k) is not None:
            columns[k] = row[k]
    kind = f"{name}/{subject}" if (kind_by == "subject" and subject) else name
    return Problem(id=f"{name}/{ident}", prompt=question, answer=gold, kind=kind, columns=columns)


def load_benchmark(
    name: str,
    path: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = None,
    skip_bad_rows: bool = False,
    kind_by: Literal["subject", "benchmark"] = "subject",
) -> list[Problem]:
    """The problems of benchmark `name` from `path` (a .jsonl/.parquet file, or a directory holding
    `BENCHMARK_FILES[name]`; default: $HACRL_MATH_DATA).

    `Problem.prompt` is the question text, `Problem.answer` the gold string (module doc), `Problem.id`
    `"<name>/<unique_id|id|idx|row>"`, `Problem.kind` `"<name>/<subject>"` when the file has a subject
    (MATH `type`, MATH-500 `subject`, Minerva `type`, OlympiadBench `subfield`) and `kind_by="subject"`,
    else `name`. `limit` keeps the first rows. A row without question or gold answer is an error naming
    the file and row, unless `skip_bad_rows=True`, which skips it with a logged count.
    """
    if name not in _SPECS:
        raise ValueError(f"unknown benchmark {name!r}; valid names: {', '.join(BENCHMARK_FILES)}")
    if kind_by not in ("subject", "benchmark"):
        raise ValueError(f"kind_by must be 'subject' or 'benchmark', got {kind_by!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of rows, got {limit}")
    spec = _SPECS[name]
    file = _resolve(name, path)
    problems: list[Problem] = []
    skipped: list[str] = []
    seen_rows = 0
    for rowno, row in _read_rows(file):
        seen_rows += 1
        try:
            problems.append(_row_to_problem(name, spec, row, rowno, kind_by))
        except _NoGold as exc:
            msg = f"{file}, row {rowno}: {exc}"
            if not skip_bad_rows:
                raise BenchmarkDataError(msg + " (to skip such rows: task.options.skip_bad_rows: true in a run "
                                         "config, or hacrl eval --skip-bad-rows)") from None
            skipped.append(msg)
        if limit is not None and len(problems) >= limit:
            break
    if skipped:
        logger.warning("benchmark %s: skipped %d bad rows of %d in %s; first: %s",
                       name, len(skipped), seen_rows, file, skipped[0])
    if seen_rows == 0:
        raise BenchmarkDataError(f"benchmark {name!r}: {file} has no rows")
    if not problems:
        raise BenchmarkDataError(f"benchmark {name!r}: all {seen_rows} rows of {file} are bad "
                                 f"(first: {skipped[0]})")
    return problems


def reference_response(name: str, row: Mapping[str, Any]) -> str:
    """A response that must score 1.0 against a raw row's gold: the row's own worked solution where the
    file has one (MATH, MATH-500, Minerva, GSM8K), else the gold answer boxed. Used to check that the
    answer checker agrees with every shipped file (benchmarks/math_gold_agreement.py and the tests)."""
    if name.startswith("gsm8k"):
        return str(row["answer"])
    if name in ("math_train", "math", "math500", "minerva"):
        return str(row["solution"])
    if name == "olympiadbench":
        return "\\boxed{" + ", ".join(row["final_answer"]) + "}"
    return "\\boxed{" + str(row["answer"]) + "}"  # aime2025 (string), amc23 (float)


__all__ = [
    "BENCHMARK_FILES",
    "DATA_ENV",
    "SHIPPED_ROWS",
    "BenchmarkDataError",
    "default_data_dir",
    "load_benchmark",
    "reference_response",
]
