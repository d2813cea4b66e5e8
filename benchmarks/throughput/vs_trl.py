"""Single-agent GSPO training step: hacrl vs TRL's GRPOTrainer (importance_sampling_level="sequence").

Equal settings: the same tiny model and tokenizer loaded from the same local HF directory (the zoo's Llama + BPE
recipe), the same prompts in the same order (rendered with the agent's template; TRL gets the rendered text), 8
prompts x 8 completions per step, the same max new tokens, temperature 1, top-p 1, fp32 (TRL: bf16=False), no
gradient checkpointing, beta 0 (no reference model), one optimizer update of all 64 completions per step (TRL:
per_device_train_batch_size=64 counts completions, gradient_accumulation_steps=1, steps_per_generation=1,
num_iterations=1, so it needs no extra old-log-prob forward), AdamW at the same constant learning rate,
grad-norm clip 1.0, GSPO clip 3e-4 / 4e-4, the same reward (the arithmetic verifier), the same torch thread
count, one process.

hacrl side: `Trainer.train_step()` of a one-agent `gspo` run: exactly what `hacrl train` executes per step
(sample through the executor, verify, advantages, the worker's update, metrics to JSONL), minus the periodic
evaluation and checkpoints, which TRL does not do here either.

Interleaving: TRL drives the loop; a callback runs one hacrl step after every TRL step, so step k of both sees
the same prompts, and each side's step time excludes the other's. Tokens/s counts generated + trained completion
tokens (for one agent every generated token is trained on once: 2 x completion tokens).

hacrl leaves rows whose advantage is exactly 0 out of the forward/backward pass (they carry no gradient;
`hacrl.learner.live_rows`); TRL computes them.

    python benchmarks/throughput/vs_trl.py [--steps 12] [--warmup 2] [--threads 1] [--max-new-tokens 48]
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


def _hacrl_trainer(model_dir: Path, args: argparse.Namespace, out: Path) -> Any:
    from hacrl.config import config_from_dict
    from hacrl.trainer import Trainer

    cfg = config_from_dict({
        "run_name": "bench-vs-trl", "seed": args.seed, "output_dir": str(out), "threads": args.threads,
        "agents": [{"name": "llama", "model": str(model_dir), "lr": args.lr}],
        "algorithm": {"name": "gspo"},
        "task": {"name": "arithmetic"},
        "training": {"steps": 10**6, "prompts_per_step": args.prompts, "num_generations": args.generations,
                     "minibatch_size": args.prompts * args.generations, "max_new_tokens": args.max_new_tokens,
                     "eval_every": 10**6, "eval_limit": 8},
        "checkpoint": {"every": 10**6},
        "logging": {"tensorboard": False, "progress": False},
    })
    return Trainer(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="measured steps per framework (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the result here (default: print it)")
    args = parser.parse_args()
    quiet()
    import torch

    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from hacrl.trainer import DataStream

    model_dir = bench_model_dir()
    tmp = Path(tempfile.mkdtemp(prefix="hacrl-bench-vs-trl-"))
    hacrl = _hacrl_trainer(model_dir, args, tmp / "hacrl")
    problems = hacrl.train_problems
    template = hacrl.executor.workers[0].agent.template.plain
    total = args.warmup + args.steps
    order = DataStream(len(problems), args.seed).take(args.prompts * total)  # the prompts hacrl will draw
    dataset = Dataset.from_dict({"prompt": [template.format(prompt=problems[i].prompt) for i in order],
                                 "problem": order})

    def reward(prompts: list[str], completions: list[str], problem: list[int], **_: Any) -> list[float]:
        return hacrl.task.score([problems[i] for i in problem], completions)

    trl_times: list[float] = []
    trl_generate: list[float] = []
    hacrl_sample: list[float] = []
    hacrl_update: list[float] = []
    trl_lengths: dict[int, float] = {}
    hacrl_times: list[float] = []
    hacrl_lengths: list[float] = []
    threads_seen: set[int] = set()

    class Interleave(TrainerCallback):  # type: ignore[misc]
        """Times TRL's steps end to end and runs one hacrl step between two of them."""

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            self.mark = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            trl_times.append(time.perf_counter() - self.mark)
            threads_seen.add(torch.get_num_threads())
            sampled = hacrl.totals["llama"].sample_seconds
            start = time.perf_counter()
            metrics = hacrl.train_step()["llama"]
            hacrl_times.append(time.perf_counter() - start)
            hacrl_lengths.append(metrics["completion_tokens_mean"])
            hacrl_sample.append(hacrl.totals["llama"].sample_seconds - sampled)
            hacrl_update.append(metrics["train_seconds"])
            self.mark = time.perf_counter()

        def on_log(self, _args: Any, state: Any, _control: Any, logs: dict[str, float] | None = None,
                   **k: Any) -> None:
            if logs and "completions/mean_length" in logs:
                trl_lengths[state.global_step] = float(logs["completions/mean_length"])

    config = GRPOConfig(
        output_dir=str(tmp / "trl"), per_device_train_batch_size=args.prompts * args.generations,
        num_generations=args.generations, max_completion_length=args.max_new_tokens,
        importance_sampling_level="sequence", loss_type="grpo", epsilon=3e-4, epsilon_high=4e-4, beta=0.0,
        bf16=False, gradient_checkpointing=False, learning_rate=args.lr, lr_scheduler_type="constant",
        weight_decay=0.0, max_grad_norm=1.0, num_iterations=1, steps_per_generation=1,
        gradient_accumulation_steps=1, max_steps=total, shuffle_dataset=False, use_cpu=True, report_to="none",
        logging_steps=1, save_strategy="no", seed=args.seed, temperature=1.0, top_p=1.0, top_k=0,
        disable_tqdm=True, dataloader_num_workers=0,
    )
    trl = GRPOTrainer(model=str(model_dir), reward_funcs=reward, args=config, train_dataset=dataset,
                      callbacks=[Interleave()])
    assert trl.model.dtype == torch.float32, trl.model.dtype
    assert not getattr(trl.model, "is_gradient_checkpointing", False)
    generate = trl.model.generate  # on one CPU process TRL's "unwrapped" model is this very module

    def timed_generate(*a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        out = generate(*a, **k)
        trl_generate.append(time.perf_counter() - start)
        return out

    trl.model.generate = timed_generate
    trl.train()

    completions = args.prompts * args.generations
    measured = slice(args.warmup, total)

    def summarize(times: list[float], lengths: list[float]) -> dict[str, float]:
        tokens = [2 * completions * n for n in lengths]  # generated + trained completion tokens
        per_step = [t / s for t, s in zip(tokens[measured], times[measured], strict=True)]
        return {"median_step_seconds": median(times[measured]), "steps_per_second": 1 / median(times[measured]),
                "median_tokens_per_second": median(per_step),
                "aggregate_tokens_per_second": sum(tokens[measured]) / sum(times[measured]),
                "mean_completion_tokens": sum(lengths[measured]) / len(lengths[measured]),
                "step_seconds": [round(t, 4) for t in times]}

    trl_len = [trl_lengths.get(step, float("nan")) for step in range(1, total + 1)]
    h, t = summarize(hacrl_times, hacrl_lengths), summarize(trl_times, trl_len)
    # where a step's time goes: sampling (hacrl sampler / TRL model.generate) vs the rest (update + bookkeeping)
    h["median_sampling_seconds"] = median(hacrl_sample[measured])
    h["median_update_seconds"] = median(hacrl_update[measured])
    t["median_sampling_seconds"] = median(trl_generate[measured])
    t["median_rest_seconds"] = median([a - b for a, b in zip(trl_times[measured], trl_generate[measured],
                                                              strict=True)])
    arms = {"hacrl": h, "trl": t}
    result = {
        "benchmark": "vs_trl", "command": command_line(), "machine": machine("trl", "accelerate", "datasets"),
        "settings": {"model": describe_model(model_dir), "threads": args.threads,
                     "threads_seen_during_steps": sorted(threads_seen), "prompts_per_step": args.prompts,
                     "completions_per_prompt": args.generations, "max_new_tokens": args.max_new_tokens,
                     "warmup_steps": args.warmup, "measured_steps": args.steps, "lr": args.lr, "dtype": "float32"},
        **arms,
        "throughput_ratio_tokens": h["median_tokens_per_second"] / t["median_tokens_per_second"],
        "throughput_ratio_steps": h["steps_per_second"] / t["steps_per_second"],
    }
    write_json(args.json, result)


if __name__ == "__main__":
    main()
