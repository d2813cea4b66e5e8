"""An independent, loop-based re-statement of docs/method.md §3 checked against the tensor code.

Random inputs: 2-4 agents, unequal responses per agent, binary and fractional rewards, random update
indices and alphas, float64; agreement to a relative 1e-5 (values and gradients).
"""

import math
import random

import pytest
import torch

from hacrl.algorithms import CapabilityTracker, capability_aware_advantages, hacpo_loss


def ref_capabilities(history: list[list[float]], window: int, floor: float) -> list[float]:
    recent = history[-window:]
    return [max(sum(step[j] for step in recent) / len(recent), floor) for j in range(len(history[0]))]


def ref_ratio(caps: list[float], a: int, b: int, low: float, high: float) -> float:
    return 1.0 if a == b else min(max(caps[a] / caps[b], low), high)


def ref_advantages(rewards, groups, sources, learner, caps, low=0.1, high=10.0, max_reward=1.0, eps=1e-6):
    out = [0.0] * len(rewards)
    for q in sorted(set(groups)):
        idx = [i for i, g in enumerate(groups) if g == q]
        r = [rewards[i] for i in idx]
        n = len(r)
        mean = sum(r) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in r) / (n - 1)) if n > 1 else 0.0
        if all(x == r[0] for x in r):
            continue  # all advantages 0
        mu = sum(ref_ratio(caps, learner, sources[i], low, high) * rewards[i] for i in idx) / n
        if mu > max_reward:
            own = [rewards[i] for i in idx if sources[i] == learner]
            mu = sum(own) / len(own) if own else mean
        for i in idx:
            out[i] = (rewards[i] - mu) / (std + eps)
    return out


def ref_loss_and_seq_grad(seq, src, adv, is_self, omegas, m, eps_low, eps_high, alpha, delta, delta_step):
    """Loss and d loss / d seq_logp_i (each response's length-normalised log-prob)."""
    lower = min(1.0, 1 - delta + m * delta_step)
    total, grads = 0.0, []
    b = len(seq)
    for i in range(b):
        s = math.exp(seq[i] - src[i])
        if is_self[i]:
            unclipped, clipped = s * adv[i], min(max(s, 1 - eps_low), 1 + eps_high) * adv[i]
            j = min(unclipped, clipped)
            g = s * adv[i] if unclipped <= clipped else 0.0
            if not (1 - eps_low <= s <= 1 + eps_high) and unclipped == clipped:
                g = 0.0
        else:
            c = min(max(s, lower), 1.0)
            j = c * c**alpha * omegas[i] * adv[i]
            g = omegas[i] * c**alpha * c * adv[i] if lower <= s <= 1.0 else 0.0
        total += j
        grads.append(-g / b)
    return -total / b, grads


@pytest.mark.parametrize("seed", range(25))
def test_tracker_advantages_and_loss_agree_with_reference(seed: int) -> None:
    rng = random.Random(seed)
    n_agents = rng.randint(2, 4)
    binary = seed % 2 == 0
    window = rng.randint(1, 5)
    tracker = CapabilityTracker(n_agents, window=window)
    history: list[list[float]] = []

    def draw() -> float:
        return float(rng.random() < 0.5) if binary else round(rng.random(), 3) * rng.choice([0, 1])

    for _ in range(rng.randint(1, 8)):
        per_agent = [[draw() for _ in range(rng.randint(1, 4))] for _ in range(n_agents)]
        rewards = [r for rs in per_agent for r in rs]
        sources = [j for j, rs in enumerate(per_agent) for _ in rs]
        tracker.update(torch.tensor(rewards, dtype=torch.float64), torch.tensor(sources))
        history.append([sum(rs) / len(rs) for rs in per_agent])
    caps = ref_capabilities(history, window, 1e-8)
    assert tracker.capabilities().tolist() == pytest.approx(caps, rel=1e-12)
    for a in range(n_agents):
        for b in range(n_agents):
            assert tracker.ratio(a, b) == pytest.approx(ref_ratio(caps, a, b, 0.1, 10.0), rel=1e-12)

    # one step's joint groups: every agent answers every prompt with G_j responses
    n_prompts = rng.randint(1, 5)
    counts = [rng.randint(1, 4) for _ in range(n_agents)]
    groups, sources = [], []
    for q in range(n_prompts):
        for j in range(n_agents):
            groups += [q] * counts[j]
            sources += [j] * counts[j]
    rewards = [draw() for _ in groups]
    learner = rng.randrange(n_agents)
    got = capability_aware_advantages(torch.tensor(rewards, dtype=torch.float64), torch.tensor(groups),
                                      torch.tensor(sources), learner, tracker.capabilities())
    want = ref_advantages(rewards, groups, sources, learner, caps)
    assert got.tolist() == pytest.approx(want, rel=1e-5, abs=1e-9)

    # the loss on that batch, value and gradient
    b, t_max = len(rewards), 6
    lengths = [rng.randint(1, t_max) for _ in range(b)]
    mask = torch.tensor([[t < n for t in range(t_max)] for n in lengths])
    logps = (-torch.rand(b, t_max, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 3)
    logps.requires_grad_(True)
    seq = [(logps[i, : lengths[i]].sum() / lengths[i]).item() for i in range(b)]
    src = [s + rng.uniform(-0.3, 0.3) for s in seq]
    omegas = [ref_ratio(caps, sources[i], learner, 0.1, 10.0) for i in range(b)]
    is_self = [sources[i] == learner for i in range(b)]
    m, alpha = rng.randint(0, 10), rng.choice([0.0, 1.0, 2.0, 3.0])
    loss, _ = hacpo_loss(logps=logps, mask=mask, source_logps=torch.tensor(src, dtype=torch.float64), advantages=got,
                         is_self=torch.tensor(is_self), omegas=tracker.ratios_for(torch.tensor(sources), learner),
                         update_index=m, alpha=alpha)
    ref, seq_grads = ref_loss_and_seq_grad(seq, src, want, is_self, omegas, m, 3e-4, 4e-4, alpha, 0.2, 0.025)
    assert loss.item() == pytest.approx(ref, rel=1e-5, abs=1e-12)
    loss.backward()
    expected_grad = torch.zeros(b, t_max, dtype=torch.float64)
    for i in range(b):
        expected_grad[i, : lengths[i]] = seq_grads[i] / lengths[i]
    assert torch.allclose(logps.grad, expected_grad, rtol=1e-5, atol=1e-12)
