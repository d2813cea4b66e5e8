"""The sampler's log-probs, padding, stopping and randomness, on tiny random GPT-2 and Llama models.

The central property: what the sampler records at rollout time equals what the trainer recomputes with
`hacrl.rollout.logprobs.token_logps` on the same tokens — otherwise self importance ratios would not start
at 1 and GSPO's 3e-4 clip would discard them.
"""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from hacrl.models.tokenizers import build_char_tokenizer
from hacrl.rollout.logprobs import completion_logps, masked_mean, token_logps
from hacrl.rollout.sampler import Sample, SamplingParams, sample

torch.set_num_threads(1)

TOKENIZER = build_char_tokenizer()
VOCAB = len(TOKENIZER)
EOS = TOKENIZER.eos_token_id
PAD = TOKENIZER.pad_token_id


def _gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=128,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=TOKENIZER.bos_token_id,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    return GPT2LMHeadModel(config)


def _llama() -> LlamaForCausalLM:
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=TOKENIZER.bos_token_id,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    return LlamaForCausalLM(config)


MODELS = {"gpt2": _gpt2(), "llama": _llama()}


@pytest.fixture(params=sorted(MODELS))
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return MODELS[request.param]


def _prompts(*texts: str) -> list[list[int]]:
    return [TOKENIZER(t, add_special_tokens=False).input_ids for t in texts]


PROMPTS = _prompts("1+2=", "123+456=", "7=", "Q: 99*3\nA: ")


def _padded(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded prompt+completion batch plus its completion mask (aligned with token_logps)."""
    seqs = [s.prompt_ids + s.completion_ids for s in samples]
    width = max(len(q) for q in seqs)
    ids = torch.tensor([[PAD] * (width - len(q)) + q for q in seqs])
    mask = torch.tensor([[0] * (width - len(q)) + [1] * len(q) for q in seqs])
    cmask = torch.zeros(len(seqs), width - 1, dtype=torch.bool)
    for i, s in enumerate(samples):
        cmask[i, width - 1 - len(s.completion_ids) :] = True
    return ids, mask, cmask


def _fresh_logps(model: torch.nn.Module, samples: list[Sample], temperature: float) -> list[torch.Tensor]:
    ids, mask, cmask = _padded(samples)
    model.eval()
    with torch.no_grad():
        lp = token_logps(model, ids, mask, temperature=temperature)
    return [lp[i][cmask[i]] for i in range(len(samples))]


# ---------------------------------------------------------------- SamplingParams


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, "max_new_tokens"),
        ({"greedy": 1}, "greedy"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.0}, "top_k"),
    ],
)
def test_sampling_params_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_sample_mean_logp_and_empty_guard() -> None:
    s = Sample([1], [5, 6], [-1.0, -3.0], "ab", "length")
    assert s.mean_logp == pytest.approx(-2.0)
    assert s.truncated
    assert Sample([1], [], [], "", "length").mean_logp == 0.0


def test_rejects_empty_prompt() -> None:
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        sample(MODELS["gpt2"], TOKENIZER, [[5], []], SamplingParams(max_new_tokens=2))


# ---------------------------------------------------------------- log-probs == trainer's forward pass


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.0, max_new_tokens=24),
        SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=24),
        SamplingParams(greedy=True, max_new_tokens=24),
    ],
    ids=["t1", "t0.7-p0.9", "greedy"],
)
def test_logps_equal_fresh_forward_pass_with_left_padding(model: torch.nn.Module, params: SamplingParams) -> None:
    gen = torch.Generator().manual_seed(123)
    samples = sample(model, TOKENIZER, PROMPTS, params, generator=gen)
    assert len({len(s.prompt_ids) for s in samples}) > 1  # genuinely different prompt lengths
    temperature = 1.0 if params.greedy else params.temperature
    for s, ref in zip(samples, _fresh_logps(model, samples, temperature), strict=True):
        assert len(s.token_logps) == len(s.completion_ids) > 0
        torch.testing.assert_close(torch.tensor(s.token_logps), ref, atol=1e-5, rtol=0)


def test_completion_logps_matches_token_logps(model: torch.nn.Module) -> None:
    samples = sample(
        model, TOKENIZER, PROMPTS, SamplingParams(max_new_tokens=12), generator=torch.Generator().manual_seed(5)
    )
    ids, mask, cmask = _padded(samples)
    model.eval()
    with torch.no_grad():
        full = token_logps(model, ids, mask)
        part = completion_logps(model, ids, mask, cmask)
    torch.testing.assert_close(part[cmask], full[cmask], atol=1e-5, rtol=0)
    assert (part[~cmask] == 0).all()
    means = masked_mean(part, cmask)
    torch.testing.assert_close(means, torch.tensor([s.mean_logp for s in samples]), atol=1e-5, rtol=0)


def test_token_logps_has_grad() -> None:
    model = MODELS["llama"]
    ids = torch.tensor([[PAD, 10, 11, 12], [13, 14, 15, 16]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    out = token_logps(model, ids, mask)
    assert out.shape == (2, 3) and out.requires_grad
    out[:, 1:].sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)


# ---------------------------------------------------------------- padding, batching, randomness


def test_greedy_padded_batch_equals_unbatched(model: torch.nn.Module) -> None:
    params = SamplingParams(greedy=True, max_new_tokens=16)
    batched = sample(model, TOKENIZER, PROMPTS, params)
    for prompt, row in zip(PROMPTS, batched, strict=True):
        (alone,) = sample(model, TOKENIZER, [prompt], params)
        assert alone.completion_ids == row.completion_ids
        torch.testing.assert_close(torch.tensor(alone.token_logps), torch.tensor(row.token_logps), atol=1e-5, rtol=0)
    chunked = sample(model, TOKENIZER, PROMPTS, params, batch_size=3)
    assert [s.completion_ids for s in chunked] == [s.completion_ids for s in batched]


def test_seeded_generator_is_reproducible(model: torch.nn.Module) -> None:
    params = SamplingParams(temperature=1.3, max_new_tokens=16)
    a = sample(model, TOKENIZER, PROMPTS * 2, params, generator=torch.Generator().manual_seed(7))
    b = sample(model, TOKENIZER, PROMPTS * 2, params, generator=torch.Generator().manual_seed(7))
    c = sample(model, TOKENIZER, PROMPTS * 2, params, generator=torch.Generator().manual_seed(8))
    assert [(s.completion_ids, s.token_logps, s.text) for s in a] == [
        (s.completion_ids, s.token_logps, s.text) for s in b
    ]
    assert [s.completion_ids for s in a] != [s.completion_ids for s in c]
    # The global RNG is not consumed when a generator is given.
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    sample(model, TOKENIZER, PROMPTS, params, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.rand(1), expected)


def test_tiny_top_p_behaves_like_greedy(model: torch.nn.Module) -> None:
    greedy = sample(model, TOKENIZER, PROMPTS, SamplingParams(greedy=True, max_new_tokens=16))
    nucleus = sample(
        model,
        TOKENIZER,
        PROMPTS,
        SamplingParams(top_p=1e-6, max_new_tokens=16),
        generator=torch.Generator().manual_seed(3),
    )
    assert [s.completion_ids for s in nucleus] == [s.completion_ids for s in greedy]
    # Untruncated log-probs: identical to greedy's (both temperature 1), not log(1) = 0.
    for g, n in zip(greedy, nucleus, strict=True):
        torch.testing.assert_close(torch.tensor(n.token_logps), torch.tensor(g.token_logps), atol=1e-6, rtol=0)
        assert max(n.token_logps) < -1e-3


def test_top_k_samples_among_the_k_most_likely_and_records_full_logprobs(model: torch.nn.Module) -> None:
    assert SamplingParams(top_k=None).top_k == 0 and not SamplingParams(top_k=0).truncates
    greedy = sample(model, TOKENIZER, PROMPTS, SamplingParams(greedy=True, max_new_tokens=16))
    top1 = sample(model, TOKENIZER, PROMPTS, SamplingParams(top_k=1, max_new_tokens=16),
                  generator=torch.Generator().manual_seed(3))
    assert [s.completion_ids for s in top1] == [s.completion_ids for s in greedy]
    top3 = sample(model, TOKENIZER, PROMPTS, SamplingParams(top_k=3, temperature=1.5, max_new_tokens=16),
                  generator=torch.Generator().manual_seed(4))
    assert len({tuple(s.completion_ids) for s in top3}) > 1
    with torch.no_grad():
        for s in top3:
            ids = torch.tensor([s.prompt_ids + s.completion_ids])
            logits = model(input_ids=ids).logits[0, len(s.prompt_ids) - 1:-1].float()
            third = torch.topk(logits, 3, dim=-1).values[:, -1]
            picked = logits.gather(-1, ids[0, len(s.prompt_ids):, None]).squeeze(-1)
            assert bool((picked >= third).all()), "a token outside the top 3 was sampled"
            full = torch.log_softmax(logits / 1.5, dim=-1).gather(-1, ids[0, len(s.prompt_ids):, None]).squeeze(-1)
            torch.testing.assert_close(torch.tensor(s.token_logps), full, atol=1e-5, rtol=0)


def test_restores_training_mode(model: torch.nn.Module) -> None:
    model.train()
    sample(model, TOKENIZER, PROMPTS[:1], SamplingParams(max_new_tokens=2), generator=torch.Generator())
    assert model.training
    model.eval()
    sample(model, TOKENIZER, PROMPTS[:1], SamplingParams(max_new_tokens=2), generator=torch.Generator())
    assert not model.training


# ---------------------------------------------------------------- stopping


def test_eos_stop_and_finish_reasons(model: torch.nn.Module) -> None:
    # Near-uniform sampling over ~100 tokens for 40 steps: some rows hit the tokenizer's EOS, some don't.
    params = SamplingParams(temperature=20.0, max_new_tokens=40)
    samples = sample(model, TOKENIZER, PROMPTS * 8, params, generator=torch.Generator().manual_seed(11))
    reasons = {s.finish_reason for s in samples}
    assert reasons == {"stop", "length"}
    for s in samples:
        assert len(s.token_logps) == len(s.completion_ids)
        if s.finish_reason == "stop":
            assert s.completion_ids[-1] == EOS and EOS not in s.completion_ids[:-1]
            assert len(s.completion_ids) <= params.max_new_tokens
        else:
            assert len(s.completion_ids) == params.max_new_tokens and EOS not in s.completion_ids
        assert s.text == TOKENIZER.decode(s.completion_ids, skip_special_tokens=True)
    # The EOS token's log-prob is recorded and matches the trainer's.
    stopped = [s for s in samples if s.finish_reason == "stop"]
    for s, ref in zip(stopped, _fresh_logps(model, stopped, 20.0), strict=True):
        torch.testing.assert_close(torch.tensor(s.token_logps), ref, atol=1e-5, rtol=0)


def test_custom_stop_ids_stop_each_row_where_it_emits_one(model: torch.nn.Module) -> None:
    params = SamplingParams(greedy=True, max_new_tokens=10)
    free = sample(model, TOKENIZER, PROMPTS, params)
    stop_token = free[0].completion_ids[3]
    stopped = sample(model, TOKENIZER, PROMPTS, params, eos_token_ids=[stop_token])
    for f, s in zip(free, stopped, strict=True):
        if stop_token in f.completion_ids:
            cut = f.completion_ids.index(stop_token) + 1
            assert s.finish_reason == "stop" and s.completion_ids == f.completion_ids[:cut]
            assert s.token_logps == pytest.approx(f.token_logps[:cut], abs=1e-6)
        else:
            assert s.finish_reason == "length" and s.completion_ids == f.completion_ids


def test_batch_stops_once_every_row_finished(model: torch.nn.Module) -> None:
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        out = sample(
            model,
            TOKENIZER,
            PROMPTS,
            SamplingParams(max_new_tokens=30),
            generator=torch.Generator().manual_seed(0),
            eos_token_ids=range(VOCAB),
        )
    finally:
        handle.remove()
    assert len(calls) == 1  # the prefill only: every row stopped on its first token
    assert all(s.finish_reason == "stop" and len(s.completion_ids) == 1 for s in out)
