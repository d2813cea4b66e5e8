"""Loss functions: hand-computed values for every branch, gradients, stepwise bounds, bad input."""

import math

import pytest
import torch

from hacrl.algorithms import cross_lower_bound, grpo_loss, gspo_loss, hacpo_loss, kl_penalty, sequence_logps

f64 = torch.float64


def seq_inputs(log_ratios: list[float], tokens: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token logps whose length-normalised mean minus the source log-prob (-1.0) is `log_ratios`.

    Row i has `tokens` response tokens plus one padding column (mask False, value -inf: must be ignored).
    """
    b = len(log_ratios)
    source = torch.full((b,), -1.0, dtype=f64)
    per_token = torch.zeros(b, tokens + 1, dtype=f64)
    for row, lr in enumerate(log_ratios):
        seq_mean = -1.0 + lr
        spread = torch.tensor([0.3, -0.1, -0.2][:tokens], dtype=f64)
        per_token[row, :tokens] = seq_mean + spread - spread.mean()
    per_token[:, tokens] = -math.inf
    mask = torch.zeros(b, tokens + 1, dtype=torch.bool)
    mask[:, :tokens] = True
    logps = per_token.clone().requires_grad_(True)
    return logps, mask, source


def hacpo(log_ratios, adv, is_self, omegas, m=0, **kw):
    logps, mask, source = seq_inputs(log_ratios)
    loss, stats = hacpo_loss(logps=logps, mask=mask, source_logps=source, advantages=torch.tensor(adv, dtype=f64),
                             is_self=torch.tensor(is_self), omegas=torch.tensor(omegas, dtype=f64), update_index=m,
                             **kw)
    return loss, stats.metrics(), logps


def test_sequence_logps_ignores_padding() -> None:
    logps, mask, _ = seq_inputs([0.0, math.log(2)])
    assert sequence_logps(logps, mask).tolist() == pytest.approx([-1.0, -1.0 + math.log(2)])


@pytest.mark.parametrize(
    ("s", "adv", "expected", "grad_flows"),
    [
        (1.0001, 2.0, 1.0001 * 2.0, True),  # inside the clip, positive advantage
        (0.9999, -1.5, 0.9999 * -1.5, True),  # inside the clip, negative advantage
        (1.01, 1.0, 1.0004 * 1.0, False),  # above 1 + eps_high with A > 0: clipped
        (1.01, -1.0, 1.01 * -1.0, True),  # above with A < 0: the unclipped (smaller) term
        (0.99, -1.0, 0.9997 * -1.0, False),  # below 1 - eps_low with A < 0: clipped
        (0.99, 1.0, 0.99 * 1.0, True),  # below with A > 0: unclipped
    ],
)
def test_self_branch_is_gspo(s: float, adv: float, expected: float, grad_flows: bool) -> None:
    loss, metrics, logps = hacpo([math.log(s)], [adv], [True], [1.0])
    assert loss.item() == pytest.approx(-expected, rel=1e-9)
    loss.backward()
    grad = logps.grad[0, :3]
    if grad_flows:  # d(-s A)/d logp_t = -s A / T
        assert grad.tolist() == pytest.approx([-s * adv / 3] * 3, rel=1e-9)
    else:
        assert grad.abs().max().item() == 0.0
    assert metrics["self/count"] == 1.0
    assert metrics["self/zero_grad_frac"] == (0.0 if grad_flows else 1.0)
    # gspo_loss is the same branch for every response
    g_logps, g_mask, g_src = seq_inputs([math.log(s)])
    g_loss, _ = gspo_loss(logps=g_logps, mask=g_mask, old_logps=g_src, advantages=torch.tensor([adv], dtype=f64))
    assert g_loss.item() == pytest.approx(loss.item(), rel=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0])
@pytest.mark.parametrize(
    ("s", "c", "inside"),
    [
        (1.25, 1.0, False),  # above 1: clipped to 1 (never up-weights)
        (0.9, 0.9, True),  # inside [0.8, 1]
        (0.5, 0.8, False),  # below the lower bound: clipped, discarded
    ],
)
def test_cross_branch(alpha: float, s: float, c: float, inside: bool) -> None:
    adv, omega = -0.7, 2.5
    loss, metrics, logps = hacpo([math.log(s)], [adv], [False], [omega], alpha=alpha)
    assert loss.item() == pytest.approx(-(c * c**alpha * omega * adv), rel=1e-9)
    loss.backward()
    if inside:  # omega * sg(c)^alpha * c * A * d mean logp / d logp_t, negated
        assert logps.grad[0, :3].tolist() == pytest.approx([-omega * c**alpha * c * adv / 3] * 3, rel=1e-9)
    else:
        assert logps.grad.abs().max().item() == 0.0
    assert metrics["cross/lower_bound"] == pytest.approx(0.8)
    assert metrics["cross/zero_grad_frac"] == (0.0 if inside else 1.0)
    assert metrics["cross/clip_high_frac"] == (1.0 if s > 1 else 0.0)
    assert metrics["cross/clip_low_frac"] == (1.0 if s < 0.8 else 0.0)


@pytest.mark.parametrize(
    ("m", "delta", "delta_step", "lower"),
    [(0, 0.2, 0.025, 0.8), (1, 0.2, 0.025, 0.825), (2, 0.2, 0.025, 0.85), (3, 0.2, 0.025, 0.875),
     (8, 0.2, 0.025, 1.0), (40, 0.2, 0.025, 1.0), (5, 0.2, 0.0, 0.8), (3, 0.1, 0.01, 0.93)],
)
def test_stepwise_lower_bound(m: int, delta: float, delta_step: float, lower: float) -> None:
    assert cross_lower_bound(m, delta, delta_step) == pytest.approx(lower)


def test_stepwise_bound_changes_what_is_discarded() -> None:
    # s = 0.84: inside at m = 0 (0.8) and m = 1 (0.825), discarded at m = 2 (0.85)
    for m, discarded in [(0, False), (1, False), (2, True)]:
        loss, metrics, logps = hacpo([math.log(0.84)], [1.0], [False], [1.0], m=m)
        loss.backward()
        assert (logps.grad.abs().max().item() == 0.0) is discarded
        assert metrics["cross/lower_bound"] == pytest.approx(0.8 + 0.025 * m)
        c = max(0.84, 0.8 + 0.025 * m)
        assert loss.item() == pytest.approx(-(c * c))


def test_mixed_batch_mean_and_metrics() -> None:
    log_ratios = [math.log(1.0002), math.log(1.01), math.log(0.9), math.log(0.5)]
    adv, omegas, is_self = [1.0, 1.0, 2.0, -1.0], [1.0, 1.0, 0.5, 4.0], [True, True, False, False]
    loss, metrics, _ = hacpo(log_ratios, adv, is_self, omegas, alpha=1.0)
    terms = [1.0002 * 1.0, 1.0004 * 1.0, 0.9 * 0.9 * 0.5 * 2.0, 0.8 * 0.8 * 4.0 * -1.0]
    assert loss.item() == pytest.approx(-sum(terms) / 4, rel=1e-9)
    assert metrics["self/count"] == 2 and metrics["cross/count"] == 2
    assert metrics["self/clip_frac"] == 0.5
    assert metrics["cross/zero_grad_frac"] == 0.5
    assert metrics["cross/ratio_min"] == pytest.approx(0.5)
    assert metrics["self/ratio_max"] == pytest.approx(1.01)
    assert metrics["cross/weight_mean"] == pytest.approx(2.25)


def test_cross_gradient_matches_formula_on_a_real_parameter() -> None:
    """Through a real parameter: grad = -1/B sum_i omega c^alpha c A d(mean logp_i)/d theta (inside the clip)."""
    torch.manual_seed(0)
    theta = torch.randn(5, 7, dtype=f64, requires_grad=True)
    targets = torch.randint(0, 7, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    token_logps = torch.log_softmax(theta, dim=-1)[torch.arange(5), targets]  # [2, 5]
    seq = sequence_logps(token_logps, mask).detach()
    source = seq - torch.tensor([math.log(0.95), math.log(0.85)], dtype=f64)  # ratios 0.95, 0.85: inside
    adv, omegas, alpha = torch.tensor([1.3, -0.4], dtype=f64), torch.tensor([2.0, 0.3], dtype=f64), 3.0
    loss, _ = hacpo_loss(logps=token_logps, mask=mask, source_logps=source, advantages=adv,
                         is_self=torch.tensor([False, False]), omegas=omegas, update_index=0, alpha=alpha)
    (grad,) = torch.autograd.grad(loss, theta, retain_graph=True)
    expected = torch.zeros_like(theta)
    for row, c in enumerate([0.95, 0.85]):
        (d_mean,) = torch.autograd.grad(sequence_logps(token_logps, mask)[row], theta, retain_graph=True)
        expected -= omegas[row] * c**alpha * c * adv[row] * d_mean / 2
    assert torch.allclose(grad, expected, rtol=1e-10, atol=1e-12)


def test_no_clip_ablation_keeps_the_raw_ratio() -> None:
    loss, metrics, logps = hacpo([math.log(1.5)], [1.0], [False], [1.0], clip_cross=False)
    assert loss.item() == pytest.approx(-(1.5 * 1.5))
    loss.backward()
    assert logps.grad.abs().max().item() > 0
    assert metrics["cross/zero_grad_frac"] == 0.0


def test_grpo_token_level_branches_and_aggregation() -> None:
    logps = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], dtype=f64)).requires_grad_(True)
    # token ratios row 0: 1.1 (inside [0.8, 1.28]), 1.5 (above), 0.5 (below); row 1: 1.0, 1.0, padding
    old = torch.log(torch.tensor([[0.5 / 1.1, 0.5 / 1.5, 1.0], [0.5, 0.5, 0.5]], dtype=f64))
    mask = torch.tensor([[True, True, True], [True, True, False]])
    adv = torch.tensor([1.0, -2.0], dtype=f64)
    row0 = [1.1, 1.28, 0.5]  # A > 0: min(r A, clip(r) A) -> 1.1, 1.28, 0.5
    row1 = [-2.0, -2.0]
    args = dict(logps=logps, mask=mask, old_logps=old, advantages=adv)
    loss_tok, stats = grpo_loss(**args)
    metrics = stats.metrics()
    assert loss_tok.item() == pytest.approx(-(sum(row0) + sum(row1)) / 5)
    loss_seq, _ = grpo_loss(**args, loss_type="grpo")
    assert loss_seq.item() == pytest.approx(-(sum(row0) / 3 + sum(row1) / 2) / 2)
    loss_dr, _ = grpo_loss(**args, loss_type="dr_grpo", max_completion_length=4)
    assert loss_dr.item() == pytest.approx(-(sum(row0) + sum(row1)) / (2 * 4))
    assert metrics["self/clip_frac"] == pytest.approx(2 / 5)
    assert metrics["self/zero_grad_frac"] == pytest.approx(1 / 5)
    loss_tok.backward()
    assert logps.grad[0, 1].item() == 0.0  # clipped token contributes no gradient
    assert logps.grad[0, 2].item() != 0.0
    with pytest.raises(ValueError, match="loss_type must be one of"):
        grpo_loss(**args, loss_type="sum")


def test_kl_penalty_k3() -> None:
    logps = torch.log(torch.tensor([[0.5, 0.25]], dtype=f64))
    ref = torch.log(torch.tensor([[0.25, 0.25]], dtype=f64))
    kl = kl_penalty(logps=logps, ref_logps=ref, mask=torch.tensor([[True, True]]))
    d = math.log(0.5)
    assert kl.tolist() == pytest.approx([(math.exp(d) - d - 1) / 2])


def test_bad_input_names_the_argument() -> None:
    logps, mask, source = seq_inputs([0.0, 0.0])
    args = dict(logps=logps, mask=mask, source_logps=source, advantages=torch.ones(2, dtype=f64),
                is_self=torch.tensor([True, False]), omegas=torch.ones(2, dtype=f64), update_index=0)
    cases = [
        ({"mask": torch.zeros_like(mask)}, r"mask has no response token in row\(s\) \[0, 1\]"),
        ({"mask": mask[:, :2]}, "mask must have the shape of logps"),
        ({"advantages": torch.ones(3, dtype=f64)}, "advantages has 3 entries but 2"),
        ({"advantages": torch.tensor([1.0, float("nan")], dtype=f64)}, "advantages contains 1 NaN"),
        ({"source_logps": torch.tensor([float("inf"), 0.0], dtype=f64)}, "source_logps contains 1 NaN"),
        ({"omegas": torch.tensor([1.0, -1.0], dtype=f64)}, "omegas must be > 0"),
        ({"is_self": torch.tensor([1, 0])}, "is_self must be a bool tensor"),
        ({"update_index": -1}, "update_index must be a non-negative integer"),
        ({"logps": torch.zeros(2, dtype=f64)}, r"logps must be a \[B, T\] tensor"),
    ]
    for override, message in cases:
        with pytest.raises(ValueError, match=message):
            hacpo_loss(**(args | override))
    with pytest.raises(ValueError, match="delta must be in"):
        hacpo_loss(**args, delta=1.5)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        hacpo_loss(**args, alpha=-1.0)
    nan_logps = logps.detach().clone()
    nan_logps[0, 0] = float("nan")
    with pytest.raises(ValueError, match="logps contains NaN/inf at response positions"):
        hacpo_loss(**(args | {"logps": nan_logps}))
