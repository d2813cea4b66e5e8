"""`hacrl compare`: HACPO against the baselines on the same agents, over seeds (the paper's Table 1 in miniature).

Why a command of its own: the product's claim is comparative (every agent ends better under HACPO than under
GSPO, and at least as good as GSPO x2 at half its rollouts), so it must be checked with every algorithm run on
the *same* agents, task, prompt order and evaluation split, over several seeds, and reported without cherry
picking. This module

1. runs every (algorithm, seed) as an ordinary `Trainer` run in ``OUT/runs/<algorithm>/seed<seed>``: the base
   YAML plus the user's overrides, with only ``algorithm.name``, ``seed``, ``output_dir`` (and ``run_name``)
   changed, so the prompt order (seeded by ``seed``) and the held-out split (fixed by the task options) are
   the same for every algorithm of a seed;
2. is resumable: a finished run (``summary.json`` with the expected number of steps) is skipped, an
   interrupted one continues from its latest checkpoint, and a run directory written by a *different*
   configuration is refused rather than silently mixed into the table;
3. aggregates each run's ``summary.json`` (final and step-0 accuracies, rollout/update totals) and
   ``metrics.jsonl`` (the evaluation curve) into ``results.json``, ``table.md`` and ``curves*.png``, including
   a "target check" that states, per agent, whether each part of the headline claim holds, with the numbers.

Single-agent presets (grpo, gspo, gspo_x2) train each agent on its own rollouts only, so one run with n agents
gives every agent's single-agent result; no separate per-agent runs are needed.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import math
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from hacrl.algorithms.presets import PRESETS
from hacrl.config import ConfigError, RunConfig, apply_overrides, config_from_dict, read_yaml_mapping
from hacrl.machine import cpu_model
from hacrl.run_diagnostics import diagnostics_table, mean_over_runs, summarise_agent

logger = logging.getLogger(__name__)

DEFAULT_ALGORITHMS: tuple[str, ...] = ("hacpo", "gspo", "gspo_x2", "grpo", "naive")
ABLATION_ALGORITHMS: tuple[str, ...] = ("hacpo", "hacpo-no-adv", "hacpo-no-omega", "hacpo-alpha0",
                                        "hacpo-no-stepwise", "hacpo-no-clip")
DISPLAY_NAMES: dict[str, str] = {"grpo": "GRPO", "gspo": "GSPO", "gspo_x2": "GSPO x2", "naive": "Naive",
                                 "hacpo": "HACPO"}
RUN_RECORD = "compare_run.json"
"""Per-run file written by `compare`: one entry per attempt (fresh start or resume) with its wall time."""
TOLERANCE = 1e-9
"""Means are compared with this slack so float noise in an average never decides a target either way."""

# Config fields that may differ between attempts of the same run without changing what it computes.
_IGNORED_FIELDS = ("output_dir", "run_name", "logging", "checkpoint", "executor", "ray_address", "threads",
                   "training.steps")
_IGNORED_AGENT_FIELDS = ("threads",)


def display_name(algorithm: str) -> str:
    """The name used in tables and legends (the paper's spelling for the main methods)."""
    return DISPLAY_NAMES.get(algorithm, algorithm)


# ------------------------------------------------------------------------------------------ argument parsing


def parse_algorithms(value: str | Sequence[str]) -> list[str]:
    """Preset names from ``"hacpo,gspo"`` (or a list), in a canonical order (PRESETS order: the paper's table
    order, HACPO after the baselines); unknown names raise a ConfigError listing the valid ones."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip() for n in items if n.strip()]
    if not names:
        raise ConfigError(f"--algorithms: name at least one algorithm (valid: {', '.join(PRESETS)})")
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise ConfigError(f"--algorithms: unknown algorithm(s) {', '.join(map(repr, unknown))}; "
                          f"valid names: {', '.join(PRESETS)}")
    return [n for n in PRESETS if n in set(names)]


def parse_seeds(value: str | Sequence[int]) -> list[int]:
    """Seeds from ``"0,1,2"`` (or a list), duplicates dropped, order kept."""
    items = value.split(",") if isinstance(value, str) else list(value)
    seeds: list[int] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            seed = int(text)
        except ValueError:
            raise ConfigError(f"--seeds: {text!r} is not an integer (expected e.g. 0,1,2)") from None
        if seed not in seeds:
            seeds.append(seed)
    if not seeds:
        raise ConfigError("--seeds: give at least one seed, e.g. 0,1,2")
    return seeds


def run_dir(out: Path, algorithm: str, seed: int) -> Path:
    """Where the run of `algorithm` with `seed` lives inside a compare output directory."""
    return Path(out) / "runs" / algorithm / f"seed{seed}"


# ------------------------------------------------------------------------------------------ configuration


def load_base(config_path: str | Path) -> dict[str, Any]:
    """The base YAML as a dict (validated per run later, once algorithm and seed are set)."""
    return read_yaml_mapping(config_path)


def build_run_config(base: dict[str, Any], overrides: Sequence[str], algorithm: str, seed: int, out: Path,
                     setting: str = "") -> RunConfig:
    """The configuration of one (algorithm, seed) run: the base plus user overrides, then the fields compare
    owns (algorithm, seed, output directory). Everything else is identical across the runs of a comparison."""
    data = apply_overrides(copy.deepcopy(base), list(overrides))
    algo_section = data.get("algorithm")
    if algo_section is None:
        algo_section = data["algorithm"] = {}
    if not isinstance(algo_section, dict):
        raise ConfigError(f"algorithm: expected a mapping of fields, got {algo_section!r}")
    algo_section["name"] = algorithm
    data["seed"] = seed
    data["output_dir"] = str(run_dir(out, algorithm, seed))
    data["run_name"] = f"{setting or data.get('run_name', 'hacrl')}-{algorithm}-seed{seed}"
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{algorithm} (seed {seed}): {exc}") from exc


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, v in enumerate(value):
            out |= _flatten(v, f"{prefix}.{i}")
        return out
    return {prefix: value}


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """The flattened fields that decide what a run computes (bookkeeping and resources left out)."""
    flat = _flatten(cfg)

    def ignored(key: str) -> bool:
        if any(key == f or key.startswith(f + ".") for f in _IGNORED_FIELDS):
            return True
        parts = key.split(".")
        return len(parts) == 3 and parts[0] == "agents" and parts[2] in _IGNORED_AGENT_FIELDS

    return {k: v for k, v in flat.items() if not ignored(k)}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between a run directory's saved config and the one compare would use."""
    a, b = _comparable(saved), _comparable(current)
    return [f"{k}: {a.get(k, '<unset>')!r} there vs {b.get(k, '<unset>')!r} now" for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k)]


# ------------------------------------------------------------------------------------------ running


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _checkpoint_step(path: Path) -> int:
    match = re.search(r"(\d+)$", path.name)
    return int(match.group(1)) if match else -1


def run_status(cfg: RunConfig) -> tuple[str, int]:
    """("finished" | "resume" | "new", steps already done) for a run directory; refuses a directory that holds
    a different configuration or more steps than asked for (its numbers would not be comparable)."""
    from hacrl.checkpoint import latest_checkpoint

    out = Path(cfg.output_dir)
    expected = cfg.training.steps
    saved_cfg = out / "config.yaml"
    if saved_cfg.is_file():
        saved = yaml.safe_load(saved_cfg.read_text()) or {}
        diffs = config_differences(saved, cfg.to_dict())
        if diffs:
            raise ConfigError(f"{out} holds a run with a different configuration ({'; '.join(diffs)}); "
                              "use another --out (or delete that directory) to compare with these settings")
    done = 0
    summary_path = out / "summary.json"
    if summary_path.is_file():
        summary = _read_json(summary_path)
        done = int(summary.get("steps", 0))
        if done == expected and not summary.get("stopped_early", False):
            return "finished", done
    latest = latest_checkpoint(out / "checkpoints")
    if latest is not None:
        done = max(done, _checkpoint_step(latest))
    if done > expected:
        raise ConfigError(f"{out} already holds {done} training steps, more than training.steps={expected}; "
                          "use another --out to compare at fewer steps")
    return ("resume" if latest is not None else "new"), (_checkpoint_step(latest) if latest is not None else 0)


def _append_record(out: Path, attempt: dict[str, Any]) -> None:
    path = out / RUN_RECORD
    record = _read_json(path) if path.is_file() else {"attempts": []}
    record["attempts"].append(attempt)
    path.write_text(json.dumps(record, indent=1))


def execute_run(cfg: RunConfig) -> dict[str, Any]:
    """Train one run to `training.steps` (resuming from its latest checkpoint if there is one) and record the
    attempt's wall time; a run stopped by a signal raises KeyboardInterrupt so the comparison stops too."""
    from hacrl.trainer import Trainer

    start = time.perf_counter()
    started = _now()
    trainer = Trainer(cfg, resume="auto")
    from_step = trainer.step
    train_wall_before = trainer.wall_seconds  # restored from the checkpoint: the run's total, not this attempt's
    try:
        summary = trainer.run()
    finally:
        trainer.close()
    attempt = {"started": started, "from_step": from_step, "to_step": summary.steps,
               "wall_seconds": time.perf_counter() - start,
               "train_wall_seconds": summary.wall_seconds - train_wall_before,
               "stopped_early": summary.stopped_early, "eval_problems": len(trainer.eval_problems),
               "cpu_model": cpu_model()}
    _append_record(Path(cfg.output_dir), attempt)
    if summary.stopped_early:
        print(f"{cfg.output_dir}: stopped at step {summary.steps} on a signal; rerun the same command to resume",
              flush=True)
        raise KeyboardInterrupt(f"{cfg.output_dir} stopped at step {summary.steps}; rerun to resume")
    return attempt


def compare(config_path: str | Path, algorithms: Sequence[str], seeds: Sequence[int], out: Path,
            overrides: Sequence[str] = (), *, command: str | None = None) -> dict[str, Any]:
    """Run (or resume, or skip) every (algorithm, seed), then aggregate and write the report into `out`.

    Every run configuration is built and validated before the first run starts, so a typo fails in seconds,
    not after an hour of training. Returns the results dict that is also written to ``out/results.json``.
    """
    algorithms = parse_algorithms(algorithms)
    seeds = parse_seeds(seeds)
    out = Path(out)
    base = load_base(config_path)
    setting = _setting_name(base, config_path)
    configs = {(a, s): build_run_config(base, overrides, a, s, out, setting) for s in seeds for a in algorithms}
    steps = {c.training.steps for c in configs.values()}
    (out / "runs").mkdir(parents=True, exist_ok=True)
    gitignore = out / "runs" / ".gitignore"
    if not gitignore.exists():  # the per-run metrics are worth keeping in git; checkpoints are not
        gitignore.write_text("checkpoints/\ntensorboard/\n")
    total = len(configs)
    print(f"hacrl compare: {setting}: {len(algorithms)} algorithm(s) x {len(seeds)} seed(s) = {total} runs of "
          f"{'/'.join(map(str, sorted(steps)))} steps -> {out}", flush=True)
    statuses: dict[tuple[str, int], str] = {}
    for i, ((algorithm, seed), cfg) in enumerate(configs.items(), 1):
        label = f"[{i}/{total}] {algorithm} seed {seed}"
        status, done = run_status(cfg)
        if status == "finished":
            print(f"{label}: skipped (finished, {done} steps) {cfg.output_dir}", flush=True)
            statuses[(algorithm, seed)] = "skipped"
            continue
        verb = f"resuming from step {done}" if status == "resume" else "starting"
        print(f"{label}: {verb} -> {cfg.output_dir}", flush=True)
        attempt = execute_run(cfg)
        statuses[(algorithm, seed)] = "resumed" if status == "resume" else "ran"
        print(f"{label}: done in {attempt['wall_seconds']:.0f} s", flush=True)
    results = aggregate(out, algorithms, seeds, setting=setting, expected_steps=min(steps))
    for run in results["runs"]:
        run["status"] = statuses.get((run["algorithm"], run["seed"]), "skipped")
    results["config"] = str(config_path)
    results["overrides"] = list(overrides)
    results["command"] = command or _command(config_path, algorithms, seeds, out, overrides)
    results["date"] = _now()
    results["machine"] = machine_info()
    for warning in results["warnings"]:
        print(f"warning: {warning}", flush=True)
    paths = write_report(results, out)
    print(render_target_summary(results), flush=True)
    print("wrote:\n" + "\n".join(f"  {p}" for p in paths), flush=True)
    return results


def run_compare_command(args: Any) -> int:
    """Entry point of ``hacrl compare`` (args: config, algorithms, seeds, out, set)."""
    algorithms = parse_algorithms(args.algorithms or ",".join(DEFAULT_ALGORITHMS))
    seeds = parse_seeds(args.seeds or "0,1,2")
    overrides = list(getattr(args, "set", None) or [])
    out = Path(args.out) if args.out else Path("runs") / "compare" / _setting_name(load_base(args.config),
                                                                                     args.config)
    command = _command(args.config, algorithms, seeds, out, overrides)
    compare(args.config, algorithms, seeds, out, overrides, command=command)
    return 0


def _setting_name(base: dict[str, Any], config_path: str | Path) -> str:
    """The config's run_name when the user chose one, else the file's stem."""
    name = base.get("run_name")
    return str(name) if isinstance(name, str) and name and name != "hacrl" else Path(config_path).stem


def _command(config_path: str | Path, algorithms: Sequence[str], seeds: Sequence[int], out: Path,
             overrides: Sequence[str]) -> str:
    parts = ["hacrl", "compare", str(config_path), "--algorithms", ",".join(algorithms),
             "--seeds", ",".join(map(str, seeds)), "--out", str(out)]
    for item in overrides:
        parts += ["--set", item]
    return shlex.join(parts)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


def machine_info() -> dict[str, Any]:
    """Where the report was rendered and with which library versions (each run's own CPU is recorded per
    attempt, see `execute_run`: it decides the zoo weights, see `hacrl.machine`)."""
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


# ------------------------------------------------------------------------------------------ aggregation


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and *sample* standard deviation (ddof = 1, as usual for a few seeds); std is 0 for one seed."""
    if not values:
        return math.nan, math.nan
    mean = math.fsum(values) / len(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def _stats(values: Sequence[float]) -> dict[str, Any]:
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "per_seed": list(values)}


def _records(path: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """(evaluation records, training records) per agent, one per step (the last one wins), sorted by step."""
    by_key: dict[str, dict[tuple[str, int], dict[str, Any]]] = {"eval": {}, "train": {}}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn line can only be the last line of a killed run; finished runs have none
        if record.get("type") in by_key:
            by_key[record["type"]][(record["agent"], int(record["step"]))] = record
    grouped: list[dict[str, list[dict[str, Any]]]] = []
    for kind in ("eval", "train"):
        out: dict[str, list[dict[str, Any]]] = {}
        for (agent, _), record in sorted(by_key[kind].items(), key=lambda kv: (kv[0][0], kv[0][1])):
            out.setdefault(agent, []).append(record)
        grouped.append(out)
    return grouped[0], grouped[1]


def load_run(directory: Path) -> dict[str, Any]:
    """One finished run's numbers: summary.json, the eval curves and training records from metrics.jsonl,
    and compare's record."""
    summary_path, metrics_path = directory / "summary.json", directory / "metrics.jsonl"
    missing = [p.name for p in (summary_path, metrics_path) if not p.is_file()]
    if missing:
        raise ConfigError(f"{directory}: no {' or '.join(missing)}; the run has not finished (rerun compare)")
    record_path = directory / RUN_RECORD
    evals, train = _records(metrics_path)
    return {"summary": _read_json(summary_path), "evals": evals, "train": train,
            "record": _read_json(record_path) if record_path.is_file() else None}


def _curve(runs: list[dict[str, Any]], agent: str, kinds: list[str]) -> dict[str, Any]:
    """The evaluation curve of one agent under one algorithm: steps evaluated in every seed, the rollouts and
    wall time there (mean over seeds), accuracy mean/std/min/max and every seed's values."""
    per_seed = [{int(e["step"]): e for e in run["evals"].get(agent, [])} for run in runs]
    steps = sorted(set.intersection(*(set(p) for p in per_seed))) if per_seed else []
    curve: dict[str, Any] = {"step": steps, "rollouts": [], "wall_seconds": [], "accuracy_mean": [],
                             "accuracy_std": [], "accuracy_min": [], "accuracy_max": [],
                             "accuracy_per_seed": [[] for _ in runs], "wall_seconds_per_seed": [[] for _ in runs],
                             "kinds": {k: {"mean": [], "per_seed": [[] for _ in runs]} for k in kinds}}
    for step in steps:
        points = [p[step] for p in per_seed]
        accs = [float(p.get("accuracy") or 0.0) for p in points]
        mean, std = mean_std(accs)
        curve["rollouts"].append(math.fsum(float(p.get("rollouts_total") or 0.0) for p in points) / len(points))
        curve["wall_seconds"].append(math.fsum(float(p.get("wall_seconds") or 0.0) for p in points) / len(points))
        curve["accuracy_mean"].append(mean)
        curve["accuracy_std"].append(std)
        curve["accuracy_min"].append(min(accs))
        curve["accuracy_max"].append(max(accs))
        for i, p in enumerate(points):
            curve["accuracy_per_seed"][i].append(float(p.get("accuracy") or 0.0))
            curve["wall_seconds_per_seed"][i].append(float(p.get("wall_seconds") or 0.0))
        for k in kinds:
            values = [float(p.get(k) or 0.0) for p in points]
            curve["kinds"][k]["mean"].append(math.fsum(values) / len(values))
            for i, v in enumerate(values):
                curve["kinds"][k]["per_seed"][i].append(v)
    return curve


def aggregate(out: Path, algorithms: Sequence[str], seeds: Sequence[int], *, setting: str = "",
              expected_steps: int | None = None) -> dict[str, Any]:
    """Read every run of a comparison from ``out/runs`` and compute the numbers behind the table and plots.

    Final accuracy is the held-out evaluation after the last step (``summary.json`` "after"); the warm start is
    the step-0 evaluation ("before"), which must be the same for every run of the same agents (same weights,
    greedy decoding, same split): a difference is reported as a warning, never averaged away silently.
    Every run must have trained the same number of steps (`expected_steps`, or that of the first run).
    """
    out = Path(out)
    algorithms, seeds = list(algorithms), list(seeds)
    warnings: list[str] = []
    runs = {(a, s): load_run(run_dir(out, a, s)) for a in algorithms for s in seeds}
    first = runs[(algorithms[0], seeds[0])]["summary"]
    agents: list[str] = list(first["agents"])
    steps = expected_steps if expected_steps is not None else int(first["steps"])
    run_rows: list[dict[str, Any]] = []
    for (a, s), run in runs.items():
        summary = run["summary"]
        if list(summary["agents"]) != agents:
            raise ConfigError(f"{run_dir(out, a, s)}: agents {summary['agents']} differ from {agents} in "
                              f"{run_dir(out, algorithms[0], seeds[0])}; a comparison needs the same agents")
        if int(summary["steps"]) != steps or summary.get("stopped_early"):
            raise ConfigError(f"{run_dir(out, a, s)}: trained {summary['steps']} steps"
                              f"{' (stopped early)' if summary.get('stopped_early') else ''}, expected {steps}; "
                              "rerun compare to finish it (algorithms must be compared at equal steps)")
        attempts = (run["record"] or {}).get("attempts", [])
        run_rows.append({
            "algorithm": a, "seed": s, "output_dir": str(run_dir(out, a, s)), "steps": int(summary["steps"]),
            "train_wall_seconds": float(summary["wall_seconds"]),
            "wall_seconds": math.fsum(at["wall_seconds"] for at in attempts) if attempts else None,
            "attempts": len(attempts),
            "final": {n: summary["after"][n].get("accuracy") for n in agents},
        })
    # The report may be rendered on another machine than the one that trained: keep where each run trained.
    run_cpus = sorted({at["cpu_model"] for run in runs.values() for at in (run["record"] or {}).get("attempts", [])
                       if at.get("cpu_model")})
    eval_problems = next((at.get("eval_problems") for run in runs.values()
                          for at in (run["record"] or {}).get("attempts", []) if at.get("eval_problems")), None)

    agent_results: dict[str, Any] = {}
    for agent in agents:
        kind_sets = [set(run["summary"]["after"][agent]) - {"accuracy"} for run in runs.values()]
        kinds = sorted(set.intersection(*kind_sets)) if kind_sets else []
        warm_values = {key: float(run["summary"]["before"][agent]["accuracy"]) for key, run in runs.items()}
        if max(warm_values.values()) - min(warm_values.values()) > TOLERANCE:
            spread = ", ".join(f"{a}/seed{s}={v:.4f}" for (a, s), v in warm_values.items())
            warnings.append(f"agent {agent}: the step-0 (warm-start) accuracy differs between runs ({spread}); "
                            "the runs did not start from the same weights or evaluation split")
        warm_kinds = {k: math.fsum(float(r["summary"]["before"][agent].get(k) or 0.0) for r in runs.values())
                      / len(runs) for k in kinds}
        per_algo: dict[str, Any] = {}
        for a in algorithms:
            algo_runs = [runs[(a, s)] for s in seeds]
            afters = [r["summary"]["after"][agent] for r in algo_runs]
            totals = [r["summary"]["totals"][agent] for r in algo_runs]
            entry = _stats([float(x["accuracy"]) for x in afters])
            entry["rollouts"] = round(math.fsum(float(t["rollouts"]) for t in totals) / len(totals))
            entry["updates"] = round(math.fsum(float(t["updates"]) for t in totals) / len(totals))
            entry["generated_tokens"] = round(math.fsum(float(t.get("generated_tokens", 0)) for t in totals)
                                              / len(totals))
            entry["kinds"] = {k: _stats([float(x.get(k) or 0.0) for x in afters]) for k in kinds}
            entry["wall_seconds"] = _stats([float(r["summary"]["wall_seconds"]) for r in algo_runs])
            entry["curve"] = _curve(algo_runs, agent, kinds)
            entry["diagnostics"] = mean_over_runs([summarise_agent(r["train"].get(agent, [])) for r in algo_runs])
            per_algo[a] = entry
        agent_results[agent] = {"warm_start": math.fsum(warm_values.values()) / len(warm_values),
                                "warm_start_kinds": warm_kinds, "kinds": kinds, "algorithms": per_algo}

    results: dict[str, Any] = {
        "setting": setting or out.name,
        "algorithms": algorithms,
        "seeds": seeds,
        "steps": steps,
        "eval_problems": eval_problems,
        "run_cpus": run_cpus,
        "std": "sample standard deviation over seeds (ddof=1); 0 for a single seed",
        "agents": agent_results,
        "runs": run_rows,
        "warnings": warnings,
    }
    results["target_check"] = target_check(results)
    return results


# ------------------------------------------------------------------------------------------ target check


def rollouts_to_reach(rollouts: Sequence[float], accuracy: Sequence[float], target: float) -> tuple[
        float | None, float | None]:
    """(interpolated, first-eval-point) rollouts at which a curve first reaches `target`, or (None, None).

    The interpolated value is linear between the last eval point below the target and the first one at or
    above it; the first-eval-point value is what was actually measured (it depends on how often one evaluates).
    """
    for i, (x, y) in enumerate(zip(rollouts, accuracy, strict=True)):
        if y >= target - TOLERANCE:
            if i == 0:
                return float(x), float(x)
            x0, y0 = rollouts[i - 1], accuracy[i - 1]
            frac = (target - y0) / (y - y0) if y > y0 else 1.0
            return float(x0 + min(max(frac, 0.0), 1.0) * (x - x0)), float(x)
    return None, None


def _paired(ours: Sequence[float], theirs: Sequence[float]) -> dict[str, Any]:
    diffs = [a - b for a, b in zip(ours, theirs, strict=True)]
    return {"per_seed": diffs, **dict(zip(("mean", "std"), mean_std(diffs), strict=True))}


def target_check(results: dict[str, Any]) -> dict[str, Any]:
    """Per agent: HACPO mean > GSPO mean; HACPO mean >= GSPO x2 mean; and the rollouts at which HACPO's mean
    curve first reaches GSPO x2's final mean versus half of GSPO x2's rollouts. Misses are reported as such.

    The half-rollouts verdict uses the first *measured* eval point at or above the target (conservative); the
    interpolated crossing is reported beside it.
    """
    needed = ("hacpo", "gspo", "gspo_x2")
    missing = [a for a in needed if a not in results["algorithms"]]
    if missing:
        return {"available": False, "reason": f"needs {', '.join(needed)}; missing {', '.join(missing)}"}
    per_agent: dict[str, Any] = {}
    for agent, res in results["agents"].items():
        algos = res["algorithms"]
        h, g, x2 = algos["hacpo"], algos["gspo"], algos["gspo_x2"]
        target = x2["mean"]
        interpolated, measured = rollouts_to_reach(h["curve"]["rollouts"], h["curve"]["accuracy_mean"], target)
        half = x2["rollouts"] / 2
        check = {
            "hacpo_mean": h["mean"], "gspo_mean": g["mean"], "gspo_x2_mean": x2["mean"],
            "hacpo_gt_gspo": h["mean"] > g["mean"] + TOLERANCE,
            "margin_vs_gspo": h["mean"] - g["mean"],
            "hacpo_ge_gspo_x2": h["mean"] >= x2["mean"] - TOLERANCE,
            "margin_vs_gspo_x2": h["mean"] - x2["mean"],
            "target_accuracy": target,
            "hacpo_rollouts_to_target": measured,
            "hacpo_rollouts_to_target_interpolated": interpolated,
            "gspo_x2_rollouts": x2["rollouts"],
            "rollout_fraction": None if measured is None or not x2["rollouts"] else measured / x2["rollouts"],
            "half_rollouts_met": measured is not None and measured <= half + TOLERANCE,
            # GSPO x2 ended no better than the warm start: "reaching" its accuracy then costs nothing and says
            # nothing about HACPO; flagged so such a pass is never read as evidence.
            "target_at_or_below_warm_start": target <= res["warm_start"] + TOLERANCE,
            # Seeds share the prompt order across algorithms, so per-seed differences are paired: their spread
            # says whether a gap between means is larger than what reseeding alone produces.
            "paired_vs_gspo": _paired(h["per_seed"], g["per_seed"]),
            "paired_vs_gspo_x2": _paired(h["per_seed"], x2["per_seed"]),
        }
        check["all_met"] = bool(check["hacpo_gt_gspo"] and check["hacpo_ge_gspo_x2"] and check["half_rollouts_met"])
        per_agent[agent] = check
    return {"available": True, "all_met": all(c["all_met"] for c in per_agent.values()), "agents": per_agent}


# ------------------------------------------------------------------------------------------ report


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _best(means: Sequence[float]) -> str:
    """The best mean as printed, so that every mean that prints the same is bolded (ties shown as ties)."""
    finite = [m for m in means if m is not None and math.isfinite(m)]
    return _pct(max(finite)) if finite else ""


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def render_table(results: dict[str, Any]) -> str:
    """``table.md``: provenance, one Table-1-style table per agent, the target check and the run list."""
    algorithms: list[str] = results["algorithms"]
    seeds = results["seeds"]
    lines = [f"# hacrl compare: {results['setting']}", ""]
    if results.get("command"):
        lines += [f"Command: `{results['command']}`  ", ""]
    machine = results.get("machine") or {}
    if results.get("date") or machine:
        cpu = f"{machine['cpu_model']}, " if machine.get("cpu_model") else ""
        lines += [f"Date: {results.get('date', '?')}; machine: {machine.get('platform', '?')}, {cpu}"
                  f"{machine.get('cpu_count', '?')} CPUs, torch {machine.get('torch', '?')}"
                  + (f", transformers {machine['transformers']}" if machine.get("transformers") else "") + "  ", ""]
    if results.get("run_cpus"):
        lines += [f"Runs trained on: {'; '.join(results['run_cpus'])} (the date and machine above are the "
                  "report's; zoo warm starts, and so every accuracy, are bitwise-reproducible only on the same "
                  "kind of CPU)  ", ""]
    problems = f" ({results['eval_problems']} problems)" if results.get("eval_problems") else ""
    lines += [f"Final greedy accuracy (%) on the held-out split{problems} after {results['steps']} training steps "
              f"(equal for every algorithm), mean ± std over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}; "
              "sample std). Rollouts and updates are per agent (mean over seeds); wall is training seconds per "
              "run (all agents, evaluation excluded). **Bold**: best mean per accuracy column.", ""]
    if results.get("eval_problems"):
        lines += [evaluation_noise_note(results), ""]
    for warning in results.get("warnings", []):
        lines += [f"> warning: {warning}", ""]
    for agent, res in results["agents"].items():
        kinds: list[str] = res["kinds"]
        header = ["Method", "Accuracy", *kinds, "Rollouts", "Updates", "Wall (s)"]
        best_overall = _best([res["algorithms"][a]["mean"] for a in algorithms])
        best_kind = {k: _best([res["algorithms"][a]["kinds"][k]["mean"] for a in algorithms]) for k in kinds}

        def cell(stats: dict[str, Any], best: str) -> str:
            text = f"{_pct(stats['mean'])} ± {_pct(stats['std'])}"
            return f"**{text}**" if _pct(stats["mean"]) == best else text

        rows = [["Warm start", _pct(res["warm_start"]), *(_pct(res["warm_start_kinds"].get(k)) for k in kinds),
                 "0", "0", "-"]]
        for a in algorithms:
            e = res["algorithms"][a]
            rows.append([display_name(a), cell(e, best_overall),
                         *(cell(e["kinds"][k], best_kind[k]) for k in kinds),
                         str(e["rollouts"]), str(e["updates"]), f"{e['wall_seconds']['mean']:.0f}"])
        lines += [f"## Agent `{agent}`", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
        if all("diagnostics" in res["algorithms"][a] for a in algorithms):
            lines += [f"Training diagnostics of `{agent}` (mean over seeds of the per-step values in metrics.jsonl; "
                      "train reward is sampled at the training temperature on that step's fresh prompts):", ""]
            lines += diagnostics_table([(display_name(a), res["algorithms"][a]["diagnostics"]) for a in algorithms])
            lines.append("")
    lines += render_target_section(results)
    lines += ["## Runs", "", "| Algorithm | Seed | Steps | Status | Train wall (s) | Wall incl. eval (s) | "
              "Final accuracy (%) |", "|---|---:|---:|---|---:|---:|---|"]
    for run in results["runs"]:
        wall = "-" if run.get("wall_seconds") is None else f"{run['wall_seconds']:.0f}"
        finals = ", ".join(f"{n} {_pct(v)}" for n, v in run["final"].items())
        lines.append(f"| {display_name(run['algorithm'])} | {run['seed']} | {run['steps']} | "
                     f"{run.get('status', '-')} | {run['train_wall_seconds']:.0f} | {wall} | {finals} |")
    return "\n".join(lines) + "\n"


def evaluation_noise_note(results: dict[str, Any]) -> str:
    """One sentence on the two scales of noise, so a reader does not over-read a small gap: the seed-to-seed
    spread (the ± column, all runs scored on the same problems) and the binomial standard error that one
    evaluation of this split carries as an estimate of accuracy on unseen problems."""
    n = int(results["eval_problems"])
    errors = sorted(f"{100 * math.sqrt(max(r['warm_start'] * (1 - r['warm_start']), 0.0) / n):.1f}"
                    for r in results["agents"].values())
    spread = errors[0] if errors[0] == errors[-1] else f"{errors[0]}-{errors[-1]}"
    return (f"Noise: every run is scored on the same {n} problems, so ± is the seed-to-seed spread on this split; "
            f"as an estimate of accuracy on unseen problems, one evaluation also carries a binomial standard error "
            f"of about {spread} points at the warm-start accuracies (per-kind columns, on fewer problems, more).")


def render_target_section(results: dict[str, Any]) -> list[str]:
    check = results["target_check"]
    lines = ["## Target check", ""]
    if not check.get("available"):
        return [*lines, f"Not available for this comparison: {check['reason']}.", ""]
    lines += ["Target: for every agent, HACPO's mean final accuracy > GSPO's and >= GSPO x2's (equal training "
              "steps), and HACPO's mean curve reaches GSPO x2's final mean accuracy with at most half of GSPO "
              "x2's rollouts (first evaluation point at or above it; interpolated crossing in brackets).", "",
              "| Agent | HACPO | GSPO | HACPO > GSPO | GSPO x2 | HACPO >= GSPO x2 | HACPO rollouts to reach GSPO x2 "
              "final | GSPO x2 rollouts | <= half | all met |",
              "|---|---:|---:|---|---:|---|---:|---:|---|---|"]
    for agent, c in check["agents"].items():
        reach = ("never" if c["hacpo_rollouts_to_target"] is None else
                 f"{c['hacpo_rollouts_to_target']:.0f} ({c['hacpo_rollouts_to_target_interpolated']:.0f})")
        if c["target_at_or_below_warm_start"]:
            reach += " (GSPO x2 ended at or below the warm start)"
        lines.append(f"| {agent} | {_pct(c['hacpo_mean'])} | {_pct(c['gspo_mean'])} | {_yes(c['hacpo_gt_gspo'])} | "
                     f"{_pct(c['gspo_x2_mean'])} | {_yes(c['hacpo_ge_gspo_x2'])} | {reach} | "
                     f"{c['gspo_x2_rollouts']} | {_yes(c['half_rollouts_met'])} | {_yes(c['all_met'])} |")
    lines += ["", "Per-seed differences (same seed = same prompt order), in points, mean ± std:", ""]
    for agent, c in check["agents"].items():
        parts = []
        for label, key in (("HACPO - GSPO", "paired_vs_gspo"), ("HACPO - GSPO x2", "paired_vs_gspo_x2")):
            d = c[key]
            seeds = ", ".join(f"{100 * v:+.1f}" for v in d["per_seed"])
            parts.append(f"{label} {seeds} ({100 * d['mean']:+.1f} ± {100 * d['std']:.1f})")
        lines.append(f"* `{agent}`: " + "; ".join(parts))
    misses = [agent for agent, c in check["agents"].items() if not c["all_met"]]
    lines += ["", "Overall: met for every agent." if check["all_met"] else
              f"Overall: **not met** (missed for {', '.join(f'`{m}`' for m in misses)}).", ""]
    return lines


def render_target_summary(results: dict[str, Any]) -> str:
    """A few console lines: the target verdict per agent."""
    check = results["target_check"]
    if not check.get("available"):
        return f"target check: not available ({check['reason']})"
    parts = []
    for agent, c in check["agents"].items():
        parts.append(f"  {agent}: HACPO {_pct(c['hacpo_mean'])} vs GSPO {_pct(c['gspo_mean'])} "
                     f"({'>' if c['hacpo_gt_gspo'] else 'NOT >'}), vs GSPO x2 {_pct(c['gspo_x2_mean'])} "
                     f"({'>=' if c['hacpo_ge_gspo_x2'] else 'NOT >='}); half rollouts: "
                     f"{'met' if c['half_rollouts_met'] else 'NOT met'}")
    return "target check: " + ("met" if check["all_met"] else "NOT met") + "\n" + "\n".join(parts)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


_COLOR_INDEX = {"gspo": 0, "gspo_x2": 1, "grpo": 2, "hacpo": 3, "hacpo-no-adv": 4, "hacpo-no-omega": 5,
                "hacpo-alpha0": 6, "naive": 7, "hacpo-no-stepwise": 8, "hacpo-no-clip": 9}


def _colors(algorithms: Iterable[str]) -> dict[str, Any]:
    """One fixed tab10 colour per preset, so plots of different settings (and the ablations) agree."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {a: cmap(_COLOR_INDEX.get(a, 9)) for a in algorithms}


def _draw_agent(axes: Sequence[Any], agent: str, res: dict[str, Any], algorithms: Sequence[str],
                colors: dict[str, Any], n_seeds: int) -> None:
    ax_r, ax_w = axes
    for a in algorithms:
        curve = res["algorithms"][a]["curve"]
        if not curve["step"]:
            continue
        y, lo, hi = ([100 * v for v in curve[key]] for key in ("accuracy_mean", "accuracy_min", "accuracy_max"))
        for ax, x in ((ax_r, curve["rollouts"]), (ax_w, curve["wall_seconds"])):
            ax.plot(x, y, marker="o", markersize=3, color=colors[a], label=display_name(a),
                    linewidth=2.2 if a == "hacpo" else 1.5, zorder=3 if a == "hacpo" else 2)  # HACPO on top
            if n_seeds > 1:
                ax.fill_between(x, lo, hi, color=colors[a], alpha=0.15, linewidth=0)
    if "gspo_x2" in res["algorithms"]:
        ax_r.axhline(100 * res["algorithms"]["gspo_x2"]["mean"], color="grey", linestyle=":", linewidth=1,
                     label="GSPO x2 final (target)")
    band = f"mean, band = min-max over {n_seeds} seeds" if n_seeds > 1 else "1 seed"
    ax_r.set_title(f"{agent}: accuracy vs rollouts ({band})", fontsize=10)
    ax_w.set_title(f"{agent}: accuracy vs wall time", fontsize=10)
    ax_r.set_xlabel("rollouts consumed by this agent")
    ax_w.set_xlabel("training wall time of the run (s)")
    for ax in (ax_r, ax_w):
        ax.set_ylabel("held-out greedy accuracy (%)")
        ax.grid(alpha=0.3)
    ax_r.legend(fontsize=8, loc="best")


def plot_curves(results: dict[str, Any], out: Path) -> list[Path]:
    """``curves.png`` (one row of panels per agent: accuracy vs rollouts, vs wall time) and one
    ``curves_<agent>.png`` per agent, like the paper's Figure 3."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algorithms = results["algorithms"]
    colors = _colors(algorithms)
    agents = list(results["agents"])
    n_seeds = len(results["seeds"])
    paths = []
    fig, axes = plt.subplots(len(agents), 2, figsize=(12, 3.8 * len(agents)), squeeze=False)
    for row, agent in enumerate(agents):
        _draw_agent(axes[row], agent, results["agents"][agent], algorithms, colors, n_seeds)
    fig.suptitle(f"{results['setting']}: held-out accuracy during training", fontsize=12)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    for agent in agents:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4), squeeze=False)
        _draw_agent(axes[0], agent, results["agents"][agent], algorithms, colors, n_seeds)
        fig.tight_layout()
        path = out / f"curves_{_slug(agent)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(results: dict[str, Any], out: Path) -> list[Path]:
    """Write results.json, table.md and the curve PNGs into `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results_path.write_text(json.dumps(_json_safe(results), indent=1))
    table_path = out / "table.md"
    table_path.write_text(render_table(results))
    return [results_path, table_path, *plot_curves(results, out)]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
