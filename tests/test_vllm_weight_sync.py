"""Weight sync into a running engine: after each push it computes what a freshly built engine on those weights
computes, bit for bit; pushes are lazy (one per generate, however many updates) and the prefix cache is dropped.

One running engine (a GPT-2 + character-tokenizer test agent) is updated over three optimizer steps; after each,
a fresh engine is built from the saved weights for the comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hacrl.config import RolloutConfig
from hacrl.models.loading import LoadedAgent, load_agent, stop_token_ids
from hacrl.rollout.sampler import SamplingParams
from hacrl.tasks.arithmetic import ArithmeticTask
from vllm_support import CHAR_H32, LOGP_BOUND, max_gap, needs_vllm, trainer_logps

pytestmark = needs_vllm

ROLLOUT = RolloutConfig(backend="vllm", kv_cache_memory_bytes=32 << 20)
PARAMS = SamplingParams(max_new_tokens=16)


def _backend(agent: LoadedAgent, model_dir: Path) -> Any:
    from hacrl.rollout.vllm_backend import VLLMBackend

    return VLLMBackend(agent.model, agent.tokenizer, model_dir, stop_token_ids(agent.tokenizer, agent.model), ROLLOUT,
                       PARAMS, agent_name="char")


BLOCK = 128
"""Tokens per KV block of vLLM's CPU backend: only whole blocks enter the prefix cache."""


def _long_prompts(agent: LoadedAgent) -> list[list[int]]:
    """Four prompts of 160 tokens (one whole KV block each, so the prefix cache holds them), each twice."""
    problems = ArithmeticTask().train_problems()
    prompts = [agent.encode_prompt(" ; ".join(p.prompt for p in problems[10 * i:10 * i + 30]))[-160:]
               for i in range(4)]
    assert all(len(p) == 160 > BLOCK for p in prompts)
    return prompts * 2


def _update(agent: LoadedAgent, optimizer: torch.optim.Optimizer, sequences: list[list[int]]) -> None:
    """One real optimizer step on the NLL of `sequences` (they have equal length)."""
    ids = torch.tensor(sequences)
    loss = agent.model(input_ids=ids, labels=ids).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_pushed_weights_equal_a_fresh_engine_over_several_updates(tmp_path: Path) -> None:
    agent = load_agent("char", CHAR_H32, progress=False)
    engine = _backend(agent, agent.path)
    prompts = _long_prompts(agent)
    fixed = [p + [agent.tokenizer.convert_tokens_to_ids(c) for c in "12+34=46"] for p in prompts[:4]]
    cut = [len(p) for p in prompts[:4]]
    optimizer = torch.optim.AdamW(agent.model.parameters(), lr=3e-2)
    engine.generate(prompts, PARAMS, generator=torch.Generator().manual_seed(0))  # fills the prefix cache

    before = engine.score(fixed, cut)
    for update in range(3):
        for _ in range(2):  # two optimizer steps between generates: one push covers both
            _update(agent, optimizer, fixed)
            engine.sync_weights()
        assert engine.stale
        # not pushed yet: the engine holds its own copy, not a view of the learner's tensors
        assert engine.score(fixed, cut) == before
        pushes = engine.pushes
        samples = engine.generate(prompts, PARAMS, generator=torch.Generator().manual_seed(update))
        assert engine.pushes == pushes + 1 and not engine.stale
        engine.generate(prompts[:2], PARAMS, generator=torch.Generator().manual_seed(9))
        assert engine.pushes == pushes + 1, "no push without an update in between"

        saved = tmp_path / f"update-{update}"
        agent.model.save_pretrained(saved, safe_serialization=True)
        fresh = _backend(agent, saved)
        try:
            again = fresh.generate(prompts, PARAMS, generator=torch.Generator().manual_seed(update))
            # bit-identical samples: first-token log-probs would differ if stale prompt blocks had been reused
            assert [(s.completion_ids, s.token_logps) for s in samples] == \
                [(s.completion_ids, s.token_logps) for s in again]
            after = engine.score(fixed, cut)
            assert after == fresh.score(fixed, cut)
        finally:
            fresh.close()
        assert after != before, "the updates did not change the engine's numbers; the test would prove nothing"
        assert max_gap([s.token_logps for s in samples],
                       trainer_logps(agent.model, samples, agent.tokenizer.pad_token_id)) < LOGP_BOUND
        before = after
    engine.close()


def test_the_prefix_cache_must_be_reset_after_a_push() -> None:
    """Why `push_weights` resets the prefix cache: without it, prompt blocks cached under the old weights are
    reused, so the first generated token's log-prob is computed from stale keys and values."""
    agent = load_agent("char", CHAR_H32, progress=False)
    engine = _backend(agent, agent.path)
    prompts = _long_prompts(agent)
    engine.generate(prompts, PARAMS, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(agent.model.parameters(), lr=3e-2)
    _update(agent, optimizer, prompts[:4])
    weights = [(name, tensor.detach()) for name, tensor in agent.model.state_dict().items()]
    engine.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})  # a push WITHOUT the reset
    stale = engine.generate(prompts, PARAMS, generator=torch.Generator().manual_seed(1))
    reference = trainer_logps(agent.model, stale, agent.tokenizer.pad_token_id)
    first_token_gap = max(abs(s.token_logps[0] - r[0]) for s, r in zip(stale, reference, strict=True))
    engine.llm.reset_prefix_cache()
    fresh = engine.generate(prompts, PARAMS, generator=torch.Generator().manual_seed(1))
    reference = trainer_logps(agent.model, fresh, agent.tokenizer.pad_token_id)
    assert max_gap([s.token_logps for s in fresh], reference) < LOGP_BOUND
    assert first_token_gap > 100 * LOGP_BOUND
    engine.close()


def test_process_wide_sleep_and_wake_with_two_engines() -> None:
    """Two engines in one process, each sleeping after and waking before its generates. On a CPU vLLM's sleep only
    pauses the engine's scheduler and drops its prefix cache (the memory part needs CUDA, where `enable_sleep_mode`
    turns this on), so this checks the bookkeeping: whichever engine slept last is woken before the other
    generates, nothing hangs, and every engine keeps returning what it returned awake."""
    from hacrl.models.loading import load_agent as load
    from hacrl.rollout import vllm_backend

    agents = [load("char", CHAR_H32, progress=False), load("bpe", "zoo:test-llama-bpe-h32", progress=False)]
    engines = [_backend(a, a.path) for a in agents]
    problems = ArithmeticTask().train_problems()[:4]
    prompts = [[a.encode_prompt(p.prompt) for p in problems] for a in agents]
    awake = [e.generate(p, PARAMS, generator=torch.Generator().manual_seed(0)) for e, p in zip(engines, prompts,
                                                                                             strict=True)]
    for engine in engines:
        engine.sleep_enabled = True  # what enable_sleep_mode gives on CUDA
    try:
        for _ in range(2):
            for engine, batch, expected in zip(engines, prompts, awake, strict=True):
                got = engine.generate(batch, PARAMS, generator=torch.Generator().manual_seed(0))
                assert [s.completion_ids for s in got] == [s.completion_ids for s in expected]
                assert vllm_backend._sleeper is engine.llm  # it slept after its generate, and owns the sleep
    finally:
        for engine in engines:
            engine.close()
    assert vllm_backend._sleeper is None  # the last close woke the process before shutting the engines down
