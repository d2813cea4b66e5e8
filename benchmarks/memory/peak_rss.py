"""Peak memory (RSS) of one HACPO step: full-parameter vs LoRA agents, with and without token-budget micro-batches.

The pair is the two `medium` stand-ins of `hacrl.models.standins` (a Qwen2-style and a Llama-style model of ~27 M
parameters each, random weights, their own BPE tokenizers), trained together in one process (the sequential
executor), fp32 on the CPU. Every configuration runs in a fresh subprocess, which builds the `Trainer` (both agents
loaded), resets the kernel's peak-RSS counter (`/proc/self/clear_refs`), runs ONE training step (sampling,
verification, both learners' updates; the optimizers' moments are created in it), and reports:

* `step_peak_mb`: the peak RSS during the step (`VmHWM` after the reset), the number compared;
* `before_step_mb`: RSS when the step starts (models, tokenizers, the interpreter);
* `process_peak_mb`: `ru_maxrss` of the whole process (loading included), as a check.

A reward that varies between responses (`len(completion) % 7 / 6`) makes every response's advantage non-zero,
so every row is really forward- and backward-computed (an all-zero reward would skip them all). The random-weight
models rarely emit their stop token, so responses run to `--new-tokens`: the step's token count is fixed.

Every configuration runs twice: with glibc's default malloc, and with `MALLOC_MMAP_THRESHOLD_=131072`, under which
freed large blocks go back to the kernel at once (by default glibc keeps freed activation memory in its heap once
its adaptive threshold has grown, and RSS then measures the allocator's high-water mark as much as the tensors).

    python benchmarks/memory/peak_rss.py [--prompts 8] [--generations 4] [--new-tokens 128] [--budget 1024]
        [--rank 16] [--json docs/results/memory.json] [--markdown docs/results/memory.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "throughput"))
from _common import command_line, machine, quiet, write_json

CONFIGS = {  # name: (LoRA on both agents, micro-batch token budget used)
    "full": (False, False),
    "full + micro-batches": (False, True),
    "LoRA": (True, False),
    "LoRA + micro-batches": (True, True),
}
ALLOCATORS = {  # name: environment of the child
    "glibc default": {},
    # glibc's malloc raises its mmap threshold (up to 32 MiB) as large blocks are freed, after which freed activation
    # memory stays in the heap and counts in RSS; a fixed threshold gives every block >= 128 KiB back at once, so
    # RSS follows the live tensors
    "MALLOC_MMAP_THRESHOLD_=131072": {"MALLOC_MMAP_THRESHOLD_": "131072"},
}


def _status_mb(field: str) -> float:
    """A `/proc/self/status` memory field (kB) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in this (fresh) process."""
    quiet()
    import torch

    torch.set_num_threads(1)
    from hacrl.config import config_from_dict
    from hacrl.tasks.arithmetic import ArithmeticConfig, ArithmeticTask
    from hacrl.tasks.base import FunctionRewardTask
    from hacrl.trainer import Trainer

    arithmetic = ArithmeticTask(ArithmeticConfig(n_train=200, n_eval=8))
    task = FunctionRewardTask("graded", arithmetic.train_problems(), arithmetic.eval_problems(),
                              lambda prompts, completions, **_: [(len(c) % 7) / 6 for c in completions])
    rows = spec["prompts"] * spec["generations"]
    agents = [{"name": kind, "model": path, "lr": 1e-5} for kind, path in spec["models"].items()]
    for agent in agents:
        if spec["lora"]:
            agent["lora"] = {"r": spec["rank"]}
    cfg = config_from_dict({
        "seed": 0, "output_dir": spec["out"], "agents": agents, "algorithm": {"name": "hacpo"},
        "training": {"steps": 1, "prompts_per_step": spec["prompts"], "num_generations": spec["generations"],
                     "minibatch_size": 2 * rows, "max_new_tokens": spec["new_tokens"],
                     "max_tokens_per_microbatch": spec["budget"], "eval_every": 100, "eval_limit": 1},
        "logging": {"tensorboard": False, "progress": False},
    })
    trainer = Trainer(cfg, task=task)
    workers = trainer.executor.workers
    before = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak RSS) to the current RSS
    start = time.perf_counter()
    metrics = trainer.train_step()
    result = {
        "step_peak_mb": _status_mb("VmHWM"), "before_step_mb": before, "step_seconds": time.perf_counter() - start,
        "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parameters": {w.config.name: sum(p.numel() for p in w.model.parameters()) for w in workers},
        "trained_parameters": {w.config.name: sum(p.numel() for g in w.optimizer.param_groups for p in g["params"])
                               for w in workers},
        "rows_per_learner": {n: m["trained_rows"] for n, m in metrics.items()},
        "updates": {n: m["updates"] for n, m in metrics.items()},
        "completion_tokens_mean": {n: m["completion_tokens_mean"] for n, m in metrics.items()},
    }
    trainer.close()
    return result


def predicted_state_mb(parameters: int, trained: int) -> float:
    """fp32 weights (4 B per parameter) + gradient and two AdamW moments (12 B) per trained parameter."""
    return (4 * parameters + 12 * trained) / 2**20


def markdown(result: dict[str, Any]) -> str:
    by_allocator = result["configurations"]
    names = list(by_allocator)
    lines = [
        "| configuration | " + " | ".join(f"peak RSS in the step, {a} (MB) | vs full" for a in names)
        + " | RSS before the step (MB) | trained parameters | weights + grads + AdamW, predicted (MB) "
        "| step (s), per allocator |",
        "|---|" + "---:|---:|" * len(names) + "---:|---:|---:|---:|",
    ]
    for config in CONFIGS:
        first = by_allocator[names[0]][config]
        params, trained = sum(first["parameters"].values()), sum(first["trained_parameters"].values())
        peaks = " | ".join(f"{runs[config]['step_peak_mb']:,.0f} | "
                           f"{runs[config]['step_peak_mb'] / runs['full']['step_peak_mb']:.2f}x"
                           for runs in by_allocator.values())
        seconds = " / ".join(f"{runs[config]['step_seconds']:.1f}" for runs in by_allocator.values())
        lines.append(f"| {config} | {peaks} | {first['before_step_mb']:,.0f} | {trained:,} | "
                     f"{predicted_state_mb(params, trained):,.0f} | {seconds} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--budget", type=int, default=1024, help="max_tokens_per_microbatch of the micro-batch runs")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None, help="also write the table (with command, machine, date) here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return
    quiet()
    from hacrl.models.standins import build_standin_pair

    with tempfile.TemporaryDirectory(prefix="hacrl-memory-") as tmp:
        models = {kind: str(path) for kind, path in build_standin_pair(Path(tmp) / "standins", size="medium").items()}
        runs: dict[str, dict[str, Any]] = {allocator: {} for allocator in ALLOCATORS}
        for allocator, environment in ALLOCATORS.items():
            for name, (lora, micro) in CONFIGS.items():
                spec = {"models": models, "lora": lora, "rank": args.rank, "budget": args.budget if micro else None,
                        "prompts": args.prompts, "generations": args.generations, "new_tokens": args.new_tokens,
                        "out": str(Path(tmp) / f"{len(runs[allocator])}-{allocator}"[:40])}
                proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                      text=True, env=os.environ | {"OMP_NUM_THREADS": "1"} | environment, check=False)
                if proc.returncode != 0:
                    raise SystemExit(f"{name} ({allocator}): the child failed:\n{proc.stderr[-3000:]}")
                runs[allocator][name] = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"{name} ({allocator}): peak {runs[allocator][name]['step_peak_mb']:.0f} MB", file=sys.stderr)
    result = {"benchmark": "memory_peak_rss", "command": command_line(), "machine": machine("peft"),
              "settings": {"algorithm": "hacpo", "agents": "qwen2 + llama stand-ins (medium), fp32, CPU, 1 thread",
                           "prompts_per_step": args.prompts, "num_generations": args.generations,
                           "max_new_tokens": args.new_tokens, "minibatch_size": 2 * args.prompts * args.generations,
                           "max_tokens_per_microbatch": args.budget, "lora": {"r": args.rank, "alpha": 2 * args.rank,
                                                                              "target_modules": "all-linear"}},
              "configurations": runs}
    write_json(args.json, result)
    table = markdown(result)
    print(table)
    if args.markdown:
        m = result["machine"]
        Path(args.markdown).write_text(
            f"# Peak memory of one HACPO step: full vs LoRA, with and without micro-batches\n\n"
            f"Finished {m['date_utc']} on {m['cpu']}, {m['cores']} cores shared with other jobs (load average "
            f"{m['load_average_1_5_15']} at the end), torch {m['versions']['torch']}, transformers "
            f"{m['versions']['transformers']}, peft {m['versions']['peft']}; git {m['git_commit']}. One run per "
            f"configuration and allocator; settings in {Path(args.json).name if args.json else 'the JSON'}.\n\n"
            f"Command: `{result['command']}`\n\n{table}\n\nWhat these numbers say (and do not): "
            "[docs/lora.md](../lora.md#memory).\n")


if __name__ == "__main__":
    main()
