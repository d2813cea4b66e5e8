"""Which peer responses a receiver learns from: GRAFT's gated replacement and SGT's success-gated transfer.

Pure functions over per-(agent, prompt) counts and per-response tensors; no models, no I/O. The method statement
is docs/method.md §4 (GRAFT: Jang et al., 2026; SGT: Liu et al., arXiv 2605.07244).

Notation: `k[j, q]` = correct responses of agent j on prompt q (reward >= max_reward), `g[j, q]` = responses of
agent j on prompt q. A receiver "fails" q when k[r, q] = 0 (and it answered q); a source is "mixed" on q when
1 <= k[s, q] < g[s, q] (a success and a failure, so its group-relative advantages are not all zero).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SuccessCounts", "balance_pair", "compatibility_weights", "graft_assignments", "graft_candidates",
           "sgt_draws", "success_counts"]


@dataclass(frozen=True)
class SuccessCounts:
    """`correct[j][q]` and `total[j][q]` as nested lists (agents x prompts)."""

    correct: list[list[int]]
    total: list[list[int]]

    @property
    def n_agents(self) -> int:
        return len(self.correct)

    @property
    def n_prompts(self) -> int:
        return len(self.correct[0]) if self.correct else 0

    def fails(self, agent: int, q: int) -> bool:
        return self.total[agent][q] > 0 and self.correct[agent][q] == 0

    def mixed(self, agent: int, q: int) -> bool:
        return 1 <= self.correct[agent][q] < self.total[agent][q]


def success_counts(rewards: Tensor, groups: Tensor, sources: Tensor, *, n_agents: int, n_prompts: int,
                   max_reward: float) -> SuccessCounts:
    """Count correct and all responses per (source agent, prompt) from per-response tensors."""
    correct = [[0] * n_prompts for _ in range(n_agents)]
    total = [[0] * n_prompts for _ in range(n_agents)]
    for r, q, j in zip(rewards.tolist(), groups.tolist(), sources.tolist(), strict=True):
        total[j][q] += 1
        correct[j][q] += int(r >= max_reward)
    return SuccessCounts(correct, total)


def graft_candidates(counts: SuccessCounts, source: int, receiver: int) -> list[int]:
    """C(s -> r) = {q : k_r(q) = 0 and 1 <= k_s(q) < G_s}: prompts the receiver failed and the source is mixed on."""
    return [q for q in range(counts.n_prompts) if counts.fails(receiver, q) and counts.mixed(source, q)]


def _ranked(prompts: Sequence[int], counts: SuccessCounts, source: int) -> list[int]:
    """Candidates by the source's success count, most first; ties in prompt order (a stable sort)."""
    return sorted(prompts, key=lambda q: -counts.correct[source][q])


def balance_pair(a_to_b: Sequence[int], b_to_a: Sequence[int], counts: SuccessCounts, a: int, b: int) -> tuple[
        list[int], list[int]]:
    """GRAFT's balancing for one unordered pair: m = min of the two candidate counts; in each direction keep the m
    candidates the source solves most often plus every prompt tied with the m-th (so a direction may keep more
    than m). m = 0 keeps nothing. Returns (kept a -> b, kept b -> a)."""
    m = min(len(a_to_b), len(b_to_a))

    def keep(prompts: Sequence[int], source: int) -> list[int]:
        if m == 0:
            return []
        ranked = _ranked(prompts, counts, source)
        cut = counts.correct[source][ranked[m - 1]]
        return [q for q in ranked if counts.correct[source][q] >= cut]

    return keep(a_to_b, a), keep(b_to_a, b)


def graft_assignments(counts: SuccessCounts, *, sources: Sequence[int], receivers: Sequence[int],
                      balance: bool) -> dict[tuple[int, int], list[int]]:
    """Kept transfers per ordered pair (source, receiver): the prompts whose whole group moves from source to
    receiver this step.

    With several candidate sources for one failed prompt (n >= 3, our extension of GRAFT), the receiver takes the
    one with the most successes on it (ties: the lowest agent index), so a failed prompt takes at most one group.
    Balancing is then applied per unordered pair of live agents (agents that are both sources and receivers) on
    those assignments. Transfers from a source that is not a receiver (a replayed peer) are one-directional and
    never balanced; `balance=False` (the "no balancing" ablation) keeps every assignment.
    """
    assigned: dict[tuple[int, int], list[int]] = {}
    for r in receivers:
        for q in range(counts.n_prompts):
            if not counts.fails(r, q):
                continue
            options = [s for s in sources if s != r and counts.mixed(s, q)]
            if options:
                best = max(options, key=lambda s: (counts.correct[s][q], -s))
                assigned.setdefault((best, r), []).append(q)
    if not balance:
        return assigned
    live = sorted(set(sources) & set(receivers))
    kept = {pair: qs for pair, qs in assigned.items() if pair[0] not in live}
    for i, a in enumerate(live):
        for b in live[i + 1:]:
            ab, ba = balance_pair(assigned.get((a, b), []), assigned.get((b, a), []), counts, a, b)
            if ab:
                kept[(a, b)] = ab
            if ba:
                kept[(b, a)] = ba
    return kept


def compatibility_weights(receiver_old_logps: Tensor, source_logps: Tensor, *, delta: float,
                          weighting: bool) -> tuple[Tensor, Tensor]:
    """GRAFT's gate for transferred responses: score = exp(lbar_r_old - lbar_s); keep score > delta; weight
    min(score, 1) (or 1 without weighting). Inputs are length-normalised log-probs per response; returns
    (keep mask, weights) of the same length."""
    score = torch.exp(receiver_old_logps.double() - source_logps.double())
    keep = score > delta
    weights = score.clamp(max=1.0) if weighting else torch.ones_like(score)
    return keep, torch.where(keep, weights, torch.zeros_like(weights))


def sgt_draws(counts: SuccessCounts, correct_rows: dict[tuple[int, int], list[int]], *, receiver: int,
              sources: Sequence[int], generator: torch.Generator) -> dict[int, int]:
    """SGT: for every prompt the receiver failed on which some peer has a correct response, one of those correct
    peer responses drawn uniformly at random. `correct_rows[(j, q)]` lists the pool rows of agent j's correct
    responses to q; returns {prompt: pool row}. Draws in prompt order from `generator`."""
    out: dict[int, int] = {}
    for q in range(counts.n_prompts):
        if not counts.fails(receiver, q):
            continue
        rows = [row for s in sources if s != receiver for row in correct_rows.get((s, q), [])]
        if rows:
            out[q] = rows[int(torch.randint(len(rows), (1,), generator=generator))]
    return out
