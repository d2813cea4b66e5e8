"""Advantage estimators (docs/method.md §1 and §3.1).

* `group_advantages`: the group-relative advantage of GRPO/GSPO, `(r - mean_q) / (std_q + eps)`.
  Over a learner's own responses it is the single-agent baseline; over the joint group of all agents it
  is the Naive baseline (and the `hacpo-no-adv` ablation).
* `capability_aware_advantages`: HACPO's baseline (paper eq. 6-9), where every reward in the joint group
  is rescaled by how the learner compares to the response's source before averaging, so the baseline
  estimates the *learner's* expected reward (Theorem 4.1) rather than the pool's.

Groups are given as a prompt index per response and must be 0..Q-1 with no empty group; standard
deviations are unbiased (ddof = 1) over the whole joint group.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hacrl.algorithms._checks import bounds, float_1d, index_1d


def _check_groups(groups: Tensor, n: int) -> int:
    groups = index_1d("groups", groups, length=n)
    n_groups = int(groups.max()) + 1
    counts = torch.bincount(groups, minlength=n_groups)
    empty = [q for q in range(n_groups) if int(counts[q]) == 0]
    if empty:
        raise ValueError(f"groups has empty group(s) {empty[:10]}: group ids must be 0..Q-1 (the prompt index of "
                         "each response) and every prompt needs at least one response")
    return n_groups


class _GroupStats:
    """Per-group sums computed with scatter-adds, so a batch of thousands of prompts costs a few ops."""

    def __init__(self, values: Tensor, groups: Tensor, n_groups: int) -> None:
        self.groups = groups
        self.counts = torch.bincount(groups, minlength=n_groups).to(values.dtype)
        self.mean = self.sum(values) / self.counts
        squares = (values - self.mean[groups]) ** 2
        dof = (self.counts - 1).clamp(min=1)
        # unbiased std; a single-response group gets 0 (its advantage is 0 either way)
        self.std = torch.where(self.counts > 1, (self.sum(squares) / dof).sqrt(), torch.zeros_like(self.mean))
        high = values.new_full((n_groups,), -torch.inf).scatter_reduce(0, groups, values, "amax")
        low = values.new_full((n_groups,), torch.inf).scatter_reduce(0, groups, values, "amin")
        self.uniform = high == low

    def sum(self, values: Tensor) -> Tensor:
        return values.new_zeros(self.counts.shape).index_add_(0, self.groups, values)

    def normalise(self, values: Tensor, baselines: Tensor, eps: float) -> Tensor:
        """(r - baseline) / (std + eps), exactly 0 in groups whose rewards are all equal."""
        g = self.groups
        advantages = (values - baselines[g]) / (self.std[g] + eps)
        return torch.where(self.uniform[g], torch.zeros_like(advantages), advantages)


def group_advantages(rewards: Tensor, groups: Tensor, *, scale: bool = True, eps: float = 1e-6) -> Tensor:
    """A_i = (r_i - mean_{g(i)}) / (std_{g(i)} + eps)   (GRPO; docs/method.md §1).

    With `scale=False` only the mean is subtracted (Dr. GRPO style). A single-response group gets 0.
    """
    rewards = float_1d("rewards", rewards)
    if rewards.numel() == 0:
        raise ValueError("rewards is empty")
    stats = _GroupStats(rewards, groups, _check_groups(groups, rewards.numel()))
    if scale:
        return stats.normalise(rewards, stats.mean, eps)
    return rewards - stats.mean[groups]


def capability_aware_baseline(
    rewards: Tensor,
    groups: Tensor,
    sources: Tensor,
    learner: int,
    capabilities: Tensor,
    *,
    ratio_bounds: tuple[float, float] = (0.1, 10.0),
    max_reward: float = 1.0,
) -> Tensor:
    """mu^(k)(q) for every group q, with both guards of docs/method.md §3.1 (returns [Q]).

        omega_i = clip(Phat[k] / Phat[src(i)], ratio_bounds)   (eq. 7; exactly 1 for self)
        mu(q)   = (1 / N_q) * sum_{i in Y(q)} omega_i * r_i      (eq. 6)

    Guards: if every reward of the joint group is equal, mu is the plain mean (all advantages are then
    0: no signal, and no capability artefact); if mu > `max_reward` (a baseline no policy can reach) it
    falls back to the mean of the learner's own rewards for that prompt, or to the plain mean when the
    learner has no response in that group. With a fixed, true capability ratio and no guard firing, mu is
    an unbiased estimate of the learner's expected reward (Theorem 4.1).
    """
    rewards = float_1d("rewards", rewards)
    if rewards.numel() == 0:
        raise ValueError("rewards is empty")
    n = rewards.numel()
    n_groups = _check_groups(groups, n)
    capabilities = float_1d("capabilities", capabilities)
    n_agents = capabilities.numel()
    if n_agents == 0:
        raise ValueError("capabilities is empty: one capability per agent is needed")
    if bool((capabilities <= 0).any()):
        raise ValueError(f"capabilities must be > 0 (use a floor), got {capabilities.tolist()}")
    sources = index_1d("sources", sources, length=n, upper=n_agents)
    if not 0 <= learner < n_agents:
        raise ValueError(f"learner index {learner} is out of range for {n_agents} agents")
    low, high = bounds("ratio_bounds", ratio_bounds)

    caps = capabilities.to(rewards.dtype)
    omegas = (caps[learner] / caps[sources]).clamp(low, high)
    omegas = torch.where(sources == learner, torch.ones_like(omegas), omegas)

    stats = _GroupStats(rewards, groups, n_groups)
    weighted = stats.sum(omegas * rewards) / stats.counts
    is_own = (sources == learner).to(rewards.dtype)
    own_counts = stats.sum(is_own)
    own_mean = stats.sum(is_own * rewards) / own_counts.clamp(min=1)
    fallback = torch.where(own_counts > 0, own_mean, stats.mean)
    baselines = torch.where(weighted > max_reward, fallback, weighted)
    return torch.where(stats.uniform, stats.mean, baselines)


def capability_aware_advantages(
    rewards: Tensor,
    groups: Tensor,
    sources: Tensor,
    learner: int,
    capabilities: Tensor,
    *,
    ratio_bounds: tuple[float, float] = (0.1, 10.0),
    max_reward: float = 1.0,
    eps: float = 1e-6,
) -> Tensor:
    """HACPO advantages of every response (self and cross) in the joint groups, for learner k.

        A_i = (r_i - mu^(k)(g(i))) / (sigma(g(i)) + eps)     (eq. 8-9; sigma = unbiased std of the joint group)

    with mu from `capability_aware_baseline` (eq. 6-7 and both guards).
    """
    baselines = capability_aware_baseline(rewards, groups, sources, learner, capabilities,
                                          ratio_bounds=ratio_bounds, max_reward=max_reward)
    return _GroupStats(rewards, groups, baselines.numel()).normalise(rewards, baselines, eps)
