"""The learner's named pieces: mini-batch order, the zero-advantage skip, the all-zero AdamW step."""

from __future__ import annotations

import pytest
import torch

from hacrl.learner import MiniBatch, live_rows, minibatch_order, split_minibatches, zero_gradient_step


def test_self_rows_first_then_cross_in_batch_order() -> None:
    is_self = [False, True, False, True, True]
    assert minibatch_order(is_self, shuffle=False, seed=0) == [1, 3, 4, 0, 2]
    shuffled = minibatch_order(is_self, shuffle=True, seed=7)
    assert sorted(shuffled) == [0, 1, 2, 3, 4]
    assert shuffled == minibatch_order(is_self, shuffle=True, seed=7)  # seeded
    assert split_minibatches([1, 3, 4, 0, 2], 2) == [[1, 3], [4, 0], [2]]


def test_live_rows_rescale_to_the_minibatch_normaliser() -> None:
    advantages = torch.tensor([0.0, 1.5, 0.0, -2.0])
    lengths = torch.tensor([10, 3, 5, 2])
    # responses: 2 of 4 rows live -> mean over live rows * 2/4
    assert live_rows([0, 1, 2, 3], advantages, lengths, "responses") == MiniBatch([0, 1, 2, 3], [1, 3], 0.5)
    # tokens: live rows hold 3 + 2 of the 20 completion tokens -> token mean over live rows * 5/20
    assert live_rows([0, 1, 2, 3], advantages, lengths, "tokens") == MiniBatch([0, 1, 2, 3], [1, 3], 0.25)
    assert live_rows([1, 3], advantages, lengths, "tokens") == MiniBatch([1, 3], [1, 3], 1.0)
    assert live_rows([0, 2], advantages, lengths, "responses") == MiniBatch([0, 2], [], 1.0)


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


@pytest.mark.parametrize("size", [1, 4, 10])
def test_split_covers_every_row_once(size: int) -> None:
    order = list(range(9))
    chunks = split_minibatches(order, size)
    assert [i for c in chunks for i in c] == order and all(len(c) <= size for c in chunks)
