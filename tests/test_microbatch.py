"""Token-budget micro-batches: the accumulated gradient equals the unsplit one, for every preset and loss type.

Each case trains one step twice on the test agents, once with one forward/backward pass per mini-batch and once
with `training.max_tokens_per_microbatch` small enough to cut every mini-batch into several pieces. The optimizer
records the gradient of every update; the learning rate is so small (1e-12) that the weights stay the same to float
precision, so every update of both runs is computed on the same weights and their gradients must agree to float
tolerance (the pieces only change the order of float sums).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from conftest import nonzero_adapters, tiny_run_config
from hacrl.algorithms import PRESETS
from hacrl.config import config_from_dict
from hacrl.learner import MicrobatchBudgetError, split_by_tokens
from hacrl.tasks.arithmetic import ArithmeticConfig, ArithmeticTask
from hacrl.tasks.base import FunctionRewardTask
from hacrl.trainer import Trainer

CASES: dict[str, dict[str, Any]] = {
    **{name: {"algorithm": name} for name in PRESETS},
    "grpo_n8": {"algorithm": "grpo_n8"},
    "grpo-loss-grpo": {"algorithm": "grpo", "algo": {"loss_type": "grpo"}},
    "grpo-loss-bnpo": {"algorithm": "grpo", "algo": {"loss_type": "bnpo"}},
    "grpo-loss-dr_grpo": {"algorithm": "grpo", "algo": {"loss_type": "dr_grpo"}},
    "hacpo-kl": {"algorithm": "hacpo", "algo": {"beta": 0.1}},
    # LoRA agents (both; the KL reference is then the base with the adapters off)
    "hacpo-lora": {"algorithm": "hacpo", "lora": True},
    "grpo-lora": {"algorithm": "grpo", "lora": True},
    "hacpo-kl-lora": {"algorithm": "hacpo", "algo": {"beta": 0.1}, "lora": True},
}


class RecordingAdamW(torch.optim.AdamW):
    """AdamW that keeps a copy of every gradient it steps on."""

    log: ClassVar[list[list[list[torch.Tensor]]]] = []

    def __init__(self, params: Any, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.grads: list[list[torch.Tensor]] = []
        RecordingAdamW.log.append(self.grads)

    def step(self, closure: Any = None) -> Any:
        self.grads.append([p.grad.detach().clone() for g in self.param_groups for p in g["params"]])
        return super().step(closure)


def coin_task() -> FunctionRewardTask:
    arithmetic = ArithmeticTask(ArithmeticConfig(n_train=200, n_eval=20))
    return FunctionRewardTask("coin", arithmetic.train_problems(), arithmetic.eval_problems(),
                              lambda prompts, completions, **_: [float(len(c) % 3 == 0) for c in completions])


def gradients(tmp: Path, spec: dict[str, Any], budget: int | None, monkeypatch: pytest.MonkeyPatch) -> list:
    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    RecordingAdamW.log = []
    cfg = tiny_run_config(tmp, algorithm=spec["algorithm"], steps=1, prompts_per_step=4, minibatch_size=8,
                          max_tokens_per_microbatch=budget)
    cfg["algorithm"].update(spec.get("algo", {}))
    for agent in cfg["agents"]:
        agent["lr"] = 1e-12
        if spec.get("lora"):
            agent["lora"] = {"r": 4}
    trainer = Trainer(config_from_dict(cfg), task=coin_task())
    try:
        for worker in trainer.executor.workers if spec.get("lora") else []:
            nonzero_adapters(worker.model)  # the same in both runs
        trainer.train_step()
    finally:
        trainer.close()
    return [list(g) for g in RecordingAdamW.log]


@pytest.mark.parametrize("case", sorted(CASES))
def test_accumulated_gradient_equals_the_unsplit_one(case: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import hacrl.learner as learner

    pieces: list[int] = []

    def counting(rows: list[int], tokens: torch.Tensor, budget: int) -> list[list[int]]:
        out = split_by_tokens(rows, tokens, budget)
        pieces.append(len(out))
        return out

    whole = gradients(tmp_path / "whole", CASES[case], None, monkeypatch)
    monkeypatch.setattr(learner, "split_by_tokens", counting)
    split = gradients(tmp_path / "split", CASES[case], 64, monkeypatch)
    assert max(pieces) > 1, "the budget must actually cut some mini-batch"
    assert len(whole) == len(split) == 2  # one optimizer per agent
    for agent_whole, agent_split in zip(whole, split, strict=True):
        assert len(agent_whole) == len(agent_split) >= 1
        for update, (g_whole, g_split) in enumerate(zip(agent_whole, agent_split, strict=True)):
            for a, b in zip(g_whole, g_split, strict=True):
                scale = float(a.abs().max()) or 1.0
                assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * scale), (case, update, float((a - b).abs().max()))


def test_the_budget_cuts_rows_in_order_and_refuses_a_row_larger_than_itself() -> None:
    tokens = torch.tensor([30, 20, 40, 10, 50])
    assert split_by_tokens([0, 1, 2, 3, 4], tokens, 60) == [[0, 1], [2, 3], [4]]
    assert split_by_tokens([3, 1], tokens, 60) == [[3, 1]]
    with pytest.raises(MicrobatchBudgetError, match="max_tokens_per_microbatch: a response needs 50 tokens"):
        split_by_tokens([4], tokens, 49)


@pytest.mark.parametrize("lora", [False, True])
def test_a_budget_below_one_response_is_refused_before_training(tmp_path: Path, lora: bool) -> None:
    from hacrl.config import ConfigError

    cfg = tiny_run_config(tmp_path, max_tokens_per_microbatch=20)  # prompts ~10 tokens + 16 new (+ cross 32)
    if lora:
        cfg["agents"][0]["lora"] = {"r": 4}
    with pytest.raises(ConfigError, match=r"training.max_tokens_per_microbatch: 20 is smaller than one response of "
                                          r"agent 'char'.*raise it to at least \d+"):
        Trainer(config_from_dict(cfg), task=coin_task())
