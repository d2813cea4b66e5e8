"""Build every zoo recipe and report what the warm start achieved: the numbers the recipes are tuned to.

What the testbed asks of its agents (docs/results/testbed.md): a warm start stopped partway through its schedule,
so that sampling finds correct answers far more often than greedy decoding (room for RL), and partners that are
clearly better on different kinds. The shipped agents were chosen from warm-start curves on the validation half
(``benchmarks/learning_efficiency/warm_start_curve.py``); this script rebuilds recipes and reports what they reach.

With ``--cross`` it also measures, for every ordered pair of the demo pair, how a learner sees its
partner's *correct* sampled solutions: the length-normalised ratio ``exp(mean logp_learner - mean
logp_source)`` (each in its own tokenizer and prompt template) and the fraction inside HACPO's cross
clip ``[0.8, 1.0]`` (docs/method.md §3.5) — outside it, a cross response gives no gradient. This is what decides
whether a skill can move from one agent to the other at all.

    python benchmarks/zoo_calibration.py --cache /tmp/zoo-cal [--force] [--recipes a,b] [--cross] [--json out.json]

Builds are cached in ``--cache`` (default: ``$HACRL_CACHE`` or ``~/.cache/hacrl``); ``--force`` rebuilds so
the seconds column is a fresh measurement. Uses one thread, as the zoo does.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from hacrl.models import zoo
from hacrl.tasks.arithmetic import ArithmeticTask
from hacrl.tasks.splits import balanced_prefix


def _row(name: str, path: Path, wall: float, built_now: bool) -> dict[str, Any]:
    meta = json.loads((path / zoo.AGENT_META_FILE).read_text())
    r = zoo.get_recipe(name)
    acc = meta["warm_start"]["greedy_accuracy"]
    return {
        "name": name,
        "arch": r.architecture,
        "tokenizer": meta["recipe"]["tokenizer"] if r.tokenizer == "char" else f"bpe-{r.bpe_vocab_size}",
        "params": meta["parameters"],
        "mix": " ".join(f"{k} {w:.0%}" for k, w in r.mix_weights.items()),
        "steps": r.steps,
        "overall": acc["overall"],
        **{k: acc.get(k, float("nan")) for k in r.task.kinds},
        "warm_s": meta["warm_start"]["seconds"],
        "warm_cpu_s": meta["warm_start"].get("cpu_seconds"),
        "eval_s": meta["warm_start"]["eval_seconds"],
        "build_wall_s": round(wall, 1) if built_now else None,
        "max_prompt_tok": meta["max_prompt_tokens"],
        "max_completion_tok": meta["max_completion_tokens"],
    }


def _table(rows: list[dict[str, Any]]) -> str:
    headers = list(rows[0])
    cells = [[_fmt(r.get(h), percent=h in _PERCENT_COLUMNS) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    return "\n".join(lines)


_PERCENT_COLUMNS = {"overall", "add", "mul", "src_sample_acc", "in_[0.8,1]", "above_1", "below_0.8"}


def _fmt(v: Any, *, percent: bool) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1%}" if percent else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


# -- cross-agent plausibility -----------------------------------------------------------------------------


@torch.no_grad()
def _sample(model: Any, tokenizer: Any, template: str, problems: list[Any], seed: int) -> list[tuple[str, float]]:
    """One temperature-1 sample per problem: (text, mean log-prob per completion token incl. EOS)."""
    torch.manual_seed(seed)
    out: list[tuple[str, float]] = []
    for i in range(0, len(problems), 100):
        chunk = problems[i : i + 100]
        prompts = [tokenizer.encode(template.format(prompt=p.prompt), add_special_tokens=False) for p in chunk]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, p in enumerate(prompts):
            ids[j, width - len(p):] = torch.tensor(p)
            mask[j, width - len(p):] = 1
        gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                             top_p=1.0, max_new_tokens=80, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id, output_scores=True, return_dict_in_generate=True)
        new = gen.sequences[:, width:]
        logps = torch.stack([torch.log_softmax(s.float(), -1) for s in gen.scores], 1)  # [B, T, V]
        tok_lp = logps.gather(-1, new.unsqueeze(-1)).squeeze(-1)
        for j in range(len(chunk)):
            toks = new[j].tolist()
            n = toks.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in toks else len(toks)
            text = tokenizer.decode(toks[:n], skip_special_tokens=True)
            out.append((text, float(tok_lp[j, :n].mean())))
    return out


@torch.no_grad()
def _mean_logp(model: Any, tokenizer: Any, template: str, problem: Any, text: str) -> float:
    """A learner's mean log-prob per token of `text` (+EOS) in its own tokenization and template."""
    p, c = zoo.encode_example(tokenizer, template, problem, text)
    ids = torch.tensor([p + c])
    lp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    targets = ids[0, 1:]
    tok = lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)[len(p) - 1:]
    return float(tok.mean())


def cross_report(names: tuple[str, ...], cache: Path, per_kind: int) -> list[dict[str, Any]]:
    agents = {n: zoo.load(zoo.agent_dir(n, cache)) for n in names}
    task = ArithmeticTask(zoo.get_recipe(names[0]).task)
    problems = balanced_prefix(list(task.eval_problems()), per_kind * len(task.config.kinds))
    rows = []
    for src in names:
        model, tok, meta = agents[src]
        samples = _sample(model, tok, meta["prompt_template"], problems, seed=0)
        rewards = task.score(problems, [t for t, _ in samples])
        for learner in names:
            if learner == src:
                continue
            lmodel, ltok, lmeta = agents[learner]
            for kind in task.config.kinds:
                ratios = [
                    math.exp(_mean_logp(lmodel, ltok, lmeta["prompt_template"], p, t) - s)
                    for p, (t, s), r in zip(problems, samples, rewards, strict=True) if r == 1.0 and p.kind == kind
                ]
                inside = sum(0.8 <= x <= 1.0 for x in ratios)
                above = sum(x > 1.0 for x in ratios)
                rows.append({
                    "source": src, "learner": learner, "kind": kind,
                    "src_sample_acc": sum(r for p, r in zip(problems, rewards, strict=True) if p.kind == kind)
                    / max(sum(p.kind == kind for p in problems), 1),
                    "correct": len(ratios),
                    "median_ratio": round(sorted(ratios)[len(ratios) // 2], 3) if ratios else None,
                    "in_[0.8,1]": inside / len(ratios) if ratios else None,
                    "above_1": above / len(ratios) if ratios else None,
                    "below_0.8": (len(ratios) - inside - above) / len(ratios) if ratios else None,
                })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=None, help="zoo cache (default $HACRL_CACHE or ~/.cache/hacrl)")
    parser.add_argument("--recipes", default=",".join(zoo.RECIPES), help="comma-separated recipe names")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached (fresh timings)")
    parser.add_argument("--cross", action="store_true", help="measure cross-agent ratios for the demo pair")
    parser.add_argument("--cross-per-kind", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cache = args.cache or zoo.cache_root()
    names = [n for n in args.recipes.split(",") if n]
    rows = []
    total = time.perf_counter()
    for name in names:
        already = zoo.is_built(name, cache) and not args.force
        start = time.perf_counter()
        path = zoo.build(name, cache=cache, force=args.force, progress=not args.quiet)
        rows.append(_row(name, path, time.perf_counter() - start, built_now=not already))
        print(f"{name}: done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    total_s = time.perf_counter() - total
    cmd = "python benchmarks/zoo_calibration.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"# zoo calibration — {datetime.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, 1 thread\n# command: {cmd}\n")
    print(_table(rows))
    print(f"\nwhole zoo: {total_s:.0f} s wall ({'fresh builds' if args.force else 'cache hits not counted'})")
    demo = zoo.PAIRS[zoo.DEMO_PAIR]
    by_name = {r["name"]: r for r in rows}
    if all(n in by_name for n in demo):
        a, b = (by_name[n] for n in demo)
        kinds = zoo.get_recipe(demo[0]).task.kinds
        print(f"demo pair {demo[0]} + {demo[1]}: " + ", ".join(f"{k} {a[k]:.0%} vs {b[k]:.0%}" for k in kinds))
    cross = cross_report(demo, cache, args.cross_per_kind) if args.cross else []
    if cross:
        print("\ncross-agent ratios on the source's correct temperature-1 samples (demo pair):\n")
        print(_table(cross))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "cross": cross, "total_s": total_s}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
