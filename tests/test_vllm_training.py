"""HACPO on `backend: vllm` end to end: two agents with different tokenizers, exact resume, the Ray executor.

The agents are the zoo's head-size-32 test agents: GPT-2 with a character tokenizer and Llama with a byte-level
BPE, each sampling from its own in-process vLLM engine and learning from the shared pool.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import tiny_run_config
from hacrl.config import config_from_dict
from hacrl.trainer import Trainer
from hacrl.workers import AgentWorker
from vllm_support import BPE_H32, CHAR_H32, LOGP_BOUND, graded_task, max_gap, needs_vllm, trainer_logps, vllm_rollout

pytestmark = needs_vllm

HAS_RAY = __import__("importlib").util.find_spec("ray") is not None


def _config(out: Path, steps: int, executor: str = "sequential") -> dict[str, Any]:
    cfg = tiny_run_config(out, steps=steps, agents=[("char", CHAR_H32), ("bpe", BPE_H32)]) | {
        "executor": executor, "threads": 1}
    for agent in cfg["agents"]:
        agent["rollout"] = vllm_rollout()
    cfg["agents"][0]["rollout"]["enable_sleep_mode"] = True  # a no-op on a CPU (noted once in the log)
    return cfg


def _run(cfg: dict[str, Any], *, resume: bool = False) -> tuple[Trainer, list[dict[str, torch.Tensor]]]:
    trainer = Trainer(config_from_dict(cfg), resume=resume, task=graded_task())
    try:
        trainer.run()
        return trainer, trainer.executor.call(AgentWorker.state_tensors, [()] * trainer.n)
    finally:
        if executor_is_remote(trainer):
            trainer.close()


def executor_is_remote(trainer: Trainer) -> bool:
    return not hasattr(trainer.executor, "workers")


def _assert_same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]], what: str) -> None:
    for agent, (wa, wb) in enumerate(zip(a, b, strict=True)):
        different = [k for k in wa if not torch.equal(wa[k], wb[k])]
        assert not different, f"{what}: agent {agent} differs in {different[:5]}"


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Trainer, list[dict[str, torch.Tensor]]]]:
    trainer, weights = _run(_config(tmp_path_factory.mktemp("vllm-2"), 2))
    yield trainer, weights
    trainer.close()


def test_hacpo_trains_two_heterogeneous_agents_on_vllm(two_steps: tuple[Trainer, Any]) -> None:
    trainer, _ = two_steps
    workers = trainer.executor.workers  # type: ignore[attr-defined]
    assert [type(w.backend).__name__ for w in workers] == ["VLLMBackend", "VLLMBackend"]
    assert not workers[0].backend.sleep_enabled
    assert len({len(w.agent.tokenizer) for w in workers}) == 2  # two different vocabularies
    rows = [json.loads(line) for line in (trainer.out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["type"] == "train"]
    assert {(r["step"], r["agent"]) for r in train} == {(s, a) for s in (1, 2) for a in ("char", "bpe")}
    for r in train:
        assert r["updates"] >= 2 and r["skipped_updates"] == 0
        assert math.isfinite(r["loss"]) and r["cross/count"] > 0  # each learned from the other's responses too
    # one push per generate after updates (step 2's sampling, the final evaluation), however many updates
    assert [w.backend.pushes for w in workers] == [2, 2]
    assert not any(w.backend.stale for w in workers)
    # the engines hold the learners' final weights: their samples score like the trainer's forward pass
    for w in workers:
        samples, _ = w.generate(["12+30", "7*8"], 4)
        gap = max_gap([s.token_logps for s in samples], trainer_logps(w.model, samples, w.agent.tokenizer.pad_token_id))
        assert gap < LOGP_BOUND


def test_checkpoint_and_exact_resume_with_vllm(tmp_path: Path, two_steps: tuple[Trainer, Any]) -> None:
    _, at_two = two_steps
    straight, at_four = _run(_config(tmp_path / "straight", 4))
    assert any(not torch.equal(at_two[0][k], at_four[0][k]) for k in at_two[0]), "steps 3-4 changed nothing"
    _run(_config(tmp_path / "resumed", 2))
    resumed, resumed_weights = _run(_config(tmp_path / "resumed", 4), resume=True)  # fresh engines, restored weights
    assert resumed.step == 4
    _assert_same(resumed_weights, at_four, "vLLM resumed at step 2 vs straight to step 4")
    assert resumed.capability.state_dict() == straight.capability.state_dict()
    for name in ("char", "bpe"):
        a, b = straight.totals[name], resumed.totals[name]
        assert (a.rollouts, a.generated_tokens, a.updates) == (b.rollouts, b.generated_tokens, b.updates)
    straight.close()
    resumed.close()


@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'hacrl[ray]')")
def test_ray_executor_one_engine_per_actor(tmp_path: Path, two_steps: tuple[Trainer, Any]) -> None:
    import ray

    _, sequential = two_steps
    trainer = Trainer(config_from_dict(_config(tmp_path / "ray", 2, "ray")), task=graded_task())
    try:
        info = trainer.executor.actor_info  # type: ignore[attr-defined]
        assert len({i["pid"] for i in info}) == 2  # one process, hence one engine, per agent
        assert [i["threads"] for i in info] == [1, 1]  # starting vLLM in the actor kept its torch threads
        trainer.run()
        rollout = trainer.executor.call(AgentWorker.rollout_info, [()] * 2)
        assert [(r["backend"], r["pushes"]) for r in rollout] == [("vllm", 2), ("vllm", 2)]
        _assert_same(trainer.executor.call(AgentWorker.state_tensors, [()] * 2), sequential, "Ray vs sequential, vLLM")
    finally:
        trainer.close()
    assert not ray.is_initialized()


@pytest.mark.parametrize("mode", ["recompute", "engine"])
def test_old_logprobs_policy_first_self_ratio_and_gap(tmp_path: Path, mode: str) -> None:
    """GSPO with one mini-batch per step, so every self row is in the first update. `recompute` (the vLLM default):
    the denominators are the trainer's own log-probs, so the first update's self ratios are exactly 1. `engine`:
    the engine's denominators, each response's advantage scaled by min(pi_trainer / pi_engine, 2). Both log the
    engine-trainer gap, which stays within the tests' bound."""
    cfg = tiny_run_config(tmp_path, algorithm="gspo", steps=1, minibatch_size=8,
                          agents=[("char", CHAR_H32), ("bpe", BPE_H32)]) | {"threads": 1}
    for agent in cfg["agents"]:
        agent["rollout"] = vllm_rollout() | ({"old_logprobs": mode} if mode == "engine" else {})
    trainer = Trainer(config_from_dict(cfg), task=graded_task())
    try:
        metrics = trainer.train_step()
    finally:
        trainer.close()
    for m in metrics.values():
        assert 0 <= m["rollout/logp_gap_mean"] <= m["rollout/logp_gap_max"] < LOGP_BOUND
        assert m["updates"] == 1
        if mode == "recompute":
            assert m["self/ratio_min"] == m["self/ratio_max"] == 1.0
            assert "rollout/is_weight_mean" not in m
        else:
            assert abs(m["self/ratio_mean"] - 1.0) < LOGP_BOUND and m["self/ratio_min"] != m["self/ratio_max"]
            assert abs(m["rollout/is_weight_mean"] - 1.0) < LOGP_BOUND and m["rollout/is_weight_capped_frac"] == 0
