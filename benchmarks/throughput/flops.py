"""Achieved FLOP/s of a hacrl training step vs a large-matmul peak measured in the same run.

The step is `Trainer.train_step()` of a one-agent GSPO run on the shared benchmark model (the zoo's Llama,
8 prompts x 8 completions, 48 new tokens; the vs-TRL setting). Its useful work is estimated as

    FLOPs = 6 * P * T_train + 2 * P * T_gen

with P = all model parameters, T_train = prompt + completion tokens of every trained row (the forward and
backward pass: 2 + 4 FLOPs per parameter per token), T_gen = generated tokens (one forward each while sampling).
Padding, attention scores and the prompt prefill are not counted (all small at these lengths), so this is the
usual lower-bound estimate of useful work. The peak is the FLOP/s of 2048 x 2048 fp32 matmuls (2 * 2048^3 each)
at the same torch thread count, alternated with the training steps.

    python benchmarks/throughput/flops.py [--steps 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_model_dir, command_line, describe_model, machine, median, quiet, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    quiet()
    import torch

    torch.set_num_threads(args.threads)
    from vs_trl import _hacrl_trainer

    settings = argparse.Namespace(seed=0, threads=args.threads, lr=1e-5, prompts=8, generations=8, max_new_tokens=48)
    model_dir = bench_model_dir()
    trainer = _hacrl_trainer(model_dir, settings, Path(tempfile.mkdtemp(prefix="hacrl-bench-flops-")))
    params = sum(p.numel() for p in trainer.executor.workers[0].model.parameters())
    pools: list[Any] = []
    sample = trainer._sample

    def capture(problems: Any) -> Any:  # keep each step's pool to count its tokens
        pool, replayed = sample(problems)
        pools.append(pool)
        return pool, replayed

    trainer._sample = capture
    size = args.matmul_size
    a, b = torch.randn(size, size), torch.randn(size, size)

    def matmul_flops() -> float:
        start = time.perf_counter()
        torch.mm(a, b)
        return 2 * size**3 / (time.perf_counter() - start)

    peaks: list[float] = []
    steps: list[dict[str, float]] = []
    for i in range(args.warmup + args.steps):
        peak = max(matmul_flops() for _ in range(2))
        start = time.perf_counter()
        trainer.train_step()
        seconds = time.perf_counter() - start
        pool = pools[-1]
        t_gen = sum(len(t.completion_ids) for t in pool)
        t_train = sum(len(t.prompt_ids) + len(t.completion_ids) for t in pool)
        flops = 6 * params * t_train + 2 * params * t_gen
        if i >= args.warmup:
            peaks.append(peak)
            steps.append({"seconds": seconds, "t_gen": t_gen, "t_train": t_train, "flops": flops,
                          "flops_per_second": flops / seconds})
    achieved = median([s["flops_per_second"] for s in steps])
    peak = median(peaks)
    result = {
        "benchmark": "flops", "command": command_line(), "machine": machine(),
        "settings": {"model": describe_model(model_dir), "parameters": params, "threads": args.threads,
                     "prompts_per_step": 8, "completions_per_prompt": 8, "max_new_tokens": 48,
                     "matmul_size": size, "formula": "FLOPs = 6*P*T_train + 2*P*T_gen"},
        "median_step_seconds": median([s["seconds"] for s in steps]),
        "median_tokens": {"T_gen": median([s["t_gen"] for s in steps]),
                          "T_train": median([s["t_train"] for s in steps])},
        "achieved_flops_per_second": achieved, "matmul_peak_flops_per_second": peak,
        "flops_fraction_of_peak": achieved / peak, "steps": steps,
        "peak_samples": [round(p / 1e9, 2) for p in peaks],
    }
    write_json(args.json, result)


if __name__ == "__main__":
    main()
