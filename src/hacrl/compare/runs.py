"""Which runs a comparison needs, their configurations, and running them (resumable, refusing mixed settings).

Every (algorithm, seed) is an ordinary `Trainer` run in ``OUT/runs/<algorithm>/seed<seed>``: the base YAML plus the
user's overrides with only ``algorithm.name``, ``seed``, ``output_dir`` and ``run_name`` changed, so the prompt order
(seeded by ``seed``) and the held-out split (fixed by the task) are the same for every algorithm of a seed. A
stored-peer arm (``graft-stored``: GRAFT learning from the partners' recorded independent GRPO run, no co-training)
is one run per agent, ``OUT/runs/graft-stored/seed<seed>/<agent>``, with that agent live and the others replayed
from ``OUT/runs/grpo/seed<seed>`` (which then records its rollouts). A finished run is skipped, an interrupted one
continues from its latest checkpoint, and a run directory written by a different configuration is refused.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hacrl.algorithms.presets import PRESETS, get_preset, is_known
from hacrl.config import ConfigError, RunConfig, apply_overrides, config_from_dict, read_yaml_mapping
from hacrl.machine import cpu_model

RUN_RECORD = "compare_run.json"
"""Per-run file written by `compare`: one entry per attempt (fresh start or resume) with its wall time."""
STORED_SUFFIX = "-stored"
"""`graft-stored`: the rule `graft`, learning from the partners' recorded `grpo` runs instead of co-training."""

# Config fields that may differ between attempts of the same run without changing what it computes.
_IGNORED_FIELDS = ("output_dir", "run_name", "logging", "checkpoint", "executor", "ray_address", "threads",
                   "training.steps")
_IGNORED_AGENT_FIELDS = ("threads",)


@dataclass(frozen=True)
class RunSpec:
    """One training run of a comparison: an algorithm, a seed and, for a stored-peer arm, its live agent."""

    algorithm: str
    seed: int
    agent: str | None = None

    @property
    def label(self) -> str:
        return f"{self.algorithm} seed {self.seed}" + (f" ({self.agent})" if self.agent else "")


def stored_rule(algorithm: str) -> str | None:
    """`graft` for `graft-stored`; None for an ordinary algorithm."""
    return algorithm[: -len(STORED_SUFFIX)] if algorithm.endswith(STORED_SUFFIX) else None


def is_independent(algorithm: str) -> bool:
    return stored_rule(algorithm) is None and not get_preset(algorithm).shares_rollouts


def _order_key(algorithm: str) -> tuple[int, int, int, str]:
    """Canonical order: independent baselines (by budget), then rules in PRESETS order, then stored arms."""
    names = list(PRESETS)
    rule = stored_rule(algorithm)
    if rule is not None:
        return 2, names.index(rule) if rule in names else len(names), 0, algorithm
    preset = get_preset(algorithm)
    if not preset.shares_rollouts:
        budget = preset.num_generations or 0
        base = algorithm.split("_n")[0] if preset.num_generations else algorithm
        return 0, names.index(base) if base in names else len(names), budget, algorithm
    return 1, names.index(algorithm), 0, algorithm


def parse_algorithms(value: str | Sequence[str]) -> list[str]:
    """Algorithm names from ``"hacpo,gspo"`` (or a list) in a canonical order: independent baselines (smaller budget
    first), then the collaborative rules, then stored-peer arms. Unknown names raise a ConfigError."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = list(dict.fromkeys(n.strip() for n in items if n.strip()))
    valid = f"{', '.join(PRESETS)}, grpo_nK / gspo_nK, or RULE-stored (e.g. graft-stored)"
    if not names:
        raise ConfigError(f"--algorithms: name at least one algorithm (valid: {valid})")
    unknown = []
    for n in names:
        rule = stored_rule(n)
        ok = is_known(n) if rule is None else (rule in PRESETS and PRESETS[rule].shares_rollouts
                                                and PRESETS[rule].advantage != "capability")
        if not ok:
            unknown.append(n)
    if unknown:
        raise ConfigError(f"--algorithms: unknown algorithm(s) {', '.join(map(repr, unknown))}; valid names: {valid}")
    return sorted(names, key=_order_key)


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


def default_algorithms(base: dict[str, Any]) -> list[str]:
    """Every rule beside both independent baselines: GRPO at G (equal cost) and at n x G (equal data), Naive,
    HACPO, GRAFT, SGT and stored-peer GRAFT."""
    n = len(base.get("agents") or [])
    g = int((base.get("training") or {}).get("num_generations", 8))
    return parse_algorithms(["grpo", f"grpo_n{max(n, 2) * g}", "naive", "hacpo", "graft", "sgt", "graft-stored"])


def run_dir(out: Path, algorithm: str, seed: int, agent: str | None = None) -> Path:
    """Where one run lives inside a compare output directory."""
    path = Path(out) / "runs" / algorithm / f"seed{seed}"
    return path / agent if agent else path


def run_specs(algorithms: Sequence[str], seeds: Sequence[int], agents: Sequence[str]) -> list[RunSpec]:
    """Every run, seed by seed; a stored arm after the `grpo` run it replays."""
    specs = []
    for s in seeds:
        for a in algorithms:
            if stored_rule(a) is None:
                specs.append(RunSpec(a, s))
        for a in algorithms:
            if stored_rule(a) is not None:
                specs += [RunSpec(a, s, agent) for agent in agents]
    return specs


def load_base(config_path: str | Path) -> dict[str, Any]:
    """The base YAML as a dict (validated per run later, once algorithm and seed are set)."""
    return read_yaml_mapping(config_path)


def build_run_config(base: dict[str, Any], overrides: Sequence[str], algorithm: str, seed: int, out: Path,
                     setting: str = "", *, agent: str | None = None, record: bool = False) -> RunConfig:
    """The configuration of one run: the base plus user overrides, then the fields compare owns (algorithm, seed,
    output directory; a stored arm's live agent and replayed peers; `record` makes the run record its rollouts).
    Everything else is identical across the runs of a comparison."""
    data = apply_overrides(copy.deepcopy(base), list(overrides))
    algo_section = data.get("algorithm")
    if algo_section is None:
        algo_section = data["algorithm"] = {}
    if not isinstance(algo_section, dict):
        raise ConfigError(f"algorithm: expected a mapping of fields, got {algo_section!r}")
    rule = stored_rule(algorithm)
    algo_section["name"] = rule or algorithm
    data["seed"] = seed
    data["output_dir"] = str(run_dir(out, algorithm, seed, agent))
    data["run_name"] = f"{setting or data.get('run_name', 'hacrl')}-{algorithm}-seed{seed}" + (
        f"-{agent}" if agent else "")
    if rule is not None:
        agents = list(data.get("agents") or [])
        live = [a for a in agents if isinstance(a, dict) and a.get("name") == agent]
        if not live:
            raise ConfigError(f"{algorithm}: no agent named {agent!r} in the config")
        data["agents"] = live
        data["replay"] = [{"name": a["name"], "path": str(run_dir(out, "grpo", seed)), "agent": a["name"]}
                          for a in agents if a.get("name") != agent]
    if record:
        data.setdefault("logging", {})["record_rollouts"] = True
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


def read_json(path: Path) -> Any:
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
        summary = read_json(summary_path)
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
    record = read_json(path) if path.is_file() else {"attempts": []}
    record["attempts"].append(attempt)
    path.write_text(json.dumps(record, indent=1))


def now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


def execute_run(cfg: RunConfig) -> dict[str, Any]:
    """Train one run to `training.steps` (resuming from its latest checkpoint if there is one) and record the
    attempt's wall time; a run stopped by a signal raises KeyboardInterrupt so the comparison stops too."""
    from hacrl.trainer import Trainer

    start = time.perf_counter()
    started = now()
    trainer = Trainer(cfg, resume="auto")  # resume if there is a checkpoint, else start (run_status checked the dir)
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


def setting_name(base: dict[str, Any], config_path: str | Path) -> str:
    """The config's run_name when the user chose one, else the file's stem."""
    name = base.get("run_name")
    return str(name) if isinstance(name, str) and name and name != "hacrl" else Path(config_path).stem


def command_line(config_path: str | Path, algorithms: Sequence[str], seeds: Sequence[int], out: Path,
                 overrides: Sequence[str], jobs: int = 1) -> str:
    parts = ["hacrl", "compare", str(config_path), "--algorithms", ",".join(algorithms),
             "--seeds", ",".join(map(str, seeds)), "--out", str(out)]
    if jobs > 1:
        parts += ["--jobs", str(jobs)]
    for item in overrides:
        parts += ["--set", item]
    return shlex.join(parts)
