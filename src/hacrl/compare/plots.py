"""Curves of a comparison: held-out accuracy against the rollouts an agent consumed and against wall time, one row
of panels per agent (``curves.png``) and one file per agent, like the HACPO paper's Figure 3."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hacrl.compare.report import display_name
from hacrl.compare.results import AgentResult, Results
from hacrl.compare.runs import is_independent


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


_COLOR_INDEX = {"gspo": 0, "gspo_x2": 1, "grpo": 2, "hacpo": 3, "hacpo-no-adv": 4, "hacpo-no-omega": 5,
                "hacpo-alpha0": 6, "naive": 7, "hacpo-no-stepwise": 8, "hacpo-no-clip": 9, "graft": 10, "sgt": 11,
                "graft-stored": 12, "grpo_nK": 13}


def _color_key(algorithm: str) -> str:
    """Larger-budget baselines share one colour per family (`grpo_nK`; `gspo_nK` as GSPO x2)."""
    if re.fullmatch(r"grpo_n\d+", algorithm):
        return "grpo_nK"
    return "gspo_x2" if re.fullmatch(r"gspo_n\d+", algorithm) else algorithm


def _colors(algorithms: Iterable[str]) -> dict[str, Any]:
    """One fixed colour per algorithm (tab20), so plots of different settings agree."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    spare = iter(i for i in range(20) if i not in _COLOR_INDEX.values())
    return {a: cmap(_COLOR_INDEX[_color_key(a)] if _color_key(a) in _COLOR_INDEX else next(spare))
            for a in algorithms}


def _draw_agent(axes: Sequence[Any], agent: str, res: AgentResult, algorithms: Sequence[str],
                colors: dict[str, Any], n_seeds: int) -> None:
    ax_r, ax_w = axes
    for a in algorithms:
        curve = res.algorithms[a].curve
        if not curve["step"]:
            continue
        y, lo, hi = ([100 * v for v in curve[key]] for key in ("accuracy_mean", "accuracy_min", "accuracy_max"))
        for ax, x in ((ax_r, curve["rollouts"]), (ax_w, curve["wall_seconds"])):
            ax.plot(x, y, marker="o", markersize=3, color=colors[a], label=display_name(a),
                    linewidth=1.5 if is_independent(a) else 2.2, zorder=2 if is_independent(a) else 3)
            if n_seeds > 1:
                ax.fill_between(x, lo, hi, color=colors[a], alpha=0.15, linewidth=0)
    ax_r.axhline(100 * res.warm_start, color="grey", linestyle=":", linewidth=1, label="warm start")
    band = f"mean, band = min-max over {n_seeds} seeds" if n_seeds > 1 else "1 seed"
    ax_r.set_title(f"{agent}: accuracy vs rollouts ({band})", fontsize=10)
    ax_w.set_title(f"{agent}: accuracy vs wall time", fontsize=10)
    ax_r.set_xlabel("rollouts consumed by this agent")
    ax_w.set_xlabel("training wall time of the run (s)")
    for ax in (ax_r, ax_w):
        ax.set_ylabel("held-out greedy accuracy (%)")
        ax.grid(alpha=0.3)
    ax_r.legend(fontsize=8, loc="best")


def plot_curves(results: Results, out: Path) -> list[Path]:
    """``curves.png`` (one row of panels per agent: accuracy vs rollouts, vs wall time) and one
    ``curves_<agent>.png`` per agent, like the paper's Figure 3."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algorithms = results.algorithms
    colors = _colors(algorithms)
    agents = list(results.agents)
    n_seeds = len(results.seeds)
    paths = []
    fig, axes = plt.subplots(len(agents), 2, figsize=(12, 3.8 * len(agents)), squeeze=False)
    for row, agent in enumerate(agents):
        _draw_agent(axes[row], agent, results.agents[agent], algorithms, colors, n_seeds)
    fig.suptitle(f"{results.setting}: held-out accuracy during training", fontsize=12)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    for agent in agents:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4), squeeze=False)
        _draw_agent(axes[0], agent, results.agents[agent], algorithms, colors, n_seeds)
        fig.tight_layout()
        path = out / f"curves_{_slug(agent)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
