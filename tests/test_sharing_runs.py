"""GRAFT and SGT end to end on the test agents: transfers happen, diagnostics are logged, resume is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_run_config
from hacrl.config import config_from_dict
from hacrl.tasks.arithmetic import ArithmeticConfig, ArithmeticTask
from hacrl.tasks.base import FunctionRewardTask
from hacrl.trainer import Trainer


def coin_task() -> FunctionRewardTask:
    """A 0/1 reward that about a third of responses earn, so all-fail and mixed groups both occur."""
    arithmetic = ArithmeticTask(ArithmeticConfig(n_train=200, n_eval=20))
    return FunctionRewardTask("coin", arithmetic.train_problems(), arithmetic.eval_problems(),
                              lambda prompts, completions, **_: [float(len(c) % 3 == 0) for c in completions])


def run(out: Path, algorithm: str, steps: int, *, resume: bool = False) -> Trainer:
    cfg = tiny_run_config(out, algorithm=algorithm, steps=steps, prompts_per_step=8, minibatch_size=8)
    trainer = Trainer(config_from_dict(cfg), resume=resume, task=coin_task())
    trainer.run()
    return trainer


def train_records(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == "train"]


@pytest.mark.parametrize("algorithm", ["graft", "sgt"])
def test_rule_transfers_logs_and_resumes_exactly(tmp_path: Path, algorithm: str) -> None:
    straight = run(tmp_path / "straight", algorithm, 4)
    records = train_records(tmp_path / "straight")
    if algorithm == "graft":
        assert sum(r["share/transferred_rows"] for r in records) > 0
        assert sum(r["transfer/responses"] for r in records) > 0
        assert all(0.0 <= r["gate/pass_frac"] <= 1.0 for r in records)
        assert any(r.get("share/from_bpe/kept", 0) > 0 or r.get("share/from_char/kept", 0) > 0 for r in records)
        for r in records:  # per direction: with two agents, the one peer's numbers are the learner's totals
            peer = "bpe" if r["agent"] == "char" else "char"
            if f"gate/from_{peer}/candidates" in r:
                for key in ("gate/candidates", "gate/pass_frac", "gate/weight_mean", "transfer/responses",
                            "transfer/tokens"):
                    head, name = key.split("/")
                    assert r[f"{head}/from_{peer}/{name}"] == r[key], key
        assert any(f"transfer/from_{'bpe' if r['agent'] == 'char' else 'char'}/responses" in r for r in records)
    else:
        assert sum(r["share/sgt_pairs"] for r in records) > 0
    run(tmp_path / "resumed", algorithm, 2)
    resumed = run(tmp_path / "resumed", algorithm, 4, resume=True)
    for a, b in zip(straight.executor.workers, resumed.executor.workers, strict=True):
        for key, tensor in a.state_tensors().items():
            assert torch.equal(tensor, b.state_tensors()[key]), key
    assert sorted(r["step"] for r in train_records(tmp_path / "resumed")) == [1, 1, 2, 2, 3, 3, 4, 4]
