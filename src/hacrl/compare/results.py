"""The numbers of a comparison, typed: read every run of ``OUT/runs`` and aggregate over seeds.

Per agent and algorithm: final held-out accuracy (mean ± sample std over seeds, overall and per problem kind), the
evaluation curve (accuracy against rollouts and wall time), the training diagnostics, and the accounting of
docs/method.md §5: rollouts the agent generated, responses it trained on, optimizer updates, generated tokens, the
compute it used (its own sampling + training seconds) and the compute it is charged (for a co-trained agent the
whole joint run's, GRAFT's conservative rule; for an independent or stored-peer run its own). Each collaborative rule
is paired by seed with the independent baselines at equal cost (same G) and at equal data (n x G responses).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hacrl.algorithms.presets import get_preset
from hacrl.compare.runs import RUN_RECORD, is_independent, read_json, run_dir, stored_rule
from hacrl.config import ConfigError
from hacrl.run_diagnostics import mean_over_runs, summarise_agent

TOLERANCE = 1e-9
"""Means are compared with this slack so float noise in an average never decides a target either way."""


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and *sample* standard deviation (ddof = 1, as usual for a few seeds); std is 0 for one seed."""
    if not values:
        return math.nan, math.nan
    mean = math.fsum(values) / len(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


@dataclass
class Stats:
    mean: float
    std: float
    per_seed: list[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        mean, std = mean_std(values)
        return cls(mean, std, list(values))


@dataclass
class Paired:
    """Per-seed differences `ours - theirs` (same seed = same prompt order) and their mean and sample std."""

    against: str
    per_seed: list[float]
    mean: float
    std: float

    @classmethod
    def of(cls, against: str, ours: Sequence[float], theirs: Sequence[float]) -> Paired:
        diffs = [a - b for a, b in zip(ours, theirs, strict=True)]
        mean, std = mean_std(diffs)
        return cls(against, diffs, mean, std)


@dataclass
class AlgorithmResult:
    """One agent under one algorithm, over seeds (accounting numbers are means over seeds)."""

    accuracy: Stats
    kinds: dict[str, Stats]
    rollouts: int
    trained_rows: int
    updates: int
    generated_tokens: int
    compute_seconds: float
    charged_seconds: float
    wall_seconds: Stats
    curve: dict[str, Any]
    diagnostics: dict[str, float | None]
    vs_equal_cost: Paired | None = None
    vs_equal_data: Paired | None = None

    @property
    def mean(self) -> float:
        return self.accuracy.mean

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out |= out.pop("accuracy")  # mean / std / per_seed at the top, as every results.json had them
        return out


@dataclass
class AgentResult:
    warm_start: float
    warm_start_kinds: dict[str, float]
    kinds: list[str]
    algorithms: dict[str, AlgorithmResult]

    def as_json(self) -> dict[str, Any]:
        return {"warm_start": self.warm_start, "warm_start_kinds": self.warm_start_kinds, "kinds": self.kinds,
                "algorithms": {a: r.as_json() for a, r in self.algorithms.items()}}


@dataclass
class Results:
    setting: str
    algorithms: list[str]
    seeds: list[int]
    steps: int
    eval_problems: int | None
    run_cpus: list[str]
    agents: dict[str, AgentResult]
    runs: list[dict[str, Any]]
    warnings: list[str]
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "setting": self.setting, "algorithms": self.algorithms, "seeds": self.seeds, "steps": self.steps,
            "eval_problems": self.eval_problems, "run_cpus": self.run_cpus,
            "std": "sample standard deviation over seeds (ddof=1); 0 for a single seed",
            "agents": {n: a.as_json() for n, a in self.agents.items()}, "runs": self.runs,
            "warnings": self.warnings, **self.provenance,
        }
        out |= self.targets
        return _json_safe(out)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------ reading runs


def _read_text(path: Path) -> str:
    """A metrics file as text; committed results keep it gzip-compressed (`metrics.jsonl.gz`)."""
    if path.suffix == ".gz":
        import gzip

        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return fh.read()
    return path.read_text()


def _records(path: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """(evaluation records, training records) per agent, one per step (the last one wins), sorted by step."""
    import json

    by_key: dict[str, dict[tuple[str, int], dict[str, Any]]] = {"eval": {}, "train": {}}
    for line in _read_text(path).splitlines():
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
    """One finished run's numbers: summary.json, the eval curves and training records, and compare's record."""
    summary_path, metrics_path = directory / "summary.json", directory / "metrics.jsonl"
    if not metrics_path.is_file() and metrics_path.with_suffix(".jsonl.gz").is_file():
        metrics_path = metrics_path.with_suffix(".jsonl.gz")
    missing = [p.name for p in (summary_path, metrics_path) if not p.is_file()]
    if missing:
        raise ConfigError(f"{directory}: no {' or '.join(missing)}; the run has not finished (rerun compare)")
    record_path, config_path = directory / RUN_RECORD, directory / "config.yaml"
    evals, train = _records(metrics_path)
    return {"summary": read_json(summary_path), "evals": evals, "train": train,
            "record": read_json(record_path) if record_path.is_file() else None,
            "config": (yaml.safe_load(config_path.read_text()) or {}) if config_path.is_file() else {}}


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


def _own_seconds(totals: dict[str, Any]) -> float:
    return float(totals.get("sample_seconds", 0.0)) + float(totals.get("train_seconds", 0.0))


def _run_of(runs: dict[tuple[str, int, str | None], dict[str, Any]], algorithm: str, seed: int,
            agent: str) -> dict[str, Any]:
    """The run holding `agent`'s result: the joint run, or the agent's own run for a stored-peer arm."""
    return runs[(algorithm, seed, agent if stored_rule(algorithm) else None)]


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def aggregate(out: Path, algorithms: Sequence[str], seeds: Sequence[int], *, setting: str = "",
              expected_steps: int | None = None) -> Results:
    """Read every run of a comparison from ``out/runs`` and compute the numbers behind the table and plots.

    Final accuracy is the held-out evaluation after the last step (``summary.json`` "after"); the warm start is
    the step-0 evaluation ("before"), which must be the same for every run of the same agents (same weights,
    greedy decoding, same split): a difference is reported as a warning, never averaged away silently.
    Every run must have trained the same number of steps (`expected_steps`, or that of the first run).
    """
    out = Path(out)
    algorithms, seeds = list(algorithms), list(seeds)
    joint = [a for a in algorithms if stored_rule(a) is None]
    if not joint:
        raise ConfigError("a comparison needs at least one algorithm besides stored-peer arms")
    first = load_run(run_dir(out, joint[0], seeds[0]))
    agents: list[str] = list(first["summary"]["agents"])
    runs: dict[tuple[str, int, str | None], dict[str, Any]] = {}
    for a in algorithms:
        for s in seeds:
            for agent in (agents if stored_rule(a) else [None]):
                runs[(a, s, agent)] = load_run(run_dir(out, a, s, agent))
    steps = expected_steps if expected_steps is not None else int(first["summary"]["steps"])
    warnings: list[str] = []
    run_rows = []
    for (a, s, agent), run in runs.items():
        summary = run["summary"]
        where = run_dir(out, a, s, agent)
        expected_agents = [agent] if agent else agents
        if list(summary["agents"]) != expected_agents:
            raise ConfigError(f"{where}: agents {summary['agents']} differ from {expected_agents}; a comparison needs "
                              "the same agents")
        if int(summary["steps"]) != steps or summary.get("stopped_early"):
            raise ConfigError(f"{where}: trained {summary['steps']} steps"
                              f"{' (stopped early)' if summary.get('stopped_early') else ''}, expected {steps}; "
                              "rerun compare to finish it (algorithms must be compared at equal steps)")
        attempts = (run["record"] or {}).get("attempts", [])
        run_rows.append({
            "algorithm": a, "seed": s, "agent": agent, "output_dir": str(where), "steps": int(summary["steps"]),
            "train_wall_seconds": float(summary["wall_seconds"]),
            "wall_seconds": math.fsum(at["wall_seconds"] for at in attempts) if attempts else None,
            "attempts": len(attempts), "final": {n: summary["after"][n].get("accuracy") for n in summary["agents"]},
        })
    attempts_all = [at for run in runs.values() for at in (run["record"] or {}).get("attempts", [])]
    run_cpus = sorted({at["cpu_model"] for at in attempts_all if at.get("cpu_model")})
    eval_problems = next((at.get("eval_problems") for at in attempts_all if at.get("eval_problems")), None)

    agent_results: dict[str, AgentResult] = {}
    for agent in agents:
        holders = {(a, s): _run_of(runs, a, s, agent) for a in algorithms for s in seeds}
        kind_sets = [set(r["summary"]["after"][agent]) - {"accuracy"} for r in holders.values()]
        kinds = sorted(set.intersection(*kind_sets)) if kind_sets else []
        warm = {key: float(r["summary"]["before"][agent]["accuracy"]) for key, r in holders.items()}
        if max(warm.values()) - min(warm.values()) > TOLERANCE:
            spread = ", ".join(f"{a}/seed{s}={v:.4f}" for (a, s), v in warm.items())
            warnings.append(f"agent {agent}: the step-0 (warm-start) accuracy differs between runs ({spread}); "
                            "the runs did not start from the same weights or evaluation split")
        per_algo = {a: _algorithm_result([holders[(a, s)] for s in seeds], agent, kinds, co_trained=not (
            is_independent(a) or stored_rule(a))) for a in algorithms}
        _pair_with_baselines(per_algo, n_agents=len(agents), g=_group_size(first["config"], agent))
        agent_results[agent] = AgentResult(
            warm_start=_mean(list(warm.values())),
            warm_start_kinds={k: _mean([float(r["summary"]["before"][agent].get(k) or 0.0) for r in holders.values()])
                              for k in kinds},
            kinds=kinds, algorithms=per_algo)
    return Results(setting=setting or out.name, algorithms=algorithms, seeds=seeds, steps=steps,
                   eval_problems=eval_problems, run_cpus=run_cpus, agents=agent_results, runs=run_rows,
                   warnings=warnings)


def _group_size(config: dict[str, Any], agent: str) -> int | None:
    """The G an agent samples per prompt in the base configuration (None when the run saved no config)."""
    for a in config.get("agents") or []:
        if isinstance(a, dict) and a.get("name") == agent and a.get("num_generations"):
            return int(a["num_generations"])
    g = (config.get("training") or {}).get("num_generations")
    return int(g) if g else None


def _algorithm_result(runs: list[dict[str, Any]], agent: str, kinds: list[str], *, co_trained: bool) -> AlgorithmResult:
    afters = [r["summary"]["after"][agent] for r in runs]
    totals = [r["summary"]["totals"][agent] for r in runs]
    own = [_own_seconds(t) for t in totals]
    joint = [math.fsum(_own_seconds(t) for t in r["summary"]["totals"].values()) for r in runs]
    return AlgorithmResult(
        accuracy=Stats.of([float(x["accuracy"]) for x in afters]),
        kinds={k: Stats.of([float(x.get(k) or 0.0) for x in afters]) for k in kinds},
        rollouts=round(_mean([float(t["rollouts"]) for t in totals])),
        trained_rows=round(_mean([float(t.get("trained_rows", 0)) for t in totals])),
        updates=round(_mean([float(t["updates"]) for t in totals])),
        generated_tokens=round(_mean([float(t.get("generated_tokens", 0)) for t in totals])),
        compute_seconds=_mean(own), charged_seconds=_mean(joint if co_trained else own),
        wall_seconds=Stats.of([float(r["summary"]["wall_seconds"]) for r in runs]),
        curve=_curve(runs, agent, kinds),
        diagnostics=mean_over_runs([summarise_agent(r["train"].get(agent, [])) for r in runs]),
    )


def baselines_of(algorithm: str, independents: Sequence[str], n_agents: int, g: int | None) -> tuple[
        str | None, str | None]:
    """(equal-cost, equal-data) independent baselines of a collaborative rule among those that were run.

    Equal cost: the rule's own family at G (`grpo` for GRAFT and SGT, `gspo` for HACPO and Naive), else the other.
    Equal data: that family with n x G responses per prompt (`grpo_n16` for two agents at G = 8; for GSPO also the
    HACPO paper's `gspo_x2` when n = 2), else any independent run at a larger budget.
    """
    family = get_preset(stored_rule(algorithm) or algorithm).baseline
    other = "gspo" if family == "grpo" else "grpo"
    cost = next((b for b in (family, other) if b in independents), None)
    big = [b for b in independents if get_preset(b).num_generations or get_preset(b).rollout_multiplier > 1]
    wanted = [f"{family}_n{n_agents * g}"] if g else []
    wanted += [b for b in big if b.startswith(family)]
    if family == "gspo" and n_agents == 2:
        wanted.append("gspo_x2")
    data = next((b for b in wanted if b in independents), big[0] if big else None)
    return cost, data


def _pair_with_baselines(per_algo: dict[str, AlgorithmResult], *, n_agents: int, g: int | None) -> None:
    independents = [a for a in per_algo if is_independent(a)]
    for a, result in per_algo.items():
        if is_independent(a):
            continue
        cost, data = baselines_of(a, independents, n_agents, g)
        if cost is not None:
            result.vs_equal_cost = Paired.of(cost, result.accuracy.per_seed, per_algo[cost].accuracy.per_seed)
        if data is not None:
            result.vs_equal_data = Paired.of(data, result.accuracy.per_seed, per_algo[data].accuracy.per_seed)
