"""`hacrl compare`: a real tiny comparison end to end (run, skip, resume, refuse), and the aggregation math
(mean/std over seeds, warm-start check, target check) on hand-made run directories with hand-computed numbers."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import tiny_run_config
from hacrl.cli import main
from hacrl.compare import (
    build_run_config,
    default_algorithms,
    load_base,
    parse_algorithms,
    parse_seeds,
    render_table,
    rollouts_to_reach,
    run_dir,
    summarise,
    write_report,
)
from hacrl.config import ConfigError, config_from_dict
from hacrl.machine import cpu_model
from hacrl.models import zoo
from hacrl.tasks.registry import make_task

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks" / "learning_efficiency"


def write_config(path: Path, **training: Any) -> Path:
    data = tiny_run_config(path.parent / "unused", steps=2, eval_every=1, **training)
    data["task"]["reward_fn"] = "rewards:graded"  # untrained test agents: a reward that varies, so curves move
    data["checkpoint"] = {"every": 1, "keep_last": 1}
    data["threads"] = 1
    path.write_text(yaml.safe_dump(data))
    return path


def lines_with(text: str, word: str) -> list[str]:
    return [line for line in text.splitlines() if word in line]


def test_compare_runs_skips_resumes_and_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, out = write_config(tmp_path / "tiny.yaml"), tmp_path / "cmp"
    args = ["compare", str(config), "--algorithms", "hacpo,gspo", "--seeds", "0,1", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert len(lines_with(printed, ": starting")) == 4 and not lines_with(printed, "skipped")

    results = json.loads((out / "results.json").read_text())
    assert results["setting"] == "test" and results["algorithms"] == ["gspo", "hacpo"]  # canonical order
    assert results["seeds"] == [0, 1] and results["steps"] == 2 and results["warnings"] == []
    assert results["command"].startswith("hacrl compare ") and results["machine"]["cpu_count"] >= 1
    table = (out / "table.md").read_text()
    assert f"transformers {results['machine']['transformers']}" in table
    if cpu_model() is not None:  # Linux: each run records the CPU it trained on, the table names it
        assert results["run_cpus"] == [cpu_model()] and f"Runs trained on: {cpu_model()}" in table
    assert set(results["agents"]) == {"char", "bpe"}
    for res in results["agents"].values():
        assert isinstance(res["warm_start"], float)
        for algo in ("gspo", "hacpo"):
            e = res["algorithms"][algo]
            assert len(e["per_seed"]) == 2 and math.isclose(e["mean"], sum(e["per_seed"]) / 2)
            assert e["rollouts"] == 2 * 2 * 4  # steps x prompts x G, per agent
            assert e["updates"] >= 2 and set(e["kinds"]) == {"add", "mul"}
            assert e["curve"]["step"] == [0, 1, 2] and e["curve"]["rollouts"] == [0, 8, 16]
            assert e["curve"]["accuracy_mean"][0] == pytest.approx(res["warm_start"])
    assert results["target_check"]["available"] is False  # no gspo_x2 in this comparison
    assert results["budget_target"]["available"] is False  # no larger-budget baseline either
    assert results["agents"]["char"]["algorithms"]["hacpo"]["vs_equal_cost"]["against"] == "gspo"
    assert {(r["algorithm"], r["seed"], r["status"]) for r in results["runs"]} == {
        (a, s, "ran") for a in ("gspo", "hacpo") for s in (0, 1)}

    table = (out / "table.md").read_text()
    for row in ("| Warm start |", "| GSPO |", "| HACPO |", "## Agent `char`", "## Agent `bpe`",
                "## Target: the best collaborative rule beats the budget-matched baseline"):
        assert row in table
    for png in ("curves.png", "curves_char.png", "curves_bpe.png"):
        assert (out / png).stat().st_size > 10_000

    # Second invocation: every run is skipped, nothing is retrained.
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/summary.json")}
    start = time.perf_counter()
    assert main(args) == 0
    elapsed = time.perf_counter() - start
    printed = capsys.readouterr().out
    assert len(lines_with(printed, "skipped (finished, 2 steps)")) == 4 and not lines_with(printed, "starting")
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert elapsed < 30  # aggregation and plots only (seconds); mtimes above are the real check
    again = json.loads((out / "results.json").read_text())
    assert again["agents"] == results["agents"]

    # More steps: the finished run continues from its last checkpoint instead of starting over.
    assert main([*args[:3], "gspo", "--seeds", "0", "--out", str(out), "--set", "training.steps=3"]) == 0
    printed = capsys.readouterr().out
    assert lines_with(printed, "resuming from step 2")
    record = json.loads((run_dir(out, "gspo", 0) / "compare_run.json").read_text())
    assert [(a["from_step"], a["to_step"]) for a in record["attempts"]] == [(0, 2), (2, 3)]
    # Each attempt records its own time (training is part of its wall time), not the run's running total.
    assert all(0 < a["train_wall_seconds"] <= a["wall_seconds"] for a in record["attempts"])
    summary_wall = json.loads((run_dir(out, "gspo", 0) / "summary.json").read_text())["wall_seconds"]
    assert sum(a["train_wall_seconds"] for a in record["attempts"]) == pytest.approx(summary_wall)
    assert json.loads((out / "results.json").read_text())["runs"][0]["status"] == "resumed"

    # A run directory written with other settings is refused, not mixed into the table.
    assert main([*args, "--set", "agents.0.lr=0.5"]) == 2
    assert "different configuration" in capsys.readouterr().err


def test_unknown_algorithm_and_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"unknown algorithm.*'gpso'.*valid names: grpo, gspo"):
        parse_algorithms("hacpo,gpso")
    assert main(["compare", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert parse_seeds("2, 0,2") == [2, 0]
    with pytest.raises(ConfigError, match="not an integer"):
        parse_seeds("0,a")
    assert parse_algorithms(["naive", "hacpo", "gspo_x2", "gspo", "grpo"]) == ["grpo", "gspo", "gspo_x2", "naive",
                                                                               "hacpo"]
    assert parse_algorithms("graft-stored,sgt,grpo_n16,graft,grpo") == ["grpo", "grpo_n16", "graft", "sgt",
                                                                         "graft-stored"]
    with pytest.raises(ConfigError, match=r"unknown algorithm.*'hacpo-stored'"):
        parse_algorithms("hacpo-stored")


@pytest.mark.parametrize("setting", ["state", "size", "model", "trio"])
def test_benchmark_configs_use_the_zoo_pairs(tmp_path: Path, setting: str) -> None:
    base = load_base(BENCHMARKS / f"{setting}.yaml")
    for algo in (*(a for a in default_algorithms(base) if not a.endswith("-stored")), "hacpo-no-clip"):
        cfg = build_run_config(base, [], algo, 1, tmp_path)
        assert [a.model for a in cfg.agents] == [f"zoo:{r}" for r in zoo.PAIRS[setting]]
        assert cfg.algorithm.name == algo and cfg.seed == 1 and cfg.task.name == "arithmetic"
        assert Path(cfg.output_dir) == run_dir(tmp_path, algo, 1)


@pytest.mark.parametrize("setting", ["state", "size", "model", "trio"])
def test_benchmark_configs_train_on_a_balanced_stream_and_report_on_the_held_out_half(setting: str) -> None:
    """The testbed trains on 470 problems of each kind (the default split is 95% add) drawn from the default
    training split, keeps the default held-out split, and reports on its test-holdout half (hyperparameters were
    chosen on the validation half)."""
    cfg = config_from_dict(load_base(BENCHMARKS / f"{setting}.yaml"))
    assert cfg.task.eval_split == "test-holdout"
    default, task = make_task(config_from_dict({**load_base(BENCHMARKS / f"{setting}.yaml"), "task": {
        "name": "arithmetic"}}).task), make_task(cfg.task)
    assert Counter(p.kind for p in task.train_problems()) == {"add": 470, "mul": 470}
    assert {p.id for p in task.train_problems()} <= {p.id for p in default.train_problems()}
    held_out = {p.id for p in default.eval_problems()}
    assert {p.id for p in task.eval_problems()} < held_out and len(task.eval_problems()) == len(held_out) // 2


# ------------------------------------------------------------------------------ hand-made run directories


def write_run(out: Path, algo: str, seed: int, agents: dict[str, dict[str, Any]], wall: float = 10.0) -> None:
    """A finished run as the trainer leaves it: summary.json + metrics.jsonl. Per agent: `curve` is a list of
    (step, rollouts, wall_seconds, accuracy, {kind: acc}); the first point is the warm start, the last the final."""
    d = run_dir(out, algo, seed)
    d.mkdir(parents=True)
    records, before, after, totals = [], {}, {}, {}
    for name, spec in agents.items():
        for step, rollouts, wall_s, acc, kinds in spec["curve"]:
            records.append({"type": "eval", "step": step, "agent": name, "accuracy": acc, **kinds,
                            "rollouts_total": float(rollouts), "wall_seconds": wall_s})
            records.append({"type": "train", "step": step + 1, "agent": name, "reward": 0.5, "loss": 0.1})
        before[name] = {"accuracy": spec["curve"][0][3], **spec["curve"][0][4]}
        after[name] = {"accuracy": spec["curve"][-1][3], **spec["curve"][-1][4]}
        totals[name] = {"rollouts": spec["rollouts"], "generated_tokens": 100, "updates": spec["updates"],
                        "trained_rows": spec.get("trained_rows", spec["rollouts"]), "sample_seconds": 1.0,
                        "train_seconds": spec.get("train_seconds", 1.0)}
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"agents": list(agents), "steps": 2, "before": before, "after": after, "totals": totals,
               "wall_seconds": wall, "stopped_early": False}
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "config.yaml").write_text(yaml.safe_dump({"training": {"num_generations": 4}}))


def curve(points: list[tuple[int, float]], accs: list[float], kinds: list[dict[str, float]] | None = None,
          ) -> list[tuple[int, int, float, float, dict[str, float]]]:
    kinds = kinds or [{} for _ in accs]
    return [(i, r, 5.0 * i, a, k) for i, ((_, r), a, k) in enumerate(zip(points, accs, kinds, strict=True))]


def hand_made(out: Path) -> None:
    """Two agents, three algorithms, two seeds. Agent a: HACPO 0.6/0.8, GSPO 0.5/0.6, GSPO x2 0.6/0.7.
    Agent b: HACPO 0.3/0.3, GSPO 0.3/0.3 (a tie: a miss), GSPO x2 0.4/0.2. Both warm-start at a 0.4, b 0.2."""
    one, two = [(0, 0), (1, 32), (2, 64)], [(0, 0), (1, 64), (2, 128)]
    warm_k = {"add": 0.6, "mul": 0.2}
    finals = {  # algo -> seed -> (a final, a kinds, b final, b mid)
        "hacpo": {0: (0.6, {"add": 1.0, "mul": 0.2}, 0.3, 0.5), 1: (0.8, {"add": 0.5, "mul": 1.0}, 0.3, 0.6)},
        "gspo": {0: (0.5, {"add": 0.5, "mul": 0.5}, 0.3, 0.45), 1: (0.6, {"add": 0.6, "mul": 0.6}, 0.3, 0.5)},
        "gspo_x2": {0: (0.6, {"add": 0.6, "mul": 0.6}, 0.4, 0.5), 1: (0.7, {"add": 0.7, "mul": 0.7}, 0.2, 0.6)},
    }
    for algo, per_seed in finals.items():
        pts = two if algo == "gspo_x2" else one
        for seed, (a_final, a_kinds, b_final, a_mid) in per_seed.items():
            write_run(out, algo, seed, {
                "a": {"curve": curve(pts, [0.4, a_mid, a_final], [warm_k, warm_k, a_kinds]),
                      "rollouts": pts[-1][1], "updates": {"hacpo": 8, "gspo": 4, "gspo_x2": 8}[algo] + 2 * seed},
                "b": {"curve": curve(pts, [0.2, 0.3, b_final]), "rollouts": pts[-1][1], "updates": 4},
            }, wall=10.0 + seed)


def as_json(res: Any) -> dict[str, Any]:
    return json.loads(json.dumps(res.as_json()))


def test_aggregation_math_on_hand_made_runs(tmp_path: Path) -> None:
    hand_made(tmp_path)
    results = summarise(tmp_path, ["gspo", "gspo_x2", "hacpo"], [0, 1], setting="hand")
    res = as_json(results)
    a, b = res["agents"]["a"], res["agents"]["b"]
    assert a["warm_start"] == pytest.approx(0.4) and b["warm_start"] == pytest.approx(0.2)
    assert a["warm_start_kinds"] == pytest.approx({"add": 0.6, "mul": 0.2}) and res["warnings"] == []
    h = a["algorithms"]["hacpo"]
    assert h["per_seed"] == [0.6, 0.8] and h["mean"] == pytest.approx(0.7)
    assert h["std"] == pytest.approx(math.sqrt(0.02))  # sample std: ((0.1^2 + 0.1^2) / (2 - 1)) ** 0.5
    assert a["algorithms"]["gspo"]["std"] == pytest.approx(math.sqrt(0.005))
    assert h["kinds"]["add"]["mean"] == pytest.approx(0.75) and h["kinds"]["add"]["std"] == pytest.approx(
        math.sqrt(0.125))
    assert h["kinds"]["mul"]["per_seed"] == [0.2, 1.0]
    assert (h["rollouts"], h["updates"]) == (64, 9)  # updates 8 and 10 -> mean 9
    assert a["algorithms"]["gspo_x2"]["rollouts"] == 128
    assert h["wall_seconds"]["mean"] == pytest.approx(10.5)
    assert h["curve"]["accuracy_mean"] == pytest.approx([0.4, 0.55, 0.7])
    assert h["curve"]["accuracy_min"] == pytest.approx([0.4, 0.5, 0.6])
    assert h["curve"]["accuracy_max"] == pytest.approx([0.4, 0.6, 0.8])
    assert h["curve"]["rollouts"] == [0, 32, 64] and h["curve"]["wall_seconds"] == [0.0, 5.0, 10.0]

    check = res["target_check"]
    ca, cb = check["agents"]["a"], check["agents"]["b"]
    assert ca["hacpo_gt_gspo"] and ca["hacpo_ge_gspo_x2"] and ca["margin_vs_gspo"] == pytest.approx(0.15)
    # HACPO's mean curve 0.4, 0.55, 0.7 at 0, 32, 64 rollouts reaches GSPO x2's 0.65 at the step-2 point (64);
    # linearly interpolated at 32 + (0.65 - 0.55) / (0.7 - 0.55) * 32 = 53.33. Half of GSPO x2's 128 = 64: met.
    assert ca["hacpo_rollouts_to_target"] == 64 and ca["hacpo_rollouts_to_target_interpolated"] == pytest.approx(
        32 + 32 * 0.1 / 0.15)
    assert ca["rollout_fraction"] == pytest.approx(0.5) and ca["half_rollouts_met"] and ca["all_met"]
    # Paired by seed: HACPO - GSPO = 0.6 - 0.5, 0.8 - 0.6 -> mean 0.15, sample std sqrt(0.005).
    assert ca["paired_vs_gspo"]["per_seed"] == pytest.approx([0.1, 0.2])
    assert ca["paired_vs_gspo"]["mean"] == pytest.approx(0.15) and ca["paired_vs_gspo"]["std"] == pytest.approx(
        math.sqrt(0.005))
    # Agent b: HACPO ties GSPO (0.3 vs 0.3): not "better", reported as a miss; ties GSPO x2 (0.3): ">=" holds,
    # and its curve reaches 0.3 at 32 rollouts, a quarter of GSPO x2's.
    assert not cb["hacpo_gt_gspo"] and cb["hacpo_ge_gspo_x2"] and not cb["all_met"]
    assert cb["hacpo_rollouts_to_target"] == 32 and cb["rollout_fraction"] == pytest.approx(0.25)
    assert check["available"] and not check["all_met"]

    # HACPO is paired with GSPO at equal cost and GSPO x2 (the HACPO paper's) at equal data
    assert h["vs_equal_cost"] == {"against": "gspo", "per_seed": pytest.approx([0.1, 0.2]),
                                  "mean": pytest.approx(0.15), "std": pytest.approx(math.sqrt(0.005))}
    assert h["vs_equal_data"]["against"] == "gspo_x2" and h["vs_equal_data"]["mean"] == pytest.approx(0.05)
    # compute: own sampling + training seconds (1 + 1); HACPO co-trains, so each agent is charged both agents'
    assert (h["compute_seconds"], h["charged_seconds"]) == (2.0, 4.0)
    assert a["algorithms"]["gspo"]["charged_seconds"] == 2.0
    budget = res["budget_target"]
    assert budget["available"] and budget["agents"]["a"]["best_rule"] == "hacpo"
    # a: HACPO - GSPO x2 per seed 0.0, +0.1 -> mean 0.05 <= std 0.0707: not met
    assert budget["agents"]["a"]["margin"] == pytest.approx(0.05) and not budget["agents"]["a"]["met"]

    paths = write_report(results, tmp_path)
    table = (tmp_path / "table.md").read_text()
    assert ("| HACPO | **70.0 ± 14.1** | **75.0 ± 35.4** | 60.0 ± 56.6 | 64 | 64 | 9 | 2 | 4 | +15.0 ± 7.1 vs GSPO "
            "| +5.0 ± 7.1 vs GSPO x2 |") in table
    assert "| Warm start | 40.0 | 60.0 | 20.0 | 0 | 0 | 0 | - | - |  |  |" in table
    assert "| b | 30.0 | 30.0 | **no** | 30.0 | yes | 32 (32) | 128 | yes | **no** |" in table
    assert "Overall: **not met** (missed for `b`)." in table
    assert "* `a`: HACPO - GSPO +10.0, +20.0 (+15.0 ± 7.1); HACPO - GSPO x2 +0.0, +10.0 (+5.0 ± 7.1)" in table
    # Diagnostics from the runs' train records (reward 0.5 at every step; no cross metrics logged).
    assert h["diagnostics"]["reward_first"] == pytest.approx(0.5) and h["diagnostics"]["grad_norm"] is None
    assert "Training diagnostics of `a`" in table and "| HACPO | 50% → 50% | - |" in table
    assert json.loads(paths[0].read_text())["target_check"]["agents"]["a"]["all_met"] is True


def test_warm_start_mismatch_and_incomplete_runs_are_reported(tmp_path: Path) -> None:
    hand_made(tmp_path)
    path = run_dir(tmp_path, "gspo", 1) / "summary.json"
    summary = json.loads(path.read_text())
    summary["before"]["a"]["accuracy"] = 0.45
    path.write_text(json.dumps(summary))
    res = summarise(tmp_path, ["gspo", "gspo_x2", "hacpo"], [0, 1])
    assert len(res.warnings) == 1 and "agent a" in res.warnings[0] and "gspo/seed1=0.4500" in res.warnings[0]
    assert "> warning: agent a" in render_table(res)
    summary["steps"] = 1
    path.write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match="trained 1 steps, expected 2"):
        summarise(tmp_path, ["gspo", "gspo_x2", "hacpo"], [0, 1])
    with pytest.raises(ConfigError, match="has not finished"):
        summarise(tmp_path, ["gspo", "naive"], [0])


def test_ablation_mode_reports_no_target(tmp_path: Path) -> None:
    hand_made(tmp_path)
    res = summarise(tmp_path, ["gspo", "hacpo"], [0, 1])
    assert res.targets["target_check"] == {"available": False, "reason": "needs hacpo, gspo, gspo_x2; missing gspo_x2"}
    assert res.targets["budget_target"]["available"] is False
    assert "Not available for this comparison" in render_table(res)


def test_rollouts_to_reach() -> None:
    assert rollouts_to_reach([0, 10, 20], [0.1, 0.2, 0.4], 0.3) == (pytest.approx(15.0), 20.0)
    assert rollouts_to_reach([0, 10], [0.5, 0.6], 0.3) == (0.0, 0.0)
    assert rollouts_to_reach([0, 10], [0.1, 0.2], 0.3) == (None, None)


def test_cross_setting_summary_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/learning_efficiency/summary.py builds the README headline from results.json files."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("le_summary", BENCHMARKS / "summary.py")
    assert spec is not None and spec.loader is not None
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    hand_made(tmp_path)
    paths = write_report(summarise(tmp_path, ["gspo", "gspo_x2", "hacpo"], [0, 1], setting="hand"), tmp_path)
    assert summary.main([str(paths[0])]) == 0
    out = capsys.readouterr().out
    assert "| setting | steps | agent | warm start | GSPO | GSPO x2 | HACPO |" in out
    assert ("| hand | 2 | a | 40.0 | 55.0 ± 7.1 | 65.0 ± 7.1 | 70.0 ± 14.1 | HACPO - GSPO x2: +5.0 ± 7.1 | "
            "**not met** |") in out
    assert "| hand | 2 | b | 20.0 | 30.0 ± 0.0 | 30.0 ± 14.1 | 30.0 ± 0.0 | HACPO - GSPO x2: -0.0 ± 14.1 |" in out
    # --paired: every rule minus the equal-data baseline, per seed. Agent a: GSPO 0.5/0.6 - 0.6/0.7 = -10, -10;
    # HACPO 0.6/0.8 - 0.6/0.7 = 0, +10 -> +5.0 ± 7.1 (not bold: the mean does not exceed the spread).
    # Agent b: both 0.3/0.3 - 0.4/0.2 = -10, +10 -> -0.0 ± 14.1
    assert summary.main(["--paired", str(paths[0])]) == 0
    out = capsys.readouterr().out
    assert "| setting | agent | equal-data baseline | GSPO | HACPO |" in out
    assert "| hand | a | GSPO x2 65.0 ± 7.1 | -10.0 ± 0.0 | +5.0 ± 7.1 |" in out
    assert "| hand | b | GSPO x2 30.0 ± 14.1 | -0.0 ± 14.1 | -0.0 ± 14.1 |" in out


def test_every_rule_beside_both_baselines_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One seed of every default algorithm on the test agents: the stored-peer arm runs once per agent from the
    recorded GRPO run, every rule is paired with GRPO (equal cost) and GRPO n=8 (equal data, 2 agents x G=4)."""
    config, out = write_config(tmp_path / "tiny.yaml"), tmp_path / "cmp"
    data = yaml.safe_load(config.read_text())
    data["task"]["reward_fn"] = "rewards:coin"
    config.write_text(yaml.safe_dump(data))
    assert default_algorithms(data) == ["grpo", "grpo_n8", "naive", "hacpo", "graft", "sgt", "graft-stored"]
    assert main(["compare", str(config), "--seeds", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "graft-stored seed 0 (char): starting" in printed and "graft-stored seed 0 (bpe): starting" in printed
    assert (run_dir(out, "grpo", 0) / "rollouts" / "step-000002.jsonl.gz").is_file()  # recorded for the replay
    res = json.loads((out / "results.json").read_text())
    for agent in ("char", "bpe"):
        algos = res["agents"][agent]["algorithms"]
        assert algos["grpo"]["rollouts"] == 2 * 2 * 4 and algos["grpo_n8"]["rollouts"] == 2 * 2 * 8
        assert algos["hacpo"]["trained_rows"] == 2 * 2 * 2 * 4  # the whole pool of both agents, every step
        assert algos["graft-stored"]["rollouts"] == 16 and algos["graft-stored"]["charged_seconds"] == pytest.approx(
            algos["graft-stored"]["compute_seconds"])
        assert algos["graft"]["charged_seconds"] > algos["graft"]["compute_seconds"]  # charged the joint run
        for rule in ("naive", "hacpo", "graft", "sgt", "graft-stored"):
            assert algos[rule]["vs_equal_cost"]["against"] in ("grpo", "gspo")
            assert algos[rule]["vs_equal_data"]["against"] == "grpo_n8"
    assert res["budget_target"]["available"] and not res["budget_target"]["agents"]["char"]["met"]  # one seed
    table = (out / "table.md").read_text()
    for name in ("| GRPO |", "| GRPO n=8 |", "| Naive |", "| HACPO |", "| GRAFT |", "| SGT |",
                 "| GRAFT (stored peer) |"):
        assert name in table
    assert "Sharing diagnostics of `char`" in table and "| Rollouts | Trained on | Updates | Compute (s) |" in table


def test_compressed_metrics_aggregate_the_same(tmp_path: Path) -> None:
    """Committed results keep metrics.jsonl gzip-compressed; aggregation reads either."""
    import gzip

    hand_made(tmp_path)
    plain = summarise(tmp_path, ["gspo", "gspo_x2", "hacpo"], [0, 1]).as_json()
    for path in tmp_path.glob("runs/*/seed*/metrics.jsonl"):
        path.with_suffix(".jsonl.gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    assert summarise(tmp_path, ["gspo", "gspo_x2", "hacpo"], [0, 1]).as_json() == plain


def _metrics_without_timings(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if "seconds" not in k and "time" not in k} for r in rows]


def test_parallel_jobs_give_the_same_runs_and_wait_for_the_recorded_peer(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--jobs 2`: every run in its own process, its output in its compare.log; the stored-peer arms start only
    after the GRPO run they replay, and every run's metrics equal those of the one-at-a-time comparison."""
    config = write_config(tmp_path / "tiny.yaml")
    data = yaml.safe_load(config.read_text())
    data["task"]["reward_fn"] = "rewards:coin"
    config.write_text(yaml.safe_dump(data))
    one, two = tmp_path / "one", tmp_path / "two"
    algorithms = "grpo,sgt,graft-stored"
    assert main(["compare", str(config), "--algorithms", algorithms, "--seeds", "0", "--out", str(one)]) == 0
    capsys.readouterr()
    assert main(["compare", str(config), "--algorithms", algorithms, "--seeds", "0", "--out", str(two),
                 "--jobs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "4 runs, 2 at a time" in printed
    order = [line for line in printed.splitlines() if "grpo seed 0" in line or "graft-stored seed 0" in line]
    done_grpo = next(i for i, line in enumerate(order) if "grpo seed 0: done" in line and "stored" not in line)
    first_stored = next(i for i, line in enumerate(order) if "graft-stored" in line)
    assert done_grpo < first_stored
    for algorithm, agent in (("grpo", None), ("sgt", None), ("graft-stored", "char"), ("graft-stored", "bpe")):
        a, b = run_dir(one, algorithm, 0, agent), run_dir(two, algorithm, 0, agent)
        assert "step" in (b / "compare.log").read_text()  # the child's output, not the parent's console
        assert _metrics_without_timings(a / "metrics.jsonl") == _metrics_without_timings(b / "metrics.jsonl")
    assert "--jobs 2" in json.loads((two / "results.json").read_text())["command"]
