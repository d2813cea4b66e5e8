"""Benchmark loading: every shipped file, gold answers that score 1.0, and clear errors on bad input."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import shipped_math_data
from hacrl.tasks.benchmarks import (
    BENCHMARK_FILES,
    SHIPPED_ROWS,
    BenchmarkDataError,
    default_data_dir,
    load_benchmark,
    reference_response,
)
from hacrl.tasks.math import MathTask, math_task_from_options
from hacrl.tasks.math_verify import score_many

FIRST_ROWS = 200  # the full-file gold agreement is benchmarks/math_gold_agreement.py


def _data_dir() -> Path | None:
    return shipped_math_data()


@pytest.fixture(scope="module")
def data_dir() -> Path:
    d = _data_dir()
    if d is None:
        pytest.skip("math benchmark data not found (../shared/data/math next to the repo, or $HACRL_MATH_DATA)")
    return d


def _raw_rows(path: Path, n: int) -> list[dict[str, Any]]:
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
            if len(out) >= n:
                break
    return out




@pytest.mark.parametrize("name", list(BENCHMARK_FILES))
def test_shipped_file_loads(name: str, data_dir: Path) -> None:
    problems = load_benchmark(name, data_dir)
    assert len(problems) == SHIPPED_ROWS[name]
    assert all(p.answer.strip() and p.prompt.strip() for p in problems)
    assert len({p.id for p in problems}) == len(problems), "ids must be unique"
    assert all(p.kind == name or p.kind.startswith(name + "/") for p in problems)
    assert all(p.columns["benchmark"] == name for p in problems)
    # the same file, named directly instead of through its directory
    assert load_benchmark(name, data_dir / BENCHMARK_FILES[name], limit=3) == problems[:3]


@pytest.mark.parametrize("name", list(BENCHMARK_FILES))
def test_gold_solution_scores_one(name: str, data_dir: Path) -> None:
    problems = load_benchmark(name, data_dir, limit=FIRST_ROWS)
    rows = _raw_rows(data_dir / BENCHMARK_FILES[name], len(problems))
    got = score_many([reference_response(name, r) for r in rows], [p.answer for p in problems])
    misses = [(p.id, p.answer) for p, s in zip(problems, got, strict=True) if s != 1.0]
    assert not misses


def test_specific_golds(data_dir: Path) -> None:
    amc = load_benchmark("amc23", data_dir)
    assert amc[0].answer == "27" and "-1" in {p.answer for p in amc}
    gsm = load_benchmark("gsm8k_train", data_dir)
    assert gsm[0].answer == "72"
    assert all("," not in p.answer for p in gsm)  # thousands separators removed
    oly = {p.id: p for p in load_benchmark("olympiadbench", data_dir)}
    multi = [p for p in oly.values() if p.columns.get("is_multiple_answer")]
    assert multi and all("$" not in p.answer for p in oly.values())
    assert any(p.answer == "69,84" for p in multi)
    assert all(isinstance(p.columns["final_answer"], list) for p in oly.values())
    m500 = load_benchmark("math500", data_dir, limit=1)[0]
    assert m500.answer == "\\left( 3, \\frac{\\pi}{2} \\right)" and m500.kind == "math500/Precalculus"
    assert m500.id == "math500/test/precalculus/807.json"
    train = {p.id: p for p in load_benchmark("math_train", data_dir)}
    assert train["math_train/train/number_theory/7115.json"].answer == "0"  # empty \boxed{} in the source
    assert sum(p.answer == "(-2,18), (8,38)" for p in train.values()) == 1  # two boxes joined by "and"
    by_bench = load_benchmark("math500", data_dir, limit=2, kind_by="benchmark")
    assert {p.kind for p in by_bench} == {"math500"}


def test_math_task_from_benchmarks(data_dir: Path) -> None:
    task = MathTask.from_benchmarks("math_train", ["math500", "gsm8k"], data_dir=data_dir,
                                    max_train=50, max_eval=20)
    assert len(task.train_problems()) == 50 and len(task.eval_problems()) == 40
    p = task.eval_problems()[-1]
    assert task.score([p], [f"The answer is {p.answer}."]) == [1.0]


def test_math_task_from_options(data_dir: Path) -> None:
    task = math_task_from_options({"train": "gsm8k_train", "eval": "gsm8k, amc23", "data_dir": str(data_dir),
                                   "max_train": 10, "max_eval": 5, "timeout_s": 2})
    assert len(task.train_problems()) == 10 and len(task.eval_problems()) == 10
    assert {p.kind for p in task.eval_problems()} == {"gsm8k", "amc23"}
    assert task.timeout_s == 2.0


@pytest.mark.parametrize(("options", "error", "pattern"), [
    ({"evaluation": "math500"}, ValueError, r"unknown option 'evaluation'.*valid: train, eval"),
    ({"train": 3}, TypeError, "option 'train'"),
    ({"eval": 5}, TypeError, "option 'eval'"),
    ({"eval": " , "}, ValueError, "names no benchmark"),
    ({"max_eval": 0}, TypeError, "option 'max_eval'"),
    ({"timeout_s": "fast"}, TypeError, "option 'timeout_s'"),
    ({"eval": "math9", "data_dir": "/nonexistent"}, ValueError, "unknown benchmark 'math9'"),
    ({"data_dir": "/nonexistent/dir"}, BenchmarkDataError, "file not found: /nonexistent/dir"),
])
def test_math_task_from_options_errors(options: dict[str, Any], error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        math_task_from_options(options)


# ----------------------------------------------------------------------------------------------- bad input


def _write(path: Path, rows: list[object] | str) -> Path:
    text = rows if isinstance(rows, str) else "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_name_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown benchmark 'math5000'.*math500.*olympiadbench"):
        load_benchmark("math5000", tmp_path)


def test_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(BenchmarkDataError, match=re.escape(f"file not found: {missing}")):
        load_benchmark("math500", missing)
    with pytest.raises(BenchmarkDataError, match=r"no math500_test\.jsonl or math500_test\.parquet in directory"):
        load_benchmark("math500", tmp_path)


def test_no_path_and_no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HACRL_MATH_DATA", raising=False)
    assert default_data_dir() is None
    with pytest.raises(BenchmarkDataError, match="HACRL_MATH_DATA is not set"):
        load_benchmark("gsm8k")
    _write(tmp_path / "gsm8k_test.jsonl", [{"question": "q?", "answer": "because\n#### 1,234"}])
    monkeypatch.setenv("HACRL_MATH_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    assert load_benchmark("gsm8k")[0].answer == "1234"


def test_row_missing_answer_names_file_and_row(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = _write(tmp_path / "m.jsonl", [
        {"problem": "a?", "answer": "1"},
        {"problem": "b?"},
        {"problem": "c?", "answer": "3"},
    ])
    expected = re.escape(f"{f}, row 2: no gold answer (looked for 'answer', 'solution'")
    with pytest.raises(BenchmarkDataError, match=expected):
        load_benchmark("math500", f)
    with caplog.at_level(logging.WARNING, logger="hacrl.tasks.benchmarks"):
        got = load_benchmark("math500", f, skip_bad_rows=True)
    assert [p.answer for p in got] == ["1", "3"]
    assert any("skipped 1 bad rows of 3" in r.getMessage() for r in caplog.records)


def test_row_missing_question(tmp_path: Path) -> None:
    f = _write(tmp_path / "g.jsonl", [{"question": "q", "answer": "x\n#### 5"}, {"answer": "#### 5"}])
    with pytest.raises(BenchmarkDataError, match=r"row 2: no question text \(looked for 'question', 'problem'"):
        load_benchmark("gsm8k", f)


def test_gold_variants(tmp_path: Path) -> None:
    f = _write(tmp_path / "m.jsonl", [{"problem": "p", "solution": "so $\\boxed{\\frac{1}{2}}$."},
                                      {"problem": "p2", "solution": "no box here"}])
    with pytest.raises(BenchmarkDataError, match=r"row 2: the solution has no closed \\boxed"):
        load_benchmark("math", f)
    assert load_benchmark("math", f, limit=1)[0].answer == "\\frac{1}{2}"
    g = _write(tmp_path / "g.jsonl", [{"question": "q", "answer": "step one\nstep two"}])
    with pytest.raises(BenchmarkDataError, match="no '#### <number>' line"):
        load_benchmark("gsm8k", g)
    a = _write(tmp_path / "a.jsonl", [{"problem": "p", "answer": 2.5}, {"problem": "q", "answer": -1.0},
                                      {"problem": "r", "answer": 7}])
    assert [p.answer for p in load_benchmark("amc23", a)] == ["2.5", "-1", "7"]
    o = _write(tmp_path / "o.jsonl", [{"question": "q", "final_answer": ["$3$", "$5$"], "id": 9}])
    assert load_benchmark("olympiadbench", o)[0].answer == "3, 5"
    b = _write(tmp_path / "b.jsonl", [{"problem": "p", "answer": True}])
    with pytest.raises(BenchmarkDataError, match="boolean"):
        load_benchmark("aime2025", b)


def test_empty_and_broken_files(tmp_path: Path) -> None:
    empty = _write(tmp_path / "e.jsonl", "\n\n")
    with pytest.raises(BenchmarkDataError, match=re.escape(f"{empty} has no rows")):
        load_benchmark("aime2025", empty)
    bad = _write(tmp_path / "bad.jsonl", '{"problem": "p", "answer": "1"}\n{"problem": \n')
    with pytest.raises(BenchmarkDataError, match=re.escape(f"{bad}, row 2: not valid JSON")):
        load_benchmark("aime2025", bad)
    notobj = _write(tmp_path / "list.jsonl", "[1, 2]\n")
    with pytest.raises(BenchmarkDataError, match="row 1: the row is a JSON list"):
        load_benchmark("aime2025", notobj)
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BenchmarkDataError, match="not UTF-8"):
        load_benchmark("aime2025", binary)
    with pytest.raises(BenchmarkDataError, match="all 1 rows"):
        load_benchmark("aime2025", _write(tmp_path / "x.jsonl", [{"problem": "p"}]), skip_bad_rows=True)


def test_parquet_needs_pyarrow(tmp_path: Path) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        f = tmp_path / "math500_test.parquet"
        f.write_bytes(b"PAR1")
        with pytest.raises(BenchmarkDataError, match="needs pyarrow"):
            load_benchmark("math500", tmp_path)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"problem": "p", "answer": "1"}]), tmp_path / "math500_test.parquet")
    assert load_benchmark("math500", tmp_path)[0].answer == "1"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="limit"):
        load_benchmark("math500", tmp_path, limit=0)
    with pytest.raises(ValueError, match="kind_by"):
        load_benchmark("math500", tmp_path, kind_by="level")  # type: ignore[arg-type]
