"""Advantages: hand-computed values for every branch and guard, and Theorem 4.1 by Monte Carlo."""

import math

import pytest
import torch

from hacrl.algorithms import capability_aware_advantages, capability_aware_baseline, group_advantages

f64 = torch.float64


def t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=f64)


def i(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def test_group_advantages_by_hand() -> None:
    # group 0: [1, 0, 1, 1] mean 0.75, unbiased std 0.5; group 1: [0, 1] mean 0.5, std sqrt(0.5)
    adv = group_advantages(t([1, 0, 1, 1, 0, 1]), i([0, 0, 0, 0, 1, 1]), eps=0.0)
    s1 = math.sqrt(0.5)
    assert adv.tolist() == pytest.approx([0.5, -1.5, 0.5, 0.5, -0.5 / s1, 0.5 / s1])
    unscaled = group_advantages(t([1, 0, 1, 1, 0, 1]), i([0, 0, 0, 0, 1, 1]), scale=False)
    assert unscaled.tolist() == pytest.approx([0.25, -0.75, 0.25, 0.25, -0.5, 0.5])


def test_group_advantages_single_and_uniform_groups_are_zero() -> None:
    adv = group_advantages(t([1, 1, 1, 0.3]), i([0, 0, 0, 1]))
    assert adv.tolist() == [0.0, 0.0, 0.0, 0.0]


def test_capability_weighted_baseline_by_hand() -> None:
    # learner 0 (Phat 0.5), source 1 (Phat 1.0): omega^(0,1) = 0.5
    # group: self [1, 0], cross [1, 1] -> mu = (1 + 0 + 0.5 + 0.5) / 4 = 0.5, std([1,0,1,1]) = 0.5
    adv = capability_aware_advantages(t([1, 0, 1, 1]), i([0, 0, 0, 0]), i([0, 0, 1, 1]), 0, t([0.5, 1.0]), eps=0.0)
    assert adv.tolist() == pytest.approx([1.0, -1.0, 1.0, 1.0])
    # the same group seen by learner 1: omega^(1,0) = 2 -> mu = (2 + 0 + 1 + 1) / 4 = 1.0
    adv1 = capability_aware_advantages(t([1, 0, 1, 1]), i([0, 0, 0, 0]), i([0, 0, 1, 1]), 1, t([0.5, 1.0]), eps=0.0)
    assert adv1.tolist() == pytest.approx([0.0, -2.0, 0.0, 0.0])


def test_guard_all_rewards_equal_uses_plain_mean() -> None:
    # weighted mean would be (1 + 1 + 0.1 + 0.1) / 4 != 1, but all rewards are equal -> advantages 0
    adv = capability_aware_advantages(t([1, 1, 1, 1]), i([0, 0, 0, 0]), i([0, 0, 1, 1]), 0, t([0.01, 1.0]))
    assert adv.tolist() == [0.0, 0.0, 0.0, 0.0]
    base = capability_aware_baseline(t([1, 1, 1, 1]), i([0, 0, 0, 0]), i([0, 0, 1, 1]), 0, t([0.01, 1.0]))
    assert base.tolist() == [1.0]


def test_guard_baseline_above_max_reward_falls_back_to_own_mean() -> None:
    # learner Phat 1.0, source Phat 0.1 -> omega^(k,j) = 10; mu = (0 + 10 + 10) / 3 > 1 -> own mean 0
    rewards, groups, sources = t([0, 1, 1]), i([0, 0, 0]), i([0, 1, 1])
    base = capability_aware_baseline(rewards, groups, sources, 0, t([1.0, 0.1]))
    assert base.tolist() == [0.0]
    std = math.sqrt(1 / 3)
    adv = capability_aware_advantages(rewards, groups, sources, 0, t([1.0, 0.1]), eps=0.0)
    assert adv.tolist() == pytest.approx([0.0, 1 / std, 1 / std])
    # a higher max_reward keeps the weighted baseline
    base_hi = capability_aware_baseline(rewards, groups, sources, 0, t([1.0, 0.1]), max_reward=10.0)
    assert base_hi.tolist() == pytest.approx([20 / 3])
    # learner without own responses in the group: plain mean of the group
    base_none = capability_aware_baseline(t([1, 1, 0]), i([0, 0, 0]), i([1, 1, 1]), 0, t([1.0, 0.1]))
    assert base_none.tolist() == pytest.approx([2 / 3])


def test_group_where_learner_has_no_correct_answer() -> None:
    # learner 0 Phat 0.25, source 1 Phat 0.75 -> omega^(0,1) = 1/3; self [0, 0], cross [1, 0]
    # mu = (0 + 0 + 1/3 + 0) / 4 = 1/12, std([0,0,1,0]) = 0.5
    adv = capability_aware_advantages(t([0, 0, 1, 0]), i([0, 0, 0, 0]), i([0, 0, 1, 1]), 0, t([0.25, 0.75]), eps=0.0)
    assert adv.tolist() == pytest.approx([-1 / 6, -1 / 6, 11 / 6, -1 / 6])


def test_three_agents_unequal_counts_and_single_response_groups() -> None:
    caps = t([0.2, 0.4, 0.8])
    # group 0: agent0 [1], agent1 [0, 1, 0], agent2 [1, 1]; learner 0 -> omegas 1, 0.5, 0.25
    # mu = (1 + 0.5*(0+1+0) + 0.25*(1+1)) / 6 = 2/6; group 1 has a single response -> advantage 0
    rewards = t([1, 0, 1, 0, 1, 1, 1])
    groups = i([0, 0, 0, 0, 0, 0, 1])
    sources = i([0, 1, 1, 1, 2, 2, 2])
    adv = capability_aware_advantages(rewards, groups, sources, 0, caps, eps=0.0)
    r0 = rewards[:6]
    std = r0.std(unbiased=True).item()
    expected = [(r - 1 / 3) / std for r in r0.tolist()] + [0.0]
    assert adv.tolist() == pytest.approx(expected)
    # four agents, ratios clipped at the bounds
    caps4 = t([1.0, 0.05, 0.5, 20.0])
    adv4 = capability_aware_advantages(t([1, 0, 1, 0]), i([0, 0, 0, 0]), i([0, 1, 2, 3]), 0, caps4,
                                       ratio_bounds=(0.1, 10.0), eps=0.0)
    mu = (1 * 1 + 10 * 0 + 2 * 1 + 0.1 * 0) / 4  # 0.75 <= 1
    std4 = t([1, 0, 1, 0]).std().item()
    assert adv4.tolist() == pytest.approx([(1 - mu) / std4, (0 - mu) / std4, (1 - mu) / std4, (0 - mu) / std4])


def test_theorem_4_1_baseline_is_unbiased_for_the_learner() -> None:
    """E[mu^(k)] = E_{y~pi_k}[R] when omega is the true capability ratio (docs/method.md §3.1).

    Learner success p_k = 0.3, source p_j = 0.6, G = 4 each, omega^(k,j) = 0.5 fixed. Per group,
    Var(mu) = (G p_k(1-p_k) + G omega^2 p_j(1-p_j)) / (2G)^2 = 0.016875, so over Q = 20000 groups the
    standard error of the mean is 0.00092; the all-equal guard can only fire when all 8 are correct
    (prob 0.3^4 0.6^4 = 0.001) and then moves mu by 0.25, a bias of 0.0003. Tolerance 0.005 = 5 SE + bias.
    The unweighted joint mean (the Naive baseline) would be 0.45, far outside it.
    """
    gen = torch.Generator().manual_seed(0)
    q, g, p_k, p_j = 20000, 4, 0.3, 0.6
    probs = torch.tensor([p_k] * g + [p_j] * g, dtype=f64).repeat(q)
    rewards = torch.bernoulli(probs, generator=gen)
    groups = torch.arange(q).repeat_interleave(2 * g)
    sources = torch.tensor([0] * g + [1] * g).repeat(q)
    base = capability_aware_baseline(rewards, groups, sources, 0, t([p_k, p_j]))
    assert abs(base.mean().item() - p_k) < 0.005
    plain = rewards.view(q, 2 * g).mean(dim=1)
    assert abs(plain.mean().item() - p_k) > 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rewards": t([1.0, float("nan")])}, "rewards contains 1 NaN/inf"),
        ({"rewards": t([1.0, float("inf")])}, "rewards contains 1 NaN/inf"),
        ({"rewards": t([])}, "rewards is empty"),
        ({"groups": i([0, 2])}, r"empty group\(s\) \[1\]"),
        ({"groups": i([0])}, "groups has 1 entries but 2"),
        ({"sources": i([0, 5])}, "sources contains index 5"),
        ({"learner": 3}, "learner index 3 is out of range"),
        ({"capabilities": t([0.5, 0.0])}, "capabilities must be > 0"),
        ({"capabilities": t([0.5, float("nan")])}, "capabilities contains 1 NaN"),
        ({"groups": t([0.0, 0.0])}, "groups must be an integer tensor"),
        ({"ratio_bounds": (2.0, 3.0)}, "ratio_bounds"),
    ],
)
def test_bad_input_names_the_argument(kwargs: dict, message: str) -> None:
    args = {"rewards": t([1.0, 0.0]), "groups": i([0, 0]), "sources": i([0, 1]), "learner": 0,
            "capabilities": t([0.5, 0.5])} | kwargs
    with pytest.raises(ValueError, match=message):
        capability_aware_advantages(**args)
