"""The learner's named pieces: mini-batch order, the zero-advantage skip, the all-zero AdamW step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hacrl.learner import MiniBatch, layout_minibatches, live_rows, zero_gradient_step


def test_minibatch_layouts() -> None:
    is_self = [False, True, False, True, True]
    # own rows 1, 3, 4 then peer rows 0, 2, cut into chunks of 2 across the boundary: a transferred group fills
    # the slots of the group it replaced, so with one mini-batch per step it shares the receiver's update
    assert layout_minibatches(is_self, order="self_first", size=2, seed=0) == [[1, 3], [4, 0], [2]]
    assert layout_minibatches(is_self, order="peer_last", size=2, seed=0) == [[1, 3], [4, 0], [2]]
    assert layout_minibatches(is_self, order="peer_last", size=5, seed=0) == [[1, 3, 4, 0, 2]]
    assert layout_minibatches(is_self, order="peer_first", size=2, seed=0) == [[0, 2], [1, 3], [4]]
    shuffled = layout_minibatches(is_self, order="shuffle", size=5, seed=7)
    assert sorted(shuffled[0]) == [0, 1, 2, 3, 4]
    assert shuffled == layout_minibatches(is_self, order="shuffle", size=5, seed=7)  # seeded


def test_live_rows_rescale_to_the_minibatch_normaliser() -> None:
    advantages = torch.tensor([0.0, 1.5, 0.0, -2.0])
    lengths = torch.tensor([10, 3, 5, 2])
    # responses: 2 of 4 rows live -> mean over live rows * 2/4
    assert live_rows([0, 1, 2, 3], advantages, lengths, "responses") == MiniBatch([0, 1, 2, 3], [1, 3], 0.5)
    # tokens: live rows hold 3 + 2 of the 20 completion tokens -> token mean over live rows * 5/20
    assert live_rows([0, 1, 2, 3], advantages, lengths, "tokens") == MiniBatch([0, 1, 2, 3], [1, 3], 0.25)
    assert live_rows([1, 3], advantages, lengths, "tokens") == MiniBatch([1, 3], [1, 3], 1.0)
    assert live_rows([0, 2], advantages, lengths, "responses") == MiniBatch([0, 2], [], 1.0)
    # a supervised row (SGT) is always live and stays out of the policy normaliser: 1 of 3 policy rows is live
    supervised = torch.tensor([False, False, False, True])
    assert live_rows([0, 1, 2, 3], advantages, lengths, "responses", supervised) == MiniBatch([0, 1, 2, 3], [1, 3],
                                                                                              1 / 3)
    assert live_rows([0, 3], advantages, lengths, "tokens", supervised) == MiniBatch([0, 3], [3], 1.0)


def test_zero_gradient_step_is_adamw_on_a_zero_gradient() -> None:
    """With momentum from an earlier step and weight decay, a zero-gradient AdamW step still moves the weights,
    exactly as computing the (all-zero) loss would."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(model.state_dict())
    opts = [torch.optim.AdamW(m.parameters(), lr=0.1, weight_decay=0.1) for m in (model, twin)]
    x = torch.randn(4, 3)
    for m, opt in zip((model, twin), opts, strict=True):  # one ordinary step to give AdamW momentum
        m(x).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    before = [p.detach().clone() for p in model.parameters()]
    zero_gradient_step(model, opts[0])
    (twin(x) * 0.0).sum().backward()  # the full computation: a loss that is exactly zero
    opts[1].step()
    for p, q, b in zip(model.parameters(), twin.parameters(), before, strict=True):
        assert torch.equal(p, q)
        assert not torch.equal(p, b)


def test_supervised_rows_join_their_prompts_minibatch_and_take_no_slot() -> None:
    """SGT: own rows 0-3 (prompts 0, 0, 1, 1), NLL rows 4 (prompt 1) and 5 (prompt 0). They add to the update that
    holds their prompt's group, so lambda * NLL is part of the same objective, never an update of its own."""
    is_self = [True] * 6
    groups = [0, 0, 1, 1, 1, 0]
    supervised = [False] * 4 + [True, True]
    assert layout_minibatches(is_self, order="peer_last", size=4, seed=0, groups=groups,
                              supervised=supervised) == [[0, 1, 2, 3, 4, 5]]
    assert layout_minibatches(is_self, order="peer_last", size=2, seed=0, groups=groups,
                              supervised=supervised) == [[0, 1, 5], [2, 3, 4]]
    assert layout_minibatches([True, True], order="peer_last", size=2, seed=0, groups=[3, 3],
                              supervised=[True, True]) == [[0, 1]]  # nothing but NLL rows: one update


@pytest.mark.parametrize("order", ["self_first", "peer_last", "peer_first", "shuffle"])
@pytest.mark.parametrize("size", [1, 4, 10])
def test_layouts_cover_every_row_once(order: str, size: int) -> None:
    chunks = layout_minibatches([i % 3 == 0 for i in range(9)], order=order, size=size, seed=1)
    assert sorted(i for c in chunks for i in c) == list(range(9)) and all(len(c) <= size for c in chunks)
    supervised = [i in (2, 7) for i in range(9)]
    chunks = layout_minibatches([i % 3 == 0 for i in range(9)], order=order, size=size, seed=1,
                                groups=[i // 2 for i in range(9)], supervised=supervised)
    assert sorted(i for c in chunks for i in c) == list(range(9))
    assert all(sum(not supervised[i] for i in c) <= size for c in chunks)


def test_recomputed_old_logprobs_make_the_first_self_ratio_exactly_one(tmp_path: Path) -> None:
    """`rollout.old_logprobs: recompute` on the in-process backend: the trainer's own log-probs replace the
    sampler's as GSPO's denominators (the sampler's agree only to float rounding), and the gap is logged."""
    from conftest import tiny_run_config
    from hacrl.config import config_from_dict
    from hacrl.tasks.arithmetic import ArithmeticConfig, ArithmeticTask
    from hacrl.tasks.base import FunctionRewardTask
    from hacrl.trainer import Trainer

    arithmetic = ArithmeticTask(ArithmeticConfig(n_train=200, n_eval=20))
    task = FunctionRewardTask("graded", arithmetic.train_problems(), arithmetic.eval_problems(),
                              lambda prompts, completions, **_: [(len(c) % 7) / 6 for c in completions])
    cfg = tiny_run_config(tmp_path, algorithm="gspo", steps=1, minibatch_size=8)
    for agent in cfg["agents"]:
        agent["rollout"] = {"old_logprobs": "recompute"}
    trainer = Trainer(config_from_dict(cfg), task=task)
    metrics = trainer.train_step()
    for m in metrics.values():
        assert m["self/ratio_min"] == m["self/ratio_max"] == 1.0
        assert 0 <= m["rollout/logp_gap_max"] < 1e-4
