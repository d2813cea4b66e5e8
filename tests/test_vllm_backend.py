"""The vLLM backend's samples: log-probs equal to the trainer's, seeds, stop tokens, sampling settings, side effects.

One engine per sampling temperature is shared by the whole module (an in-process engine takes seconds to start):
a Llama + BPE test agent at temperature 1 (vLLM's raw log-probs) and at 0.7 (processed log-probs).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from hacrl.config import RolloutConfig
from hacrl.models.loading import LoadedAgent, load_agent, stop_token_ids
from hacrl.rollout.sampler import SamplingParams, sample
from hacrl.tasks.arithmetic import ArithmeticTask
from vllm_support import BPE_H32, LOGP_BOUND, max_gap, needs_vllm, trainer_logps

pytestmark = needs_vllm

MAX_NEW = 24
ROLLOUT = RolloutConfig(backend="vllm", kv_cache_memory_bytes=32 << 20)


@pytest.fixture(scope="module")
def agent() -> LoadedAgent:
    return load_agent("bpe", BPE_H32, progress=False)


def _backend(agent: LoadedAgent, temperature: float) -> Any:
    from hacrl.rollout.vllm_backend import VLLMBackend

    return VLLMBackend(agent.model, agent.tokenizer, agent.path, stop_token_ids(agent.tokenizer, agent.model), ROLLOUT,
                       SamplingParams(temperature=temperature, max_new_tokens=MAX_NEW), agent_name="bpe")


@pytest.fixture(scope="module")
def process_before() -> dict[str, Any]:
    """The trainer process's thread count, `set_num_threads` and RNG states before any engine starts."""
    return {"threads": torch.get_num_threads(), "set_threads": torch.set_num_threads,
            "torch_rng": torch.get_rng_state(), "py_rng": random.getstate(), "preload": os.environ.get("LD_PRELOAD")}


@pytest.fixture(scope="module")
def engine(agent: LoadedAgent, process_before: dict[str, Any]) -> Iterator[Any]:
    backend = _backend(agent, 1.0)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def engine_t07(agent: LoadedAgent, engine: Any) -> Iterator[Any]:
    backend = _backend(agent, 0.7)
    yield backend
    backend.close()


def _prompts(agent: LoadedAgent, n: int) -> list[list[int]]:
    problems = ArithmeticTask().train_problems()[:n]
    return [agent.encode_prompt(p.prompt) for p in problems]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_building_an_engine_leaves_the_trainer_process_as_it_was(engine: Any, process_before: dict[str, Any]) -> None:
    """vLLM's CPU worker swaps torch.set_num_threads for a no-op, reseeds the global RNGs and extends LD_PRELOAD
    for child processes; all of it is undone."""
    assert torch.set_num_threads is process_before["set_threads"]
    assert torch.get_num_threads() == process_before["threads"]
    assert torch.equal(torch.get_rng_state(), process_before["torch_rng"])
    assert random.getstate() == process_before["py_rng"]
    assert os.environ.get("LD_PRELOAD") == process_before["preload"]
    torch.set_num_threads(2)  # still a working function
    assert torch.get_num_threads() == 2
    torch.set_num_threads(process_before["threads"])


def test_engine_logprobs_equal_the_trainer_forward_pass(agent: LoadedAgent, engine: Any) -> None:
    prompts = _prompts(agent, 16) * 2
    samples = engine.generate(prompts, SamplingParams(max_new_tokens=MAX_NEW), generator=_gen(0))
    assert engine.training_mode == "raw_logprobs"
    gap = max_gap([s.token_logps for s in samples], trainer_logps(agent.model, samples, agent.tokenizer.pad_token_id))
    assert gap < LOGP_BOUND, f"engine vs trainer log-prob gap {gap:.2e}"
    assert sum(len(s.completion_ids) for s in samples) > 200  # enough tokens to mean something


def test_top_p_and_top_k_change_what_is_sampled_not_the_recorded_logprobs(agent: LoadedAgent, engine: Any) -> None:
    """Raw log-probs are taken before truncation, so they stay the full distribution's, as the trainer's are."""
    prompts = _prompts(agent, 16)
    params = SamplingParams(top_p=0.8, top_k=5, max_new_tokens=MAX_NEW)
    samples = engine.generate(prompts, params, generator=_gen(1))
    full = trainer_logps(agent.model, samples, agent.tokenizer.pad_token_id)
    assert max_gap([s.token_logps for s in samples], full) < LOGP_BOUND
    # every sampled token is among the 5 most likely under the model (top_k reached the engine)
    model_top5 = _top_k_sets(agent, samples, 5)
    assert all(t in top for s, tops in zip(samples, model_top5, strict=True)
               for t, top in zip(s.completion_ids, tops, strict=True))


def _top_k_sets(agent: LoadedAgent, samples: list[Any], k: int) -> list[list[set[int]]]:
    out = []
    with torch.no_grad():
        for s in samples:
            ids = torch.tensor([list(s.prompt_ids) + list(s.completion_ids)])
            logits = agent.model(input_ids=ids).logits[0, len(s.prompt_ids) - 1:-1]
            values = torch.topk(logits, k, dim=-1).values[:, -1:]
            out.append([set((row >= v).nonzero().flatten().tolist()) for row, v in zip(logits, values, strict=True)])
    return out


def test_top_k_one_is_greedy_in_both_backends(agent: LoadedAgent, engine: Any) -> None:
    prompts = _prompts(agent, 8)
    greedy = engine.generate(prompts, SamplingParams(greedy=True, max_new_tokens=MAX_NEW))
    top1 = engine.generate(prompts, SamplingParams(top_k=1, max_new_tokens=MAX_NEW), generator=_gen(2))
    inprocess = sample(agent.model, agent.tokenizer, prompts, SamplingParams(top_k=1, max_new_tokens=MAX_NEW),
                       generator=_gen(2), eos_token_ids=engine.stop_token_ids)
    assert [s.completion_ids for s in top1] == [s.completion_ids for s in greedy]
    assert [s.completion_ids for s in inprocess] == [s.completion_ids for s in greedy]


def test_greedy_evaluation_matches_the_in_process_sampler(agent: LoadedAgent, engine: Any) -> None:
    prompts = _prompts(agent, 16)
    params = SamplingParams(greedy=True, max_new_tokens=MAX_NEW)
    ours = engine.generate(prompts, params)
    theirs = sample(agent.model, agent.tokenizer, prompts, params, eos_token_ids=engine.stop_token_ids)
    assert [(s.completion_ids, s.text, s.finish_reason) for s in ours] == \
        [(s.completion_ids, s.text, s.finish_reason) for s in theirs]
    # greedy records temperature-1 log-probs, as the in-process sampler does
    assert max_gap([s.token_logps for s in ours], [s.token_logps for s in theirs]) < LOGP_BOUND


def test_samples_have_the_in_process_layout(agent: LoadedAgent, engine: Any) -> None:
    prompts = _prompts(agent, 16) * 2
    samples = engine.generate(prompts, SamplingParams(max_new_tokens=MAX_NEW), generator=_gen(3))
    stop = set(engine.stop_token_ids)
    assert {s.finish_reason for s in samples} == {"stop", "length"}, "the test needs both kinds of endings"
    for prompt, s in zip(prompts, samples, strict=True):
        assert s.prompt_ids == prompt
        assert len(s.token_logps) == len(s.completion_ids)
        assert s.text == agent.tokenizer.decode(s.completion_ids, skip_special_tokens=True)
        if s.finish_reason == "stop":
            assert s.completion_ids[-1] in stop and not stop & set(s.completion_ids[:-1])
        else:
            assert len(s.completion_ids) == MAX_NEW and not stop & set(s.completion_ids)


def test_same_seeds_give_the_same_samples_and_seeds_come_from_the_generator(agent: LoadedAgent,
                                                                            engine: Any) -> None:
    prompts = _prompts(agent, 8) * 2
    params = SamplingParams(max_new_tokens=MAX_NEW)
    gen = _gen(4)
    state = gen.get_state()
    first = engine.generate(prompts, params, generator=gen)
    after_first = gen.get_state()
    assert not torch.equal(after_first, state), "seeds must be drawn from the worker's generator"
    gen.set_state(state)  # what a resume does: the checkpoint restores this state
    again = engine.generate(prompts, params, generator=gen)
    assert torch.equal(gen.get_state(), after_first)
    assert [(s.completion_ids, s.token_logps) for s in first] == [(s.completion_ids, s.token_logps) for s in again]
    other = engine.generate(prompts, params, generator=_gen(5))
    assert [s.completion_ids for s in other] != [s.completion_ids for s in first]
    # the repeated prompts got their own seeds, so repeats differ (a group of G different responses)
    assert [s.completion_ids for s in first[:8]] != [s.completion_ids for s in first[8:]]


def test_temperature_other_than_one_uses_processed_logprobs(agent: LoadedAgent, engine: Any, engine_t07: Any) -> None:
    prompts = _prompts(agent, 16) * 2
    samples = engine_t07.generate(prompts, SamplingParams(temperature=0.7, max_new_tokens=MAX_NEW),
                                  generator=_gen(6))
    assert engine_t07.training_mode == "processed_logprobs"
    pad = agent.tokenizer.pad_token_id
    scaled = trainer_logps(agent.model, samples, pad, temperature=0.7)
    assert max_gap([s.token_logps for s in samples], scaled) < LOGP_BOUND
    # the same tokens under the temperature-1 distribution are far off: the mode matters
    assert max_gap([s.token_logps for s in samples], trainer_logps(agent.model, samples, pad)) > 0.1
    # and the temperature-1 engine refuses a temperature its log-prob mode cannot report
    with pytest.raises(ValueError, match="raw_logprobs"):
        engine.generate(prompts[:1], SamplingParams(temperature=0.7, max_new_tokens=4), generator=_gen(0))


def test_why_truncation_at_another_temperature_is_refused(agent: LoadedAgent, engine_t07: Any) -> None:
    """vLLM's processed log-probs renormalise over the top-p set, so they are not the trainer's numbers; the
    config therefore refuses top_p / top_k with temperature != 1 on the vllm backend."""
    vllm = engine_t07._vllm
    prompts = _prompts(agent, 8)
    params = vllm.SamplingParams(temperature=0.7, top_p=0.5, max_tokens=MAX_NEW, logprobs=0, detokenize=False,
                                 seed=0, stop_token_ids=engine_t07.stop_token_ids)
    outputs = engine_t07.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    samples = engine_t07._samples(prompts, outputs)
    scaled = trainer_logps(agent.model, samples, agent.tokenizer.pad_token_id, temperature=0.7)
    assert max_gap([s.token_logps for s in samples], scaled) > 0.05
    assert all(e >= f - LOGP_BOUND for s, fs in zip(samples, scaled, strict=True)
               for e, f in zip(s.token_logps, fs, strict=True)), "renormalised over fewer tokens: never smaller"
