"""Tokens/s of hacrl's KV-cache sampler vs `model.generate` on the same batch, interleaved in one run.

Fixed-length decoding (EOS off, so every candidate produces exactly rows x new-tokens tokens) on the shared
benchmark model (the zoo's Llama + BPE agent from its HF directory, real BPE prompts of different lengths,
left-padded), with interleaved repetitions of three candidates:

* hacrl `sample` (records the untruncated per-token log-probs the trainer needs),
* `model.generate` (no log-probs),
* `model.generate` + one forward pass to get those log-probs (what a generate-based trainer needs instead).

    python benchmarks/throughput/sampler.py [--rows 64] [--new-tokens 48] [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_model_dir, command_line, describe_model, interleave, machine, median, quiet, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    quiet()
    import torch

    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hacrl.rollout.logprobs import token_logps
    from hacrl.rollout.sampler import SamplingParams, sample
    from hacrl.tasks.arithmetic import ArithmeticTask

    model_dir = bench_model_dir()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    problems = ArithmeticTask().train_problems()
    texts = [f"Question: {problems[i].prompt}\nSolution:\n" for i in range(args.rows)]
    prompts = [tok(t, add_special_tokens=False).input_ids for t in texts]
    width = max(len(p) for p in prompts)
    pad = tok.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    params = SamplingParams(max_new_tokens=args.new_tokens)
    total = args.rows * args.new_tokens

    def hacrl_sample() -> Any:
        out = sample(model, tok, prompts, params, generator=torch.Generator().manual_seed(0), eos_token_ids=[])
        assert sum(len(s.completion_ids) for s in out) == total
        return out

    def hf_generate() -> torch.Tensor:
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True,
                                 temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.new_tokens,
                                 min_new_tokens=args.new_tokens, pad_token_id=pad)
        assert out.shape == (args.rows, width + args.new_tokens)
        return out

    def hf_generate_with_logps() -> torch.Tensor:
        out = hf_generate()
        mask = torch.cat([attention_mask, torch.ones(args.rows, args.new_tokens, dtype=torch.long)], dim=1)
        with torch.no_grad():
            return token_logps(model, out, mask)[:, -args.new_tokens:]

    times = interleave({"hacrl_sample": hacrl_sample, "generate": hf_generate,
                        "generate_plus_logps": hf_generate_with_logps}, args.repeats)
    rates = {name: total / median(ts) for name, ts in times.items()}
    result = {
        "benchmark": "sampler", "command": command_line(), "machine": machine(),
        "settings": {"model": describe_model(model_dir),
                     "parameters": sum(p.numel() for p in model.parameters()), "rows": args.rows,
                     "new_tokens": args.new_tokens, "prompt_tokens": [min(map(len, prompts)), width],
                     "threads": args.threads, "repeats": args.repeats},
        "tokens_per_second": rates,
        "median_seconds": {name: median(ts) for name, ts in times.items()},
        "seconds": {name: [round(t, 4) for t in ts] for name, ts in times.items()},
        "sampler_vs_generate_ratio": rates["hacrl_sample"] / rates["generate"],
        "sampler_vs_generate_plus_logps_ratio": rates["hacrl_sample"] / rates["generate_plus_logps"],
    }
    write_json(args.json, result)


if __name__ == "__main__":
    main()
