"""Wall time per collaborative step for n = 1..4 agents: in-process executor vs Ray (one actor, one thread each).

Every configuration is a real `Trainer` (the code `hacrl train` runs) on the zoo's demo pair (a character-level
GPT-2 and a BPE Llama: different architectures and tokenizers), repeated for n = 3, 4 under new names (agent 3
starts from agent 1's weights, agent 4 from agent 2's; each samples with its own RNG), so n = 4 is two balanced
pairs and only two zoo builds are needed; an extra n = 2 set, "2-balanced", pairs two agents of the first recipe,
to separate the demo pair's imbalance from Ray's own cost. n >= 2 runs HACPO; n = 1 (the pair's first agent alone)
runs GSPO, because HACPO needs at least two agents. Demo-sized steps: 16 prompts x 8 completions per agent, 48 new
tokens, mini-batches of 64 responses. Under HACPO every learner trains on the whole pool (n x 128 responses), so
the total update work of a step grows like n^2 while the sampling work grows like n.

In-process runs with 1 torch thread (`--inproc-threads 1,2` adds 2 threads, i.e. all cores of this machine, which
measured 20-30x slower per step while the machine was busy); Ray gives each agent its own actor process with 1
thread. All configurations live in this one process and take their steps round-robin (one step each per round), so
every configuration sees the same machine conditions and, since they share the seed, the same prompts in a round.

    python benchmarks/throughput/agent_scaling.py [--rounds 5] [--max-agents 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, median, quiet, write_json


def scaling_agents(n_max: int) -> list[tuple[str, str]]:
    """(agent name, model) for n = 1..n_max: the demo pair's recipes, cycled, with unique agent names."""
    from hacrl.models import zoo

    pair = zoo.PAIRS[zoo.DEMO_PAIR]
    out = []
    for i in range(n_max):
        recipe = pair[i % len(pair)]
        out.append((f"{recipe}-{i // len(pair) + 1}", f"zoo:{recipe}"))
    return out


def _config(n: int, executor: str, args: argparse.Namespace, out: Path, agents: list[tuple[str, str]]
            ) -> dict[str, Any]:
    return {
        "run_name": f"scaling-{n}-{executor}", "seed": 0, "output_dir": str(out), "executor": executor,
        "threads": 1,
        "agents": [{"name": name, "model": model, "lr": 1e-5, "threads": 1} for name, model in agents[:n]],
        "algorithm": {"name": "hacpo" if n >= 2 else "gspo"},
        "task": {"name": "arithmetic"},
        "training": {"steps": 10**6, "prompts_per_step": args.prompts, "num_generations": args.generations,
                     "minibatch_size": 64, "max_new_tokens": args.max_new_tokens, "eval_every": 10**6,
                     "eval_limit": 8},
        "checkpoint": {"every": 10**6},
        "logging": {"tensorboard": False, "progress": False},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="measured steps per configuration")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--max-agents", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--inproc-threads", default="1",
                        help="comma-separated torch thread counts for the in-process executor, e.g. 1,2 (2 threads "
                             "on a busy 2-core machine measured 20-30x slower per step, so 1 is the default)")
    parser.add_argument("--no-balanced-pair", dest="balanced_pair", action="store_false",
                        help="leave out the extra n = 2 run with two agents of the same recipe")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    quiet()
    import ray
    import torch

    from hacrl.config import config_from_dict
    from hacrl.models import zoo
    from hacrl.trainer import Trainer

    agents = scaling_agents(args.max_agents)
    for model in dict.fromkeys(model for _, model in agents):
        zoo.build(model.removeprefix("zoo:"), progress=False)
    # The agent sets: n = 1..max, plus a balanced pair (two agents of the first recipe), which shows how much of
    # the demo pair's Ray result is the pair's imbalance rather than Ray.
    sets: dict[str, list[tuple[str, str]]] = {str(n): agents[:n] for n in range(1, args.max_agents + 1)}
    if args.balanced_pair:
        first = agents[0][1]
        sets["2-balanced"] = [(f"{first.removeprefix('zoo:')}-a", first), (f"{first.removeprefix('zoo:')}-b", first)]
    torch.set_num_threads(1)
    cores = os.cpu_count() or 1
    # One local Ray instance for every Ray configuration (hacrl reuses an initialised Ray and leaves it running);
    # CPU slots for all actors at once, since idle actors of the other configurations hold theirs.
    total_actors = sum(len(a) for a in sets.values())
    ray.init(num_cpus=max(cores, total_actors), include_dashboard=False, logging_level="ERROR")
    tmp = Path(tempfile.mkdtemp(prefix="hacrl-bench-scaling-"))
    trainers: dict[tuple[str, str], Any] = {}
    start_seconds: dict[str, float] = {}
    for key, members in sets.items():
        for executor in ("sequential", "ray"):
            started = time.perf_counter()
            cfg = _config(len(members), executor, args, tmp / f"{key}-{executor}", members)
            trainers[(key, executor)] = Trainer(config_from_dict(cfg))
            start_seconds[f"{key}-{executor}"] = time.perf_counter() - started
    # (label, trainer key, torch threads of this process during the step); a set's variants run back to back
    variants = [(f"inproc-{t}t", "sequential", int(t)) for t in args.inproc_threads.split(",")] + [("ray", "ray", 1)]
    labels = [label for label, _, _ in variants]
    runs = [(f"{key}-{label}", (key, ex), threads) for key in sets for label, ex, threads in variants]
    times: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    tokens: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    agent_seconds: dict[str, list[list[float]]] = {label: [] for label, _, _ in runs}  # per step, per agent
    loads = []
    for r in range(args.warmup + args.rounds):
        for label, key, threads in runs:
            torch.set_num_threads(threads)
            trainer = trainers[key]
            before = [t.sample_seconds + t.train_seconds for t in trainer.totals.values()]
            begin = time.perf_counter()
            metrics = trainer.train_step()
            seconds = time.perf_counter() - begin
            if r >= args.warmup:
                times[label].append(seconds)
                agent_seconds[label].append([t.sample_seconds + t.train_seconds - b
                                             for t, b in zip(trainer.totals.values(), before, strict=True)])
                tokens[label].append(sum(m["completion_tokens_mean"] for m in metrics.values()) * args.prompts
                                     * args.generations)
        loads.append(os.getloadavg()[0])
    torch.set_num_threads(1)
    for trainer in trainers.values():
        trainer.close()
    ray.shutdown()

    results: dict[str, Any] = {}
    for label, _, _ in runs:
        per_agent = [median([step[i] for step in agent_seconds[label]]) for i in range(len(agent_seconds[label][0]))]
        results[label] = {"median_step_seconds": median(times[label]),
                          # each agent's own sampling + update time (measured inside its worker): in-process the
                          # wall time is about their sum, with Ray about their maximum, plus the coordinator
                          "median_agent_seconds": [round(x, 3) for x in per_agent],
                          "sum_agent_seconds": sum(per_agent), "max_agent_seconds": max(per_agent),
                          "step_seconds": [round(t, 3) for t in times[label]],
                          "generated_tokens_per_step": median(tokens[label])}
    table = []
    for key, members in sets.items():
        row: dict[str, Any] = {"set": key, "n": len(members), "agents": [name for name, _ in members],
                               "algorithm": "hacpo" if len(members) >= 2 else "gspo"}
        for label in labels:
            row[label] = results[f"{key}-{label}"]["median_step_seconds"]
        best = min((label for label in labels if label != "ray"), key=lambda label: row[label])
        row["best_inproc"] = row[best]
        row["ray_vs_best_inproc"] = row["ray"] / row[best]
        # the same ratio from steps taken back to back in each round (cancels slow drift of the machine's load)
        row["ray_vs_best_inproc_paired"] = median([a / b for a, b in zip(times[f"{key}-ray"], times[f"{key}-{best}"],
                                                                         strict=True)])
        table.append(row)
    one = {label: table[0][label] for label in labels}
    for row in table:  # growth relative to one agent; sub-linear means < n
        for label in labels:
            row[f"{label}_growth_vs_n1"] = row[label] / one[label]
    result = {
        "benchmark": "agent_scaling", "command": command_line(), "machine": machine("ray"),
        "settings": {"agents": agents, "sets": {k: [a for a, _ in v] for k, v in sets.items()},
                     "prompts_per_step": args.prompts,
                     "completions_per_prompt": args.generations, "max_new_tokens": args.max_new_tokens,
                     "minibatch_size": 64, "rounds": args.rounds, "warmup_rounds": args.warmup,
                     "load_average_1min_per_round": [round(x, 2) for x in loads],
                     "startup_seconds": {k: round(v, 1) for k, v in start_seconds.items()}},
        "table": table, "runs": results,
    }
    write_json(args.json, result)


if __name__ == "__main__":
    main()
