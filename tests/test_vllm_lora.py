"""A LoRA agent's vLLM engine: after a push it computes what an engine built from the merged weights computes,
bit for bit, and its log-probs are the trainer's (adapters unmerged) to within the backend's bound.

Both test architectures: GPT-2 (Conv1D layers, whose LoRA deltas are stored transposed, and which vLLM's own LoRA
support does not cover) and Llama.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from hacrl.config import LoraConfig, RolloutConfig
from hacrl.models.loading import load_agent, stop_token_ids
from hacrl.models.lora import apply_lora
from hacrl.rollout.sampler import SamplingParams
from hacrl.tasks.arithmetic import ArithmeticTask
from vllm_support import BPE_H32, CHAR_H32, LOGP_BOUND, max_gap, needs_vllm, trainer_logps

pytestmark = needs_vllm

ROLLOUT = RolloutConfig(backend="vllm", kv_cache_memory_bytes=32 << 20)
PARAMS = SamplingParams(max_new_tokens=16)


@pytest.mark.parametrize("recipe", [CHAR_H32, BPE_H32])
def test_a_lora_agents_engine_runs_the_merged_weights(recipe: str, tmp_path: Path) -> None:
    from hacrl.rollout.vllm_backend import VLLMBackend

    agent = load_agent("a", recipe, progress=False)
    model = apply_lora(agent.model, LoraConfig(r=4), seed=0)
    stops = stop_token_ids(agent.tokenizer, model)
    engine = VLLMBackend(model, agent.tokenizer, agent.path, stops, ROLLOUT, PARAMS, agent_name="a")
    prompts = [agent.encode_prompt(p.prompt) for p in ArithmeticTask().train_problems()[:6]]
    first = engine.generate(prompts, PARAMS, generator=torch.Generator().manual_seed(0))
    fixed, fixed_cut = [s.prompt_ids + s.completion_ids for s in first], [len(s.prompt_ids) for s in first]
    before = engine.score(fixed, fixed_cut)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    batch = torch.tensor([p[:6] for p in prompts])
    for _ in range(2):
        optimizer.zero_grad()
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        engine.sync_weights()
    samples = engine.generate(prompts, PARAMS, generator=torch.Generator().manual_seed(1))
    assert engine.pushes == 1
    assert engine.score(fixed, fixed_cut) != before, "the updates changed nothing; the test would prove nothing"
    assert max_gap([s.token_logps for s in samples],
                   trainer_logps(model, samples, agent.tokenizer.pad_token_id)) < LOGP_BOUND

    merged = tmp_path / "merged"
    copy.deepcopy(model).merge_and_unload().save_pretrained(merged, safe_serialization=True)
    fresh = VLLMBackend(load_agent("a", recipe, progress=False).model, agent.tokenizer, merged, stops, ROLLOUT,
                        PARAMS, agent_name="fresh")
    try:
        again = fresh.generate(prompts, PARAMS, generator=torch.Generator().manual_seed(1))
        assert [(s.completion_ids, s.token_logps) for s in samples] == [(s.completion_ids, s.token_logps)
                                                                       for s in again]
        sequences = [s.prompt_ids + s.completion_ids for s in samples]
        cut = [len(s.prompt_ids) for s in samples]
        assert engine.score(sequences, cut) == fresh.score(sequences, cut)
    finally:
        fresh.close()
        engine.close()
