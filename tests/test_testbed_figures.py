"""benchmarks/learning_efficiency/testbed_figures.py: the testbed's figures from hand-made comparison outputs, with
hand-computed expectations (headroom, paired budget effect against the seed spread, complementarity, cost)."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "learning_efficiency" / "testbed_figures.py"


@pytest.fixture(scope="module")
def figures() -> ModuleType:
    spec = importlib.util.spec_from_file_location("testbed_figures", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(a_grpo: list[float], a_big: list[float]) -> dict:
    def algo(per_seed: list[float]) -> dict:
        mean = sum(per_seed) / len(per_seed)
        std = (sum((x - mean) ** 2 for x in per_seed) / (len(per_seed) - 1)) ** 0.5
        return {"mean": mean, "std": std, "per_seed": per_seed}

    return {"setting": "hand", "algorithms": ["grpo", "grpo_n8", "graft"], "seeds": [0, 1], "steps": 2,
            "agents": {"a": {"warm_start": 0.30, "algorithms": {"grpo": algo(a_grpo), "grpo_n8": algo(a_big)}}}}


def test_headroom_and_budget_by_hand(figures: ModuleType) -> None:
    # GRPO 0.40 / 0.42 (mean 41, std 1.41); GRPO n=8 0.45 / 0.49 (mean 47, std 2.83): paired +5, +7 -> +6 ± 1.41;
    # headroom 41 - 30 = +11 >= 8; budget helps: +6 > max(1.41, 2.83)
    row = figures.headroom_and_budget(_results([0.40, 0.42], [0.45, 0.49]))["a"]
    assert row["headroom"] == pytest.approx(11.0) and row["headroom_met"]
    assert row["budget_gain"] == pytest.approx(6.0) and row["budget_gain_std"] == pytest.approx(2 ** 0.5)
    assert row["seed_spread"] == pytest.approx(8 ** 0.5) and row["budget_met"]
    # a budget effect inside the seed spread is not one: GRPO n=8 0.40 / 0.46 (std 4.24): paired +0, +4 -> +2 < 4.24
    row = figures.headroom_and_budget(_results([0.40, 0.42], [0.40, 0.46]))["a"]
    assert row["budget_gain"] == pytest.approx(2.0) and row["seed_spread"] == pytest.approx(18 ** 0.5)
    assert not row["budget_met"]
    assert row["headroom"] == pytest.approx(11.0)


def _write_rollouts(run: Path, step: int, rows: list[tuple[str, str, str, float]]) -> None:
    (run / "rollouts").mkdir(parents=True, exist_ok=True)
    with gzip.open(run / "rollouts" / f"step-{step:06d}.jsonl.gz", "wt") as fh:
        for problem, kind, source, reward in rows:
            fh.write(json.dumps({"step": step, "problem_id": problem, "kind": kind, "source": source,
                                 "reward": reward}) + "\n")


def test_complementarity_by_hand(figures: ModuleType, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "grpo" / "seed0"
    # p1 (add): a fails both, b solves one; p2 (mul): a solves one, b fails both; p3 (add): both fail;
    # p4 (mul): both solve
    rows = [("p1", "add", "a", 0.0), ("p1", "add", "a", 0.0), ("p1", "add", "b", 1.0), ("p1", "add", "b", 0.0),
            ("p2", "mul", "a", 1.0), ("p2", "mul", "a", 0.0), ("p2", "mul", "b", 0.0), ("p2", "mul", "b", 0.0),
            ("p3", "add", "a", 0.0), ("p3", "add", "a", 0.0), ("p3", "add", "b", 0.0), ("p3", "add", "b", 0.0),
            ("p4", "mul", "a", 1.0), ("p4", "mul", "a", 1.0), ("p4", "mul", "b", 1.0), ("p4", "mul", "b", 0.0)]
    _write_rollouts(run, 1, rows)
    _write_rollouts(run, 2, [])  # a later step outside --first-steps is never read
    c = figures.complementarity(tmp_path, [0], first_steps=1)
    assert c["prompts"] == 4
    assert c["all_fail"] == {"a": 0.5, "b": 0.5}  # a fails p1, p3; b fails p2, p3
    assert c["mixed"] == {"a": 0.25, "b": 0.5}  # a: p2; b: p1, p4
    assert c["directions"]["b -> a"]["partner_solves"] == 0.5  # of a's failures p1, p3, b solves p1
    assert c["directions"]["b -> a"]["by_kind"]["add"] == {"all_fail_prompts": 2, "partner_solves": 0.5}
    assert c["directions"]["a -> b"]["partner_solves"] == 0.5  # of b's failures p2, p3, a solves p2
    assert c["directions"]["a -> b"]["by_kind"]["mul"] == {"all_fail_prompts": 1, "partner_solves": 1.0}


def test_cost_counts_busy_time_not_the_gaps_between_invocations(figures: ModuleType, tmp_path: Path) -> None:
    def attempt(name: str, start: str, seconds: float) -> None:
        d = tmp_path / "runs" / name / "seed0"
        d.mkdir(parents=True)
        (d / "compare_run.json").write_text(json.dumps({"attempts": [{"started": start, "wall_seconds": seconds}]}))

    attempt("a", "2026-12-07T10:00:00+00:00", 600)  # 10:00-10:10
    attempt("b", "2026-12-07T10:05:00+00:00", 600)  # 10:05-10:15, overlapping
    attempt("c", "2026-12-07T12:00:00+00:00", 300)  # a second invocation, two hours later
    c = figures.cost(tmp_path)
    assert c["runs_minutes"] == pytest.approx(25.0)
    assert c["elapsed_minutes"] == pytest.approx(15.0 + 5.0) and c["met"]
