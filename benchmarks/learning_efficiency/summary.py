"""One Markdown table across learning-efficiency settings: the README's headline, made from the settings'
``results.json`` files rather than copied by hand (so every number in it has a command behind it).

    python benchmarks/learning_efficiency/summary.py docs/results/{state,size,model,trio}/results.json

Per agent and setting (with its number of training steps): warm start, every algorithm's final held-out accuracy
(mean ± std over seeds; the columns are the union of the files' algorithms, "-" where a setting lacks one), and the
budget target: the best collaborative rule minus its equal-data baseline, paired by seed (mean ± std), met or not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from hacrl.compare.report import display_name
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json files written by hacrl compare")
    args = parser.parse_args(argv)
    files = [json.loads(path.read_text()) for path in args.results]
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
