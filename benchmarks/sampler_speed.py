"""Tokens/s of `hacrl.rollout.sampler.sample` vs `model.generate` on the same batch (CPU, 1 thread).

Both decode exactly `--new-tokens` tokens for every row (no EOS stopping), from the same left-padded prompts
of different lengths, with plain temperature-1 sampling. A third line adds the extra forward pass that
`generate` needs to produce the untruncated per-token log-probs the sampler records for free.

    python benchmarks/sampler_speed.py [--rows 64] [--new-tokens 48] [--repeats 5] [--hidden 64] [--layers 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hacrl.models.tokenizers import build_char_tokenizer
from hacrl.rollout.logprobs import token_logps
from hacrl.rollout.sampler import SamplingParams, sample


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tok = build_char_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    n_params = sum(p.numel() for p in model.parameters())
    texts = [f"Q: What is {i * 7} + {i * i}?\nA: " for i in range(args.rows)]
    prompts = [tok(t, add_special_tokens=False).input_ids for t in texts]
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    params = SamplingParams(max_new_tokens=args.new_tokens)
    total_tokens = args.rows * args.new_tokens

    def ours() -> object:
        out = sample(model, tok, prompts, params, generator=torch.Generator().manual_seed(0), eos_token_ids=[])
        assert sum(len(s.completion_ids) for s in out) == total_tokens
        return out

    def hf_generate() -> torch.Tensor:
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                pad_token_id=tok.pad_token_id,
            )
        assert out.shape == (args.rows, width + args.new_tokens)
        return out

    def hf_generate_with_logps() -> torch.Tensor:
        out = hf_generate()
        mask = torch.cat([attention_mask, torch.ones(args.rows, args.new_tokens, dtype=torch.long)], dim=1)
        with torch.no_grad():
            return token_logps(model, out, mask)[:, -args.new_tokens :]

    print(
        f"tiny Llama: {n_params / 1e6:.2f} M params, hidden {args.hidden}, {args.layers} layers, vocab {len(tok)}; "
        f"{args.rows} rows x {args.new_tokens} new tokens, prompts {min(map(len, prompts))}-{width} tokens, "
        f"{torch.get_num_threads()} thread(s), median of {args.repeats}"
    )
    results = {
        "hacrl sample (with log-probs)": _median_seconds(ours, args.repeats),
        "model.generate (no log-probs)": _median_seconds(hf_generate, args.repeats),
        "model.generate + token_logps forward": _median_seconds(hf_generate_with_logps, args.repeats),
    }
    base = results["hacrl sample (with log-probs)"]
    for name, seconds in results.items():
        print(
            f"{name:40s} {seconds * 1e3:8.1f} ms  {total_tokens / seconds:9.0f} tok/s  "
            f"(time / ours = {seconds / base:.2f})"
        )


if __name__ == "__main__":
    main()
