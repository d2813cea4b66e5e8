"""One Markdown table across learning-efficiency settings: the README's headline, made from the settings'
``results.json`` files rather than copied by hand (so every number in it has a command behind it).

    python benchmarks/learning_efficiency/summary.py docs/results/{state,size,model,trio}/results.json

Per agent and setting (with its number of training steps): warm start, every algorithm's final held-out accuracy
(mean ± std over seeds; the columns are the union of the files' algorithms, "-" where a setting lacks one), and the
budget target: the best collaborative rule minus its equal-data baseline, paired by seed (mean ± std), met or not.

With ``--paired``, the README's headline instead: per agent, the equal-data baseline's accuracy and every other rule's
per-seed difference from it (mean ± std of the paired differences, in points; bold where the mean exceeds the std,
i.e. the rule beats the baseline by more than the seed spread).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from hacrl.compare.report import display_name
from hacrl.compare.results import Paired
from hacrl.compare.runs import parse_algorithms


def _cell(stats: dict[str, Any] | None) -> str:
    return "-" if stats is None else f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"


def summary_rows(results: dict[str, Any], algorithms: list[str]) -> list[str]:
    budget = results.get("budget_target") or {}
    rows = []
    for agent, res in results["agents"].items():
        algos = res["algorithms"]
        cells = [_cell(algos.get(a)) for a in algorithms]
        if budget.get("available"):
            c = budget["agents"][agent]
            target = (f"{display_name(c['best_rule'])} - {display_name(c['baseline'])}: "
                      f"{100 * c['margin']:+.1f} ± {100 * c['paired_std']:.1f} | "
                      + ("met" if c["met"] else "**not met**"))
        else:
            target = "- | not available"
        rows.append(f"| {results['setting']} | {results['steps']} | {agent} | {100 * res['warm_start']:.1f} | "
                    + " | ".join(cells) + f" | {target} |")
    return rows


def _paired_cell(stats: dict[str, Any] | None, base: dict[str, Any] | None) -> str:
    """Mean ± std of the per-seed differences from the baseline (computed for every rule alike: the equal-cost GRPO
    has none stored)."""
    if stats is None or base is None:
        return "-"
    diff = Paired.of("baseline", stats["per_seed"], base["per_seed"])
    text = f"{100 * diff.mean:+.1f} ± {100 * diff.std:.1f}"
    return f"**{text}**" if diff.mean > diff.std else text


def paired_table(files: list[dict[str, Any]]) -> list[str]:
    """Every rule against the budget-matched (equal-data) independent baseline, per agent and setting."""
    baselines = _equal_data_baselines(files)
    rules = [a for a in parse_algorithms([a for r in files for a in r["algorithms"]]) if a not in baselines]
    lines = ["| setting | agent | equal-data baseline | " + " | ".join(display_name(a) for a in rules) + " |",
             "|---|---|---|" + "---:|" * len(rules)]
    for results in files:
        for agent, res in results["agents"].items():
            algos = res["algorithms"]
            base = next((algos[a]["vs_equal_data"]["against"] for a in rules
                         if a in algos and algos[a].get("vs_equal_data")), None)
            base_cell = "-" if base is None else f"{display_name(base)} {_cell(algos.get(base))}"
            lines.append(f"| {results['setting']} | {agent} | {base_cell} | "
                         + " | ".join(_paired_cell(algos.get(a), algos.get(base) if base else None)
                                      for a in rules) + " |")
    return lines


def _equal_data_baselines(files: list[dict[str, Any]]) -> set[str]:
    """The algorithms the rules were paired with at equal data (a column of theirs would compare them to themselves)."""
    return {stats["vs_equal_data"]["against"] for r in files for res in r["agents"].values()
            for stats in res["algorithms"].values() if stats.get("vs_equal_data")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json files written by hacrl compare")
    parser.add_argument("--paired", action="store_true",
                        help="every rule's paired difference from the equal-data baseline (the README's headline)")
    args = parser.parse_args(argv)
    files = [json.loads(path.read_text()) for path in args.results]
    if args.paired:
        print("\n".join(paired_table(files)))
        return 0
    algorithms = parse_algorithms([a for r in files for a in r["algorithms"]])
    lines = ["| setting | steps | agent | warm start | " + " | ".join(display_name(a) for a in algorithms)
             + " | best rule - equal-data baseline, paired by seed | target |",
             "|---|---:|---|---:|" + "---:|" * len(algorithms) + "---|---|"]
    for results in files:
        lines += summary_rows(results, algorithms)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
