"""``table.md`` and the console summary of a comparison: one Table-1-style table per agent with every algorithm's
accuracy, the accounting columns and the paired differences against the independent baselines, the training and
sharing diagnostics, each target's verdict, and the list of runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hacrl.compare.results import AlgorithmResult, Paired, Results, Stats
from hacrl.compare.runs import stored_rule
from hacrl.run_diagnostics import diagnostics_table, sharing_table

DISPLAY_NAMES: dict[str, str] = {"grpo": "GRPO", "gspo": "GSPO", "gspo_x2": "GSPO x2", "naive": "Naive",
                                 "hacpo": "HACPO", "graft": "GRAFT", "sgt": "SGT"}


def display_name(algorithm: str) -> str:
    """The name used in tables and legends (the papers' spelling for the main methods)."""
    rule = stored_rule(algorithm)
    if rule is not None:
        return f"{display_name(rule)} (stored peer)"
    for base in ("grpo", "gspo"):
        if algorithm.startswith(f"{base}_n") and algorithm[len(base) + 2:].isdigit():
            return f"{DISPLAY_NAMES[base]} n={algorithm[len(base) + 2:]}"
    return DISPLAY_NAMES.get(algorithm, algorithm)


def pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _best(means: Sequence[float]) -> str:
    """The best mean as printed, so that every mean that prints the same is bolded (ties shown as ties)."""
    finite = [m for m in means if m is not None and math.isfinite(m)]
    return pct(max(finite)) if finite else ""


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def _paired_cell(p: Paired | None) -> str:
    if p is None:
        return "-"
    return f"{100 * p.mean:+.1f} ± {100 * p.std:.1f} vs {display_name(p.against)}"


def _stats_cell(stats: Stats, best: str) -> str:
    text = f"{pct(stats.mean)} ± {pct(stats.std)}"
    return f"**{text}**" if pct(stats.mean) == best else text


def _agent_table(agent: str, res: Any, algorithms: list[str]) -> list[str]:
    kinds: list[str] = res.kinds
    header = ["Method", "Accuracy", *kinds, "Rollouts", "Trained on", "Updates", "Compute (s)", "Charged (s)",
              "vs equal cost", "vs equal data"]
    best_overall = _best([res.algorithms[a].mean for a in algorithms])
    best_kind = {k: _best([res.algorithms[a].kinds[k].mean for a in algorithms]) for k in kinds}
    rows = [["Warm start", pct(res.warm_start), *(pct(res.warm_start_kinds.get(k)) for k in kinds),
             "0", "0", "0", "-", "-", "", ""]]
    for a in algorithms:
        e: AlgorithmResult = res.algorithms[a]
        rows.append([display_name(a), _stats_cell(e.accuracy, best_overall),
                     *(_stats_cell(e.kinds[k], best_kind[k]) for k in kinds),
                     str(e.rollouts), str(e.trained_rows), str(e.updates), f"{e.compute_seconds:.0f}",
                     f"{e.charged_seconds:.0f}", _paired_cell(e.vs_equal_cost), _paired_cell(e.vs_equal_data)])
    lines = [f"## Agent `{agent}`", "", "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    named = [(display_name(a), res.algorithms[a].diagnostics) for a in algorithms]
    lines += ["", f"Training diagnostics of `{agent}` (mean over seeds of the per-step values in metrics.jsonl; "
              "train reward is sampled at the training temperature on that step's fresh prompts):", ""]
    lines += diagnostics_table(named)
    sharing = sharing_table(named)
    if sharing:
        lines += ["", f"Sharing diagnostics of `{agent}` as receiver (per step, mean over seeds):", "", *sharing]
    return [*lines, ""]


def render_table(results: Results) -> str:
    """``table.md``: provenance, one table per agent, diagnostics, the targets and the run list."""
    algorithms = results.algorithms
    seeds = results.seeds
    prov = results.provenance
    lines = [f"# hacrl compare: {results.setting}", ""]
    if prov.get("command"):
        lines += [f"Command: `{prov['command']}`  ", ""]
    machine = prov.get("machine") or {}
    if prov.get("date") or machine:
        cpu = f"{machine['cpu_model']}, " if machine.get("cpu_model") else ""
        lines += [f"Date: {prov.get('date', '?')}; machine: {machine.get('platform', '?')}, {cpu}"
                  f"{machine.get('cpu_count', '?')} CPUs, torch {machine.get('torch', '?')}"
                  + (f", transformers {machine['transformers']}" if machine.get("transformers") else "") + "  ", ""]
    if results.run_cpus:
        lines += [f"Runs trained on: {'; '.join(results.run_cpus)}  ", ""]
    problems = f" ({results.eval_problems} problems)" if results.eval_problems else ""
    lines += [f"Final greedy accuracy (%) on the held-out split{problems} after {results.steps} training steps "
              f"(equal for every algorithm), mean ± std over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}; "
              "sample std). Per agent, means over seeds: rollouts it generated, responses it trained on, optimizer "
              "updates, compute it used (its own sampling + training seconds) and compute charged to it (a "
              "co-trained agent is charged the whole joint run, an independent or stored-peer run its own). "
              "\"vs equal cost / equal data\": per-seed differences (points, mean ± std) against the independent "
              "baseline with the same G / with n x G responses per prompt. **Bold**: best mean per column.", ""]
    if results.eval_problems:
        lines += [evaluation_noise_note(results), ""]
    for warning in results.warnings:
        lines += [f"> warning: {warning}", ""]
    for agent, res in results.agents.items():
        lines += _agent_table(agent, res, algorithms)
    lines += render_targets(results)
    lines += ["## Runs", "", "| Algorithm | Seed | Agent | Steps | Status | Train wall (s) | Wall incl. eval (s) | "
              "Final accuracy (%) |", "|---|---:|---|---:|---|---:|---:|---|"]
    for run in results.runs:
        wall = "-" if run.get("wall_seconds") is None else f"{run['wall_seconds']:.0f}"
        finals = ", ".join(f"{n} {pct(v)}" for n, v in run["final"].items())
        lines.append(f"| {display_name(run['algorithm'])} | {run['seed']} | {run.get('agent') or 'all'} | "
                     f"{run['steps']} | {run.get('status', '-')} | {run['train_wall_seconds']:.0f} | {wall} | "
                     f"{finals} |")
    return "\n".join(lines) + "\n"


def evaluation_noise_note(results: Results) -> str:
    """The two scales of noise: the seed-to-seed spread (the ± column, all runs scored on the same problems) and the
    binomial standard error one evaluation of this split carries as an estimate of accuracy on unseen problems."""
    n = int(results.eval_problems or 1)
    errors = sorted(f"{100 * math.sqrt(max(r.warm_start * (1 - r.warm_start), 0.0) / n):.1f}"
                    for r in results.agents.values())
    spread = errors[0] if errors[0] == errors[-1] else f"{errors[0]}-{errors[-1]}"
    return (f"Noise: every run is scored on the same {n} problems, so ± is the seed-to-seed spread on this split; "
            f"as an estimate of accuracy on unseen problems, one evaluation also carries a binomial standard error "
            f"of about {spread} points at the warm-start accuracies (per-kind columns, on fewer problems, more).")


def render_targets(results: Results) -> list[str]:
    lines: list[str] = []
    budget = results.targets.get("budget_target", {})
    lines += ["## Target: the best collaborative rule beats the budget-matched baseline", ""]
    if not budget.get("available"):
        lines += [f"Not available for this comparison: {budget.get('reason', 'not checked')}.", ""]
    else:
        lines += ["Per agent: the collaborative rule with the best mean final accuracy, against the independent "
                  "baseline at equal data (n x G responses per prompt); met when the mean per-seed difference exceeds "
                  "its sample std.", "",
                  "| Agent | Best rule | Mean | Baseline | Mean | Difference (per seed) | Paired std | met |",
                  "|---|---|---:|---|---:|---|---:|---|"]
        for agent, c in budget["agents"].items():
            seeds = ", ".join(f"{100 * v:+.1f}" for v in c["per_seed"])
            lines.append(f"| {agent} | {display_name(c['best_rule'])} | {pct(c['best_mean'])} | "
                         f"{display_name(c['baseline'])} | {pct(c['baseline_mean'])} | {100 * c['margin']:+.1f} "
                         f"({seeds}) | {100 * c['paired_std']:.1f} | {_yes(c['met'])} |")
        lines += ["", "Overall: met for every agent." if budget["all_met"] else "Overall: **not met**.", ""]
    paper = results.targets.get("target_check", {})
    if paper.get("available"):
        lines += _paper_target(paper)
    return lines


def _paper_target(check: dict[str, Any]) -> list[str]:
    lines = ["## Target of the HACPO paper", "",
             "HACPO's mean final accuracy > GSPO's and >= GSPO x2's (equal training steps), and HACPO's mean curve "
             "reaches GSPO x2's final mean accuracy with at most half of GSPO x2's rollouts (first evaluation point "
             "at or above it; interpolated crossing in brackets).", "",
             "| Agent | HACPO | GSPO | HACPO > GSPO | GSPO x2 | HACPO >= GSPO x2 | HACPO rollouts to reach GSPO x2 "
             "final | GSPO x2 rollouts | <= half | all met |",
             "|---|---:|---:|---|---:|---|---:|---:|---|---|"]
    for agent, c in check["agents"].items():
        reach = ("never" if c["hacpo_rollouts_to_target"] is None else
                 f"{c['hacpo_rollouts_to_target']:.0f} ({c['hacpo_rollouts_to_target_interpolated']:.0f})")
        if c["target_at_or_below_warm_start"]:
            reach += " (GSPO x2 ended at or below the warm start)"
        lines.append(f"| {agent} | {pct(c['hacpo_mean'])} | {pct(c['gspo_mean'])} | {_yes(c['hacpo_gt_gspo'])} | "
                     f"{pct(c['gspo_x2_mean'])} | {_yes(c['hacpo_ge_gspo_x2'])} | {reach} | "
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


def render_summary(results: Results) -> str:
    """A few console lines: per agent, every algorithm's mean and each target's verdict."""
    lines = []
    for agent, res in results.agents.items():
        cells = ", ".join(f"{display_name(a)} {pct(res.algorithms[a].mean)}" for a in results.algorithms)
        lines.append(f"  {agent}: warm {pct(res.warm_start)}; {cells}")
    for key, label in (("budget_target", "best rule vs budget-matched baseline"), ("target_check", "HACPO paper")):
        check = results.targets.get(key, {})
        verdict = ("not available" if not check.get("available") else "met" if check["all_met"] else "NOT met")
        lines.append(f"target ({label}): {verdict}")
    return "\n".join(lines)


__all__ = ["display_name", "evaluation_noise_note", "render_summary", "render_table", "render_targets"]
