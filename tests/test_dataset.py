"""Your own data: the dataset task on local JSONL / CSV / Parquet files (through `datasets`), field mapping,
held-out splits, row-numbered errors, `skip_bad_rows`, and a real training run on it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import yaml

from clitools import error_line, hacrl, write_config
from hacrl.config import ConfigError, TaskConfig
from hacrl.tasks.benchmarks import BenchmarkDataError
from hacrl.tasks.dataset import DatasetError
from hacrl.tasks.math import math_task_from_options
from hacrl.tasks.registry import make_task

ROWS = [{"question": f"{a}+{b}=", "solution": str(a + b), "level": a % 3, "topic": "add" if a % 2 else "sum"}
        for a in range(1, 21) for b in (1, 2)]


def _jsonl(path: Path, rows: list[dict], blank_after: int | None = None) -> Path:
    lines = [json.dumps(r) for r in rows]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("\n".join(lines) + "\n")
    return path


def _task(**options: object) -> object:
    reward_fn = options.pop("reward_fn", None)
    return make_task(TaskConfig(name="dataset", options=dict(options), reward_fn=reward_fn))  # type: ignore[arg-type]


def test_jsonl_csv_and_parquet_with_field_mapping(tmp_path: Path) -> None:
    frame = pd.DataFrame(ROWS)
    files = {"jsonl": _jsonl(tmp_path / "d.jsonl", ROWS), "csv": tmp_path / "d.csv", "parquet": tmp_path / "d.parquet"}
    frame.to_csv(files["csv"], index=False)
    frame.to_parquet(files["parquet"])
    seen = []
    for path in files.values():
        task = _task(train=str(path), prompt_field="question", answer_field="solution", kind_field="topic",
                     eval_fraction=0.25, split_seed=3)
        train, held = task.train_problems(), task.eval_problems()
        assert len(train) + len(held) == 40 and len(held) == 10
        assert not {p.prompt for p in train} & {p.prompt for p in held}
        first = next(p for p in train if p.prompt == "3+1=")
        assert (first.answer, first.kind, dict(first.columns)) == ("4", "add", {"level": 0, "topic": "add"})
        assert task.score([first, first], ["so \\boxed{4}", "The answer is 5."]) == [1.0, 0.0]  # math-verify
        seen.append(sorted(p.prompt for p in held))
    assert seen[0] == seen[1] == seen[2]  # the split depends on the prompts and the seed, not the format


def test_eval_file_and_columns_passed_to_reward_functions(tmp_path: Path) -> None:
    (tmp_path / "r.py").write_text("def f(completions, level, **kw):\n    return [float(x) for x in level]\n")
    train = _jsonl(tmp_path / "train.jsonl", ROWS[:30])
    test = _jsonl(tmp_path / "test.jsonl", ROWS[30:])
    task = _task(train=str(train), eval=str(test), prompt_field="question", columns=["level"],
                 reward_fn=str(tmp_path / "r.py") + ":f")
    held = list(task.eval_problems())
    assert len(task.train_problems()) == 30 and len(held) == 10
    assert task.score(held[:3], ["x", "y", "z"]) == [float(r["level"]) for r in ROWS[30:33]]
    overlap = _jsonl(tmp_path / "overlap.jsonl", ROWS[25:])
    with pytest.raises(DatasetError, match=r"5 evaluation prompts also appear in the training data"):
        _task(train=str(train), eval=str(overlap), prompt_field="question", answer_field="solution")


def test_bad_rows_name_file_line_and_field_or_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [*ROWS[:5], {"question": "9+9=", "level": 1}, *ROWS[5:]]  # data row 6 has no answer
    path = _jsonl(tmp_path / "d.jsonl", rows, blank_after=2)  # a blank line: row 6 is line 7
    with pytest.raises(DatasetError, match=r"d.jsonl, line 7 \(row 6\): field 'solution' is missing or null \(task"
                                           r".options.answer_field; math-verify scoring needs .* \(set task.options."
                                           r"skip_bad_rows: true to skip such rows\)"):
        _task(train=str(path), prompt_field="question", answer_field="solution")
    with caplog.at_level(logging.WARNING):
        task = _task(train=str(path), prompt_field="question", answer_field="solution", skip_bad_rows=True)
    assert len(task.train_problems()) + len(task.eval_problems()) == 40
    assert "skipped 1 bad rows of 41 (skip_bad_rows); first:" in caplog.text and "line 7 (row 6)" in caplog.text
    # with a reward function, the answer is optional
    (tmp_path / "r.py").write_text("def f(completions, **kw):\n    return [0.0] * len(completions)\n")
    assert _task(train=str(path), prompt_field="question", answer_field="solution",
                 reward_fn=str(tmp_path / "r.py") + ":f").train_problems()
    with pytest.raises(DatasetError, match=r"task.options.prompt_field: .*d.jsonl has no column 'prompt' \(columns: "
                                           r"level, question, solution, topic\)"):
        _task(train=str(path))


def test_file_level_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(ROWS[0]) + "\n" + '{"question": "1+1=", "solution": \n')
    with pytest.raises(DatasetError, match=r"task.options.train: '.*broken.jsonl', line 2: not valid JSON"):
        _task(train=str(broken), prompt_field="question")
    mixed = _jsonl(tmp_path / "mixed.jsonl", [{"prompt": "1+1=", "answer": 2}, {"prompt": "2+2=", "answer": "4"}])
    assert [p.answer for p in _task(train=str(mixed), eval_fraction=0.5).train_problems()
            + list(_task(train=str(mixed), eval_fraction=0.5).eval_problems())] in (["2", "4"], ["4", "2"])
    for options, message in [
        ({"train": str(tmp_path / "none.jsonl")}, "task.options.train: data file .* does not exist"),
        ({"train": str(tmp_path)}, "is not a file"),
        ({"train": str(broken.with_suffix(".txt"))}, "does not exist"),
        ({"eval": "x.jsonl"}, "task.options.train: required for the dataset task"),
        ({"train": str(mixed), "split": 0.1}, "task.options.split: unknown option for the dataset task"),
        ({"train": str(mixed), "eval": str(mixed), "eval_fraction": 0.2}, "either an eval file or eval_fraction"),
        ({"train": str(mixed), "eval_fraction": 1.5}, r"eval_fraction: expected a number in \(0, 1\)"),
        ({"train": str(mixed), "skip_bad_rows": "yes"}, "skip_bad_rows: expected true or false"),
    ]:
        with pytest.raises(ConfigError, match=message):
            _task(**options)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"unknown format '.txt'; use one of .jsonl, .json, .csv, .parquet"):
        _task(train=str(tmp_path / "notes.txt"))


def test_math_benchmarks_accept_skip_bad_rows(tmp_path: Path) -> None:
    rows = [{"problem": f"{i}+1?", "solution": f"\\boxed{{{i + 1}}}", "unique_id": str(i)} for i in range(5)]
    rows.insert(2, {"problem": "no answer here", "solution": "none", "unique_id": "x"})
    _jsonl(tmp_path / "math_train.jsonl", rows)
    _jsonl(tmp_path / "math500_test.jsonl", [{"problem": "7+1?", "answer": "8", "unique_id": "7"}])
    with pytest.raises(BenchmarkDataError, match=r"row 3: .*task.options.skip_bad_rows: true in a run config, "
                                                 r"or hacrl eval --skip-bad-rows"):
        math_task_from_options({"data_dir": str(tmp_path)})
    task = math_task_from_options({"data_dir": str(tmp_path), "skip_bad_rows": True})
    assert len(task.train_problems()) == 5
    from hacrl.evaluation import load_suites  # `hacrl eval --skip-bad-rows`

    _jsonl(tmp_path / "math500_test.jsonl", [{"problem": "7+1?", "answer": "8", "unique_id": "7"}, {"problem": "?"}])
    with pytest.raises(ConfigError, match="row 2: no gold answer"):
        load_suites("math", "math500", tmp_path, None)
    suites, _ = load_suites("math", "math500", tmp_path, None, skip_bad_rows=True)
    assert [len(s.problems) for s in suites] == [1]


def test_training_on_your_own_jsonl_through_the_cli(tmp_path: Path) -> None:
    data = _jsonl(tmp_path / "mine.jsonl", [{"q": f"{a}+{b}=", "a": a + b} for a in range(10) for b in range(3)])
    config = write_config(tmp_path / "run.yaml", tmp_path / "out", steps=1)
    cfg = yaml.safe_load(config.read_text())
    cfg["task"] = {"name": "dataset", "options": {"train": str(data), "prompt_field": "q", "answer_field": "a",
                                                  "eval_fraction": 0.2}}
    config.write_text(yaml.safe_dump(cfg))
    proc = hacrl("train", str(config))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "held-out greedy accuracy, 4 problems" in proc.stdout  # eval_limit 4 of the 6 held-out prompts
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "1+1=", "a": 2}\n{"q": "", "a": 3}\n')
    line = error_line(hacrl("train", str(config), "--overwrite", "--set", f"task.options.train={bad}"))
    assert f"{bad}, line 2 (row 2): field 'q' is empty ('')" in line
