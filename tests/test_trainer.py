"""End-to-end training on real tiny models: every preset, n = 3, exact resume, refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import tiny_run_config
from hacrl.algorithms import PRESETS
from hacrl.config import config_from_dict
from hacrl.tasks.arithmetic import ArithmeticConfig, ArithmeticTask
from hacrl.tasks.base import FunctionRewardTask
from hacrl.trainer import ResumeError, Trainer


def graded_task() -> FunctionRewardTask:
    """Arithmetic prompts with a reward that varies between responses, so every preset gets a gradient
    even from untrained test agents (TRL-style reward function: f(prompts, completions, **columns))."""
    arithmetic = ArithmeticTask(ArithmeticConfig(n_train=200, n_eval=20))

    def reward(prompts: list[str], completions: list[str], **columns: list) -> list[float]:
        assert len(columns["answer"]) == len(prompts)
        return [(len(c) % 7) / 6 for c in completions]

    return FunctionRewardTask("graded", arithmetic.train_problems(), arithmetic.eval_problems(), reward)


def weights(trainer: Trainer) -> list[dict[str, torch.Tensor]]:
    return [w.state_tensors() for w in trainer.executor.workers]


def run(cfg_dict: dict, *, resume: bool = False, task=None) -> Trainer:
    trainer = Trainer(config_from_dict(cfg_dict), resume=resume, task=task)
    trainer.run()
    return trainer


@pytest.mark.parametrize("algorithm", sorted(PRESETS))
def test_every_preset_trains(tmp_path: Path, algorithm: str) -> None:
    cfg = tiny_run_config(tmp_path, algorithm=algorithm)
    trainer = Trainer(config_from_dict(cfg), task=graded_task())
    before = weights(trainer)
    trainer.run()
    after = weights(trainer)
    for b, a in zip(before, after, strict=True):
        assert any(not torch.equal(b[k], a[k]) for k in b), f"{algorithm}: an agent's parameters did not change"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    assert {r["agent"] for r in train} == {"char", "bpe"}
    for r in train:
        assert math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"])
        assert r["updates"] >= 1
        if PRESETS[algorithm].rows in ("own", "pool"):  # GRAFT / SGT transfer only where a receiver failed
            assert (r["retokenize/cross_rows"] > 0) == PRESETS[algorithm].shares_rollouts
    g = 4 * PRESETS[algorithm].rollout_multiplier
    assert trainer.totals["char"].rollouts == 2 * g
    assert (tmp_path / "summary.json").is_file()


def test_three_agents_hacpo_logs_cross_metrics(tmp_path: Path) -> None:
    agents = [("char1", "zoo:test-gpt2-char"), ("char2", "zoo:test-gpt2-char"), ("bpe", "zoo:test-llama-bpe")]
    cfg = tiny_run_config(tmp_path, agents=agents, steps=2, minibatch_size=8)
    trainer = run(cfg, task=graded_task())
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["type"] == "train" and r["step"] == 2]
    assert len(last) == 3
    for r in last:
        assert r["retokenize/self_rows"] == 8 and r["retokenize/cross_rows"] == 16
        assert r["updates"] == 3  # 24 rows / mini-batch 8: self first, then two cross mini-batches
        assert r["cross/lower_bound_first"] == pytest.approx(0.825)
        assert r["cross/lower_bound_last"] == pytest.approx(0.85)
    assert trainer.capability.steps_seen == 2


def test_resume_gives_identical_weights(tmp_path: Path) -> None:
    straight = run(tiny_run_config(tmp_path / "a", steps=4), task=graded_task())
    run(tiny_run_config(tmp_path / "b", steps=2), task=graded_task())
    resumed = run(tiny_run_config(tmp_path / "b", steps=4), resume=True, task=graded_task())
    assert resumed.step == 4
    for a, b in zip(weights(straight), weights(resumed), strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert straight.capability.state_dict() == resumed.capability.state_dict()
    for name in ("char", "bpe"):
        a, b = straight.totals[name], resumed.totals[name]
        assert (a.rollouts, a.generated_tokens, a.updates) == (b.rollouts, b.generated_tokens, b.updates)


def test_resume_refuses_a_different_run(tmp_path: Path) -> None:
    run(tiny_run_config(tmp_path, steps=1), task=graded_task())
    other_agents = tiny_run_config(tmp_path, steps=2, agents=[("char", "zoo:test-gpt2-char"),
                                                              ("x", "zoo:test-llama-bpe")])
    with pytest.raises(ResumeError, match="agents: checkpoint"):
        Trainer(config_from_dict(other_agents), resume=True, task=graded_task())
    other_algo = tiny_run_config(tmp_path, steps=2, algorithm="naive")
    with pytest.raises(ResumeError, match="algorithm: checkpoint 'hacpo' vs config 'naive'"):
        Trainer(config_from_dict(other_algo), resume=True, task=graded_task())


@pytest.mark.parametrize("algorithm", ["hacpo", "grpo"])
def test_skipping_zero_advantage_rows_leaves_the_update_unchanged(tmp_path: Path, algorithm: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows with A = 0 carry no gradient; the fast path that skips them must give the same weights."""
    from hacrl import learner

    def binary_task() -> FunctionRewardTask:
        arithmetic = ArithmeticTask(ArithmeticConfig(n_train=200, n_eval=20))
        return FunctionRewardTask("binary", arithmetic.train_problems(), arithmetic.eval_problems(),
                                  lambda prompts, completions, **_: [
                                      1.0 if "*" in p else float(len(c) % 2)  # mul prompts: uniform groups
                                      for p, c in zip(prompts, completions, strict=True)])

    fast = run(tiny_run_config(tmp_path / "fast", algorithm=algorithm, steps=2), task=binary_task())
    records = [json.loads(line) for line in (tmp_path / "fast" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("zero_advantage_frac", 0) > 0 for r in records if r["type"] == "train")
    monkeypatch.setattr(learner, "live_rows", lambda rows, *_: learner.MiniBatch(rows, rows, 1.0))
    full = run(tiny_run_config(tmp_path / "full", algorithm=algorithm, steps=2), task=binary_task())
    for a, b in zip(weights(fast), weights(full), strict=True):
        for key in a:
            assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), key
