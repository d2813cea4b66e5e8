"""One Markdown table across every learning-efficiency setting: the README's headline, made from the settings'
``results.json`` files rather than copied by hand (so every number in it has a command behind it).

    python benchmarks/learning_efficiency/summary.py docs/results/{state,size,model,trio}/results.json

Per agent and setting (with its number of training steps): warm start, GSPO, GSPO x2 and HACPO final held-out
accuracy (mean ± std over seeds), the per-seed paired difference HACPO - GSPO, and whether the target (HACPO > GSPO,
>= GSPO x2, half the rollouts) held.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _cell(stats: dict[str, Any]) -> str:
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"


def summary_rows(results: dict[str, Any]) -> list[str]:
    check = results.get("target_check", {})
    rows = []
    for agent, res in results["agents"].items():
        algos = res["algorithms"]
        if not all(a in algos for a in ("gspo", "gspo_x2", "hacpo")) or not check.get("available"):
            raise SystemExit(f"{results['setting']}: needs GSPO, GSPO x2 and HACPO runs and a target check")
        c = check["agents"][agent]
        paired = c["paired_vs_gspo"]
        verdict = "met" if c["all_met"] else "**not met**"
        rows.append(f"| {results['setting']} | {results['steps']} | {agent} | {100 * res['warm_start']:.1f} | "
                    f"{_cell(algos['gspo'])} | "
                    f"{_cell(algos['gspo_x2'])} | {_cell(algos['hacpo'])} | "
                    f"{100 * paired['mean']:+.1f} ± {100 * paired['std']:.1f} | {verdict} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json files written by hacrl compare")
    args = parser.parse_args(argv)
    lines = ["| setting | steps | agent | warm start | GSPO | GSPO x2 | HACPO "
             "| HACPO - GSPO, paired by seed | target |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for path in args.results:
        lines += summary_rows(json.loads(path.read_text()))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
