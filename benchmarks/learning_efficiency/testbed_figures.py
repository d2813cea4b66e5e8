"""The testbed figures of a comparison: can the built-in setting separate the sharing rules at all?

Read from a finished `hacrl compare` output directory (no training here), per agent:

* **RL headroom**: independent GRPO's final held-out accuracy minus the warm start (target: >= 8 points);
* **budget sensitivity**: GRPO with n x G responses per prompt minus GRPO with G, paired by seed, against the seed
  spread (target: the mean difference exceeds the larger of the two arms' standard deviations over seeds, for most
  agents; if more rollouts do not help, no rule can show rollout efficiency);
* **complementarity and sparse signal**, from the independent GRPO run's recorded rollouts over its first steps
  (the same prompts and agents every rule starts from): how often an agent's group is all-fail, and for each ordered
  pair (receiver, source) the share of the receiver's all-fail prompts that the source solves at least once;
* **cost**: the summed wall time of every run and the elapsed time while any of them was going (target: all rules x
  3 seeds in at most about 45 minutes elapsed, two runs at a time).

    python benchmarks/learning_efficiency/testbed_figures.py docs/results/testbed-state [more dirs] [--first-steps 10]
        [--json out.json] [--markdown out.md]

The rollout records (``runs/grpo/seed*/rollouts``) are not committed (see the comparison's ``runs/.gitignore``), so
the complementarity figures are computed where the runs were trained and kept in the JSON this script writes.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from hacrl.compare.results import Paired

HEADROOM_TARGET = 8.0
"""Points of held-out accuracy independent GRPO must add to every agent's warm start."""
COST_TARGET_MINUTES = 45.0


def _budget_arm(results: dict[str, Any]) -> str | None:
    """The equal-data independent baseline of the comparison (``grpo_n8`` for two agents at G = 4)."""
    return next((a for a in results["algorithms"] if a.startswith("grpo_n")), None)


def headroom_and_budget(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per agent: warm start, GRPO and GRPO n x G final accuracy (points), the gain and the paired budget effect."""
    big = _budget_arm(results)
    out: dict[str, dict[str, Any]] = {}
    for agent, a in results["agents"].items():
        grpo = a["algorithms"]["grpo"]
        row: dict[str, Any] = {"warm_start": 100 * a["warm_start"], "grpo_mean": 100 * grpo["mean"],
                               "grpo_std": 100 * grpo["std"]}
        row["headroom"] = row["grpo_mean"] - row["warm_start"]
        row["headroom_met"] = row["headroom"] >= HEADROOM_TARGET
        if big is not None:
            nb = a["algorithms"][big]
            gain = Paired.of(big, nb["per_seed"], grpo["per_seed"])
            mean, std = 100 * gain.mean, 100 * gain.std
            spread = max(100 * nb["std"], 100 * grpo["std"])
            row |= {"budget_arm": big, "budget_mean": 100 * nb["mean"], "budget_std": 100 * nb["std"],
                    "budget_gain": mean, "budget_gain_std": std, "seed_spread": spread,
                    "budget_met": mean > spread}
        out[agent] = row
    return out


def _read_rollouts(run: Path, first_steps: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for step in range(1, first_steps + 1):
        path = run / "rollouts" / f"step-{step:06d}.jsonl.gz"
        if not path.is_file():
            break
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    return rows


def complementarity(out: Path, seeds: list[int], first_steps: int, max_reward: float = 1.0) -> dict[str, Any] | None:
    """All-fail rates and the partner-solves share per direction, over the first steps of every seed's GRPO run."""
    groups: dict[tuple[int, int, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    kinds: dict[tuple[int, int, str], str] = {}
    for seed in seeds:
        for r in _read_rollouts(out / "runs" / "grpo" / f"seed{seed}", first_steps):
            key = (seed, int(r["step"]), r["problem_id"])
            groups[key][r["source"]].append(float(r["reward"]))
            kinds[key] = r.get("kind", "")
    if not groups:
        return None
    agents = sorted({a for g in groups.values() for a in g})
    solved = {key: {a: any(v >= max_reward for v in g[a]) for a in agents} for key, g in groups.items()}
    all_fail = {a: sum(not s[a] for s in solved.values()) / len(solved) for a in agents}
    mixed = {a: sum(any(v >= max_reward for v in g[a]) and not all(v >= max_reward for v in g[a])
                    for g in groups.values()) / len(groups) for a in agents}
    directions = {}
    for r in agents:
        failed = [key for key, s in solved.items() if not s[r]]
        for s in agents:
            if s == r:
                continue
            share = sum(solved[key][s] for key in failed) / len(failed) if failed else None
            by_kind = {}
            for kind in sorted(set(kinds.values())):
                fk = [key for key in failed if kinds[key] == kind]
                by_kind[kind] = {"all_fail_prompts": len(fk),
                                 "partner_solves": sum(solved[key][s] for key in fk) / len(fk) if fk else None}
            directions[f"{s} -> {r}"] = {"receiver_all_fail_prompts": len(failed), "partner_solves": share,
                                         "by_kind": by_kind}
    return {"first_steps": first_steps, "prompts": len(groups), "all_fail": all_fail, "mixed": mixed,
            "directions": directions}


def cost(out: Path) -> dict[str, Any]:
    """Summed wall time of every attempt of every run, and the elapsed time while any run was going: the length of
    the union of the attempts' [start, end] intervals (equal to last end - first start for one uninterrupted
    `compare`, and free of the idle time between separate invocations)."""
    spans, total = [], 0.0
    for record in (out / "runs").glob("**/compare_run.json"):
        for at in json.loads(record.read_text()).get("attempts", []):
            begin = datetime.datetime.fromisoformat(at["started"]).timestamp()
            spans.append((begin, begin + float(at["wall_seconds"])))
            total += float(at["wall_seconds"])
    if not spans:
        return {"runs_minutes": None, "elapsed_minutes": None}
    elapsed, reach = 0.0, -math.inf
    for begin, end in sorted(spans):
        if end > reach:
            elapsed += end - max(begin, reach)
            reach = end
    return {"runs_minutes": total / 60, "elapsed_minutes": elapsed / 60, "met": elapsed / 60 <= COST_TARGET_MINUTES}


def figures(out: Path, first_steps: int) -> dict[str, Any]:
    results = json.loads((out / "results.json").read_text())
    return {"setting": results["setting"], "out": str(out), "seeds": results["seeds"], "steps": results["steps"],
            "agents": headroom_and_budget(results),
            "complementarity": complementarity(out, results["seeds"], first_steps),
            "cost": cost(out), "run_cpus": results.get("run_cpus")}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def render(all_figures: list[dict[str, Any]]) -> str:
    lines = ["| setting | agent | warm start | GRPO | headroom (>= 8) | GRPO n x G | n x G - G, paired | seed spread "
             "| budget helps |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for f in all_figures:
        for agent, r in f["agents"].items():
            budget = (f"{r['budget_mean']:.1f} ± {r['budget_std']:.1f}", f"{r['budget_gain']:+.1f} ± "
                      f"{r['budget_gain_std']:.1f}", f"{r['seed_spread']:.1f}", "yes" if r["budget_met"] else "**no**"
                      ) if "budget_gain" in r else ("-", "-", "-", "-")
            lines.append(f"| {f['setting']} | {agent} | {r['warm_start']:.1f} | {r['grpo_mean']:.1f} ± "
                         f"{r['grpo_std']:.1f} | {r['headroom']:+.1f}{'' if r['headroom_met'] else ' **(no)**'} | "
                         + " | ".join(budget) + " |")
    lines += ["", "| setting | first steps | agent: all-fail groups | source -> receiver: receiver's all-fail prompts "
              "the source solves (add / mul) |", "|---|---:|---|---|"]
    for f in all_figures:
        c = f["complementarity"]
        if c is None:
            lines.append(f"| {f['setting']} | - | (no rollout records) | |")
            continue
        fails = ", ".join(f"{a} {_pct(v)}" for a, v in c["all_fail"].items())
        dirs = "; ".join(f"{d}: {_pct(v['partner_solves'])} of {v['receiver_all_fail_prompts']} ("
                         + " / ".join(_pct(k['partner_solves']) for k in v["by_kind"].values()) + ")"
                         for d, v in c["directions"].items())
        lines.append(f"| {f['setting']} | {c['first_steps']} | {fails} | {dirs} |")
    lines += ["", "| setting | runs | summed run time (min) | elapsed (min, target <= 45) |", "|---|---:|---:|---:|"]
    for f in all_figures:
        c = f["cost"]
        if c["elapsed_minutes"] is None:
            continue
        lines.append(f"| {f['setting']} | {len(f['seeds'])} seeds | {c['runs_minutes']:.0f} | "
                     f"{c['elapsed_minutes']:.0f}{'' if c['met'] else ' **(over)**'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outs", nargs="+", type=Path, help="hacrl compare output directories")
    ap.add_argument("--first-steps", type=int, default=10, help="steps of the GRPO runs read for complementarity")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)
    found = [figures(out, args.first_steps) for out in args.outs]
    text = render(found)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
