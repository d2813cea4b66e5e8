"""`hacrl compare`: every sharing rule and both independent baselines on the same agents, over seeds.

Why a command of its own: the claim a user needs checked is comparative — does training my agents together beat
training them alone, at equal cost and at equal data? — so every algorithm must run on the *same* agents, task,
prompt order and evaluation split, over several seeds, and be reported without cherry picking. The package is split
by job:

* `runs`: which runs a comparison needs, their configurations, running / resuming / refusing them;
* `results`: reading the runs and aggregating them (typed), with the accounting and the pairing of every
  collaborative rule with its equal-cost and equal-data baselines;
* `targets`: the claims checked, as data (the HACPO paper's; the best rule against the budget-matched baseline);
* `report` and `plots`: ``table.md``, the console summary and the curves.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hacrl.compare.parallel import run_parallel
from hacrl.compare.plots import plot_curves
from hacrl.compare.report import display_name, render_summary, render_table
from hacrl.compare.results import Results, aggregate, mean_std
from hacrl.compare.runs import (
    RunSpec,
    build_run_config,
    command_line,
    config_differences,
    default_algorithms,
    execute_run,
    load_base,
    now,
    parse_algorithms,
    parse_seeds,
    run_dir,
    run_specs,
    run_status,
    setting_name,
    stored_rule,
)
from hacrl.compare.targets import check_targets, rollouts_to_reach
from hacrl.config import ConfigError, RunConfig
from hacrl.machine import cpu_model

__all__ = ["aggregate", "build_run_config", "compare", "config_differences", "default_algorithms", "display_name",
           "load_base", "machine_info", "mean_std", "parse_algorithms", "parse_seeds", "render_table",
           "rollouts_to_reach", "run_compare_command", "run_dir", "summarise", "write_report"]


def machine_info() -> dict[str, Any]:
    """Where the report was rendered and with which library versions (each run's own CPU is recorded per
    attempt: it decides the zoo weights' float rounding, see `hacrl.machine`)."""
    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        import torch
        import transformers

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover - both are dependencies
        pass
    return info


def summarise(out: Path, algorithms: Sequence[str], seeds: Sequence[int], *, setting: str = "",
              expected_steps: int | None = None) -> Results:
    """Aggregate the runs and check every target (what `compare` does after training)."""
    results = aggregate(out, algorithms, seeds, setting=setting, expected_steps=expected_steps)
    check_targets(results)
    return results


def write_report(results: Results, out: Path) -> list[Path]:
    """Write results.json, table.md and the curve PNGs into `out`; returns their paths."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results_path.write_text(json.dumps(results.as_json(), indent=1))
    table_path = out / "table.md"
    table_path.write_text(render_table(results))
    return [results_path, table_path, *plot_curves(results, out)]


def compare(config_path: str | Path, algorithms: Sequence[str], seeds: Sequence[int], out: Path,
            overrides: Sequence[str] = (), *, command: str | None = None, jobs: int = 1) -> Results:
    """Run (or resume, or skip) every run, then aggregate and write the report into `out`.

    Every run configuration is built and validated before the first run starts, so a typo fails in seconds,
    not after an hour of training. `jobs` > 1 runs that many at a time, each in its own process
    (`hacrl.compare.parallel`); the results are the same as one at a time (every run is seeded by itself).
    """
    if jobs < 1:
        raise ConfigError(f"--jobs: expected an integer >= 1, got {jobs}")
    algorithms = parse_algorithms(algorithms)
    seeds = parse_seeds(seeds)
    out = Path(out)
    base = load_base(config_path)
    setting = setting_name(base, config_path)
    stored = [a for a in algorithms if stored_rule(a)]
    if stored and "grpo" not in algorithms:
        raise ConfigError(f"--algorithms: {', '.join(stored)} replay the agents' independent GRPO runs; add grpo")
    agents = [a.get("name") for a in base.get("agents") or [] if isinstance(a, dict)]
    specs = run_specs(algorithms, seeds, agents)
    configs = {spec: build_run_config(base, overrides, spec.algorithm, spec.seed, out, setting, agent=spec.agent,
                                      record=bool(stored) and spec.algorithm == "grpo") for spec in specs}
    steps = {c.training.steps for c in configs.values()}
    (out / "runs").mkdir(parents=True, exist_ok=True)
    gitignore = out / "runs" / ".gitignore"
    if not gitignore.exists():  # the per-run metrics are worth keeping in git; checkpoints are not
        gitignore.write_text("checkpoints/\ntensorboard/\nrollouts/\n.hacrl-lock\n")
    total = len(configs)
    print(f"hacrl compare: {setting}: {len(algorithms)} algorithm(s) x {len(seeds)} seed(s) = {total} runs of "
          f"{'/'.join(map(str, sorted(steps)))} steps -> {out}", flush=True)
    statuses: dict[tuple[str, int, str | None], str] = {}
    pending: list[tuple[RunSpec, RunConfig, str, str]] = []
    finished: set[tuple[str, int]] = set()
    for i, (spec, cfg) in enumerate(configs.items(), 1):
        label = f"[{i}/{total}] {spec.label}"
        status, done = run_status(cfg)
        key = (spec.algorithm, spec.seed, spec.agent)
        if status == "finished":
            print(f"{label}: skipped (finished, {done} steps) {cfg.output_dir}", flush=True)
            statuses[key] = "skipped"
            finished.add((spec.algorithm, spec.seed))
            continue
        statuses[key] = "resumed" if status == "resume" else "ran"
        verb = f"resuming from step {done}" if status == "resume" else "starting"
        pending.append((spec, cfg, label, f"{verb} -> {cfg.output_dir}"))
    if jobs > 1 and len(pending) > 1:
        print(f"running {len(pending)} runs, {jobs} at a time (one process each)", flush=True)
        run_parallel(pending, jobs, finished=finished, out=out, report=lambda line: print(line, flush=True))
    else:
        for _, cfg, label, note in pending:
            print(f"{label}: {note}", flush=True)
            attempt = execute_run(cfg)
            print(f"{label}: done in {attempt['wall_seconds']:.0f} s", flush=True)
    results = summarise(out, algorithms, seeds, setting=setting, expected_steps=min(steps))
    for run in results.runs:
        run["status"] = statuses.get((run["algorithm"], run["seed"], run["agent"]), "skipped")
    results.provenance = {"config": str(config_path), "overrides": list(overrides),
                          "command": command or command_line(config_path, algorithms, seeds, out, overrides),
                          "date": now(), "machine": machine_info()}
    for warning in results.warnings:
        print(f"warning: {warning}", flush=True)
    paths = write_report(results, out)
    print(render_summary(results), flush=True)
    print("wrote:\n" + "\n".join(f"  {p}" for p in paths), flush=True)
    return results


def run_compare_command(args: Any) -> int:
    """Entry point of ``hacrl compare`` (args: config, algorithms, seeds, out, set)."""
    base = load_base(args.config)
    algorithms = parse_algorithms(args.algorithms) if args.algorithms else default_algorithms(base)
    seeds = parse_seeds(args.seeds or "0,1,2")
    overrides = list(getattr(args, "set", None) or [])
    out = Path(args.out) if args.out else Path("runs") / "compare" / setting_name(base, args.config)
    jobs = int(getattr(args, "jobs", 1) or 1)
    command = command_line(args.config, algorithms, seeds, out, overrides, jobs)
    compare(args.config, algorithms, seeds, out, overrides, command=command, jobs=jobs)
    return 0
