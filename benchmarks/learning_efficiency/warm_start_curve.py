"""How a zoo recipe's warm start unfolds: greedy and sampled accuracy per problem kind at chosen steps.

The testbed's recipes stop their warm start where an agent is partly competent but samples correct answers far more
often than greedy decoding finds them (RL's room), and where paired agents fail different kinds. This is the tool
those stopping points were chosen with: it trains a recipe (with optional field overrides) and, at each milestone,
measures on the validation half of the held-out split (never the reported half): greedy accuracy per kind (the one
evaluator, as training-time evaluation does), accuracy of k samples at temperature 1, pass@k per kind, and the share
of prompts whose first 4 samples all fail (an all-fail group at G = 4). `--save DIR` writes the agent at every
milestone (`DIR/s<step>`, an ordinary agent directory a config can name as `model:`).

    python benchmarks/learning_efficiency/warm_start_curve.py --recipe gpt2-char-add \
        --set 'mix=[[add,0.8],[mul,0.2]]' steps=800 --milestones 300,400,500,600,700,800 --json curve.json

Runs on one thread, like the zoo's own builds.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from hacrl.evaluator import decode, score_completions
from hacrl.models import zoo
from hacrl.rollout.backend import InProcessBackend
from hacrl.rollout.sampler import SamplingParams
from hacrl.tasks.arithmetic import ArithmeticTask
from hacrl.tasks.splits import HeldOutHalf


def _overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        parsed = yaml.safe_load(value)
        out[key] = tuple(tuple(x) for x in parsed) if key == "mix" else parsed
    return out


def measure(model: torch.nn.Module, tokenizer: Any, recipe: zoo.Recipe, task: ArithmeticTask, problems: list[Any],
            k: int) -> dict[str, Any]:
    prompts = [tokenizer.encode(recipe.prompt_template.format(prompt=p.prompt), add_special_tokens=False)
               for p in problems]
    backend = InProcessBackend(model, tokenizer, [tokenizer.eos_token_id])
    greedy = score_completions(problems, decode(backend, prompts, SamplingParams(greedy=True, max_new_tokens=48)),
                               task.score)
    repeated = [p for p in prompts for _ in range(k)]
    sampled = score_completions(problems, decode(backend, repeated, SamplingParams(max_new_tokens=48), seed=1),
                                task.score, k=k)
    row: dict[str, Any] = {"greedy": greedy.accuracy, "greedy_kind": greedy.per_kind,
                           "sampled": sampled.accuracy, "sampled_kind": sampled.per_kind}
    for kind in sorted({p.kind for p in problems}):
        rows = [m for m, p in zip(sampled.matrix, problems, strict=True) if p.kind == kind]
        row[f"pass{k}_{kind}"] = sum(any(v >= 1 for v in r) for r in rows) / len(rows)
        row[f"all_fail4_{kind}"] = sum(all(v < 1 for v in r[:4]) for r in rows) / len(rows)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", required=True, help="a zoo recipe name (its fields are the starting point)")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=YAML", help="recipe fields to override")
    ap.add_argument("--milestones", default="300,400,500,600,700,800")
    ap.add_argument("--k", type=int, default=8, help="samples per problem at temperature 1")
    ap.add_argument("--save", type=Path, default=None, help="write the agent at every milestone into DIR/s<step>")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    recipe = dataclasses.replace(zoo.get_recipe(args.recipe), **_overrides(args.set))
    milestones = sorted(int(x) for x in args.milestones.split(","))
    if recipe.steps < milestones[-1]:
        raise SystemExit(f"--milestones go to {milestones[-1]} but the recipe trains {recipe.steps} steps")
    task = ArithmeticTask(recipe.task)
    problems = list(HeldOutHalf(task, "validation").eval_problems())
    tokenizer = zoo.build_tokenizer(recipe, task)
    torch.manual_seed(recipe.seed)
    model = zoo.build_model(recipe, tokenizer)
    curve: list[dict[str, Any]] = []
    start = time.perf_counter()

    def at_step(step: int, m: torch.nn.Module) -> None:
        if step not in milestones:
            return
        m.eval()
        with torch.no_grad():
            row = {"step": step, "seconds": round(time.perf_counter() - start, 1),
                   **measure(m, tokenizer, recipe, task, problems, args.k)}
        curve.append(row)
        print(json.dumps(row), flush=True)
        if args.save is not None:
            snapshot = copy.deepcopy(m)
            for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
                setattr(snapshot.generation_config, key, getattr(tokenizer, key))
            meta = {"format": 1, "name": recipe.name, "prompt_template": recipe.prompt_template,
                    "recipe": dataclasses.replace(recipe, steps=step).to_dict()}
            zoo.save_agent(zoo.TrainedAgent(recipe, snapshot, tokenizer, meta), args.save / f"s{step}")
        m.train()

    zoo.warm_start(model, tokenizer, recipe, task, progress=False, callback=at_step)
    if args.json is not None:
        args.json.write_text(json.dumps({"recipe": recipe.to_dict(), "problems": len(problems), "k": args.k,
                                         "curve": curve}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
