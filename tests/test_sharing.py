"""GRAFT and SGT by hand: candidates, balancing with ties, n = 3 assignment, the gate at its boundaries, the rows and
advantages each learner gets, the receiver-old-policy ratio, SGT's draw and its NLL term."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from hacrl.algorithms import CapabilityTracker, resolve_objective
from hacrl.algorithms.objective import CompatibilityGate, LossInputs, Objective, PlannedRows
from hacrl.algorithms.sharing import (
    SuccessCounts,
    balance_pair,
    compatibility_weights,
    graft_assignments,
    graft_candidates,
    sgt_draws,
    success_counts,
)
from hacrl.config import AlgorithmConfig

f64 = torch.float64
b = 0.5 / (math.sqrt(0.5) + 1e-6)  # advantage of a [1, 0] group: +-0.5 / (std sqrt(0.5) + eps)


def counts(correct: list[list[int]], g: int = 4) -> SuccessCounts:
    return SuccessCounts(correct, [[g] * len(correct[0]) for _ in correct])


def test_candidates_need_an_all_fail_receiver_and_a_mixed_source() -> None:
    c = counts([[0, 0, 2, 0],   # receiver 0: fails q0, q1, q3
                [2, 4, 1, 0]])  # source 1: mixed on q0 and q2, all-correct on q1, all-fail on q3
    assert graft_candidates(c, source=1, receiver=0) == [0]  # q1 excluded (all correct), q3 (no success)
    assert graft_candidates(c, source=0, receiver=1) == []  # agent 1 fails only q3, where agent 0 fails too
    assert c.fails(1, 3) and not c.mixed(1, 1)


def test_success_counts_from_pool_tensors() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0], dtype=f64)
    got = success_counts(rewards, torch.tensor([0, 0, 1, 0, 1]), torch.tensor([0, 0, 0, 1, 1]), n_agents=2,
                         n_prompts=2, max_reward=1.0)
    assert got.correct == [[1, 0], [1, 1]] and got.total == [[2, 1], [1, 1]]


def test_balancing_keeps_ties_with_the_mth_and_nothing_at_m_zero() -> None:
    # a -> b has 4 candidates with a's success counts 3, 2, 2, 1; b -> a has 2 (b's counts 1 and 3): m = 2
    c = counts([[3, 2, 2, 1, 0, 0], [0, 0, 0, 0, 1, 3]])
    kept_ab, kept_ba = balance_pair([0, 1, 2, 3], [4, 5], c, 0, 1)
    assert kept_ab == [0, 1, 2]  # the 2nd-best has 2 successes; q2 ties with it: 3 kept > m
    assert kept_ba == [5, 4]  # ranked by b's success count
    assert balance_pair([0, 1], [], c, 0, 1) == ([], [])  # m = 0 keeps nothing


def test_n3_assignment_takes_the_best_source_then_balances_pairs() -> None:
    #            q0 q1 q2
    c = counts([[0, 0, 2],   # agent 0 fails q0 and q1
                [2, 1, 0],   # agent 1 mixed on q0, q1; fails q2
                [3, 1, 1]])  # agent 2 mixed on everything
    unbalanced = graft_assignments(c, sources=[0, 1, 2], receivers=[0, 1, 2], balance=False)
    # agent 0's q0: sources 1 (2 successes) and 2 (3) -> 2; its q1: a tie (1 and 1) -> the lower index, 1;
    # agent 1's q2: sources 0 (2 successes) and 2 (1) -> 0; agent 2 fails nothing
    assert unbalanced == {(2, 0): [0], (1, 0): [1], (0, 1): [2]}
    balanced = graft_assignments(c, sources=[0, 1, 2], receivers=[0, 1, 2], balance=True)
    # pair {0, 1}: 1 -> 0 has [q1], 0 -> 1 has [q2]: m = 1, both kept; pair {0, 2}: 2 -> 0 has [q0], 0 -> 2 none: m = 0
    assert balanced == {(1, 0): [1], (0, 1): [2]}


def test_replayed_sources_are_never_balanced() -> None:
    c = counts([[0, 0], [1, 0], [2, 0]])  # agent 0 live, 1 live, 2 a replayed peer (not a receiver)
    kept = graft_assignments(c, sources=[0, 1, 2], receivers=[0, 1], balance=True)
    assert kept == {(2, 0): [0]}  # one-directional: kept although agent 0 gives nothing back


def test_gate_and_cap_at_their_boundaries() -> None:
    delta = float(torch.exp(torch.tensor(math.log(0.8), dtype=f64)))
    source = torch.zeros(5, dtype=f64)
    old = torch.tensor([math.log(0.8), math.log(0.9), 0.0, math.log(1.2), math.log(0.5)], dtype=f64)
    keep, w = compatibility_weights(old, source, delta=delta, weighting=True)
    assert keep.tolist() == [False, True, True, True, False]  # score = delta is refused (strictly above)
    assert w.tolist() == pytest.approx([0.0, 0.9, 1.0, 1.0, 0.0])  # capped at 1; refused rows weigh 0
    keep, w = compatibility_weights(old, source, delta=delta, weighting=False)
    assert w.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    keep, _ = compatibility_weights(old, source, delta=0.0, weighting=True)
    assert bool(keep.all())  # no gate: every score > 0 passes


def test_sgt_draw_is_seeded_and_uniform_over_correct_peer_responses() -> None:
    c = counts([[0, 1], [2, 0], [1, 0]], g=2)  # receiver 0 fails q0; peers 1 and 2 have 3 correct responses there
    correct = {(1, 0): [10, 11], (2, 0): [20], (0, 1): [30]}
    picks = [sgt_draws(c, correct, receiver=0, sources=[0, 1, 2], generator=torch.Generator().manual_seed(s))
             for s in range(3000)]
    assert all(set(p) == {0} for p in picks)  # only the failed prompt with a correct peer response
    freq = Counter(p[0] for p in picks)
    assert set(freq) == {10, 11, 20} and all(abs(n / 3000 - 1 / 3) < 0.03 for n in freq.values())
    again = sgt_draws(c, correct, receiver=0, sources=[0, 1, 2], generator=torch.Generator().manual_seed(7))
    assert again == picks[7]


# ------------------------------------------------------------------------------ the rows each learner gets

# Two agents, two prompts, two responses each. Agent 0 fails q0 and is mixed on q1; agent 1 is mixed on q0 and
# fails q1. Pool rows:  0, 1: a0 q0 (0, 0) | 2, 3: a0 q1 (1, 0) | 4, 5: a1 q0 (1, 0) | 6, 7: a1 q1 (0, 0)
REWARDS = [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
GROUPS = [0, 0, 1, 1, 0, 0, 1, 1]
SOURCES = [0, 0, 0, 0, 1, 1, 1, 1]


def objective(name: str) -> Objective:
    return resolve_objective(AlgorithmConfig(name=name), max_completion_length=4)


def plan(name: str, learner: int, seed: int = 0) -> PlannedRows:
    tracker = CapabilityTracker(2, window=1)
    rewards, sources = torch.tensor(REWARDS, dtype=f64), torch.tensor(SOURCES)
    tracker.update(rewards, sources)
    return objective(name).plan_rows(rewards=rewards, groups=torch.tensor(GROUPS), sources=sources, learner=learner,
                                     capability=tracker, n_live=2, seed=seed)


def test_graft_replaces_the_all_fail_group_with_the_source_group_and_its_advantages() -> None:
    p0 = plan("graft", 0)
    # learner 0 keeps its q1 rows (2, 3), drops its all-fail q0 rows (0, 1), takes agent 1's q0 group (4, 5)
    assert p0.indices == [2, 3, 4, 5]
    assert p0.advantages == pytest.approx([b, -b, b, -b], rel=1e-12)  # each from its source's own [1, 0] group
    assert p0.weights == [1.0] * 4 and p0.supervised == [False] * 4  # the gate is the learner's, at step start
    assert p0.diagnostics == {"share/transferred_rows": 2.0, "share/from1/candidates": 1.0, "share/from1/kept": 1.0}
    assert plan("graft", 1).indices == [2, 3, 4, 5]  # symmetric: agent 1 takes agent 0's q1 group
    # successes only: the source's failed response stays behind, the advantage of the rest is still the full group's
    p_s = plan("graft-successes", 0)
    assert p_s.indices == [2, 3, 4] and p_s.advantages == pytest.approx([b, -b, b], rel=1e-12)


def test_graft_objective_fields() -> None:
    g = objective("graft")
    assert g.minibatch_order == "peer_last" and g.balance and g.gate == CompatibilityGate(delta=0.8, weighting=True)
    assert g.loss.eps_low == 0.2 and g.loss.eps_high == 0.28 and g.loss.loss_type == "dapo" and g.loss.weighted
    assert g.kl_beta == 0.0 and g.nll_weight == 0.0
    assert objective("graft-no-gate").gate == CompatibilityGate(delta=0.0, weighting=True)
    assert objective("graft-no-weight").gate == CompatibilityGate(delta=0.8, weighting=False)
    assert not objective("graft-no-balance").balance
    assert objective("graft-peer-first").minibatch_order == "peer_first"
    assert objective("graft-seq").loss.needs_old_token_logps


def test_graft_loss_uses_the_receivers_old_policy_and_the_weights() -> None:
    """Token-level PPO against the RECEIVER's old log-probs (the source's rollout log-prob plays no part); token
    mean over the mini-batch; each transferred row's terms times its compatibility weight.

    Row 0 (own, A = +b): token ratios 1.1, 1.5 (clipped at 1.28, no gradient), 1.0. Row 1 (transferred, A = -b,
    w = 0.9): ratios 1.0, 0.7 (below 0.8 with A < 0: clipped, no gradient), 1.0.
    loss = -(b (1.1 + 1.28 + 1.0) + 0.9 (-b) (1.0 + 0.8 + 1.0)) / 6
    """
    g = objective("graft")
    logps = torch.full((2, 3), -1.0, dtype=f64)
    ratios = torch.tensor([[1.1, 1.5, 1.0], [1.0, 0.7, 1.0]], dtype=f64)
    inputs = LossInputs(logps=logps.clone().requires_grad_(True), mask=torch.ones(2, 3, dtype=torch.bool),
                        source_logps=torch.tensor([123.0, -55.0], dtype=f64),
                        advantages=torch.tensor([b, -b], dtype=f64),
                        is_self=torch.tensor([True, False]), weights=torch.tensor([1.0, 0.9], dtype=f64),
                        old_token_logps=logps - ratios.log())
    loss, stats = g.minibatch_loss(inputs, 0, supervised=torch.tensor([False, False]))
    expected = -(b * (1.1 + 1.28 + 1.0) + 0.9 * -b * (1.0 + 0.8 + 1.0)) / 6
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    loss.backward()
    grad = inputs.logps.grad
    assert grad[0].tolist() == pytest.approx([-1.1 * b / 6, 0.0, -1.0 * b / 6], rel=1e-9)
    assert grad[1].tolist() == pytest.approx([0.9 * b / 6, 0.0, 0.9 * b / 6], rel=1e-9)
    metrics = stats.metrics()  # own and peer tokens reported apart: one of three peer tokens clipped
    assert metrics["self/count"] == 3 and metrics["cross/count"] == 3
    assert metrics["cross/clip_frac"] == pytest.approx(1 / 3) and metrics["cross/weight_mean"] == pytest.approx(0.9)


def test_sgt_adds_one_correct_peer_response_per_failed_prompt_as_a_supervised_row() -> None:
    p0 = plan("sgt", 0, seed=3)
    # own rows 0-3 with GRPO advantages (q0 uniform -> 0; q1 [1, 0] -> +-b); agent 1's only correct q0 response: row 4
    assert p0.indices == [0, 1, 2, 3, 4] and p0.supervised == [False] * 4 + [True]
    assert p0.advantages == pytest.approx([0.0, 0.0, b, -b, 0.0], rel=1e-12)
    assert p0.diagnostics == {"share/sgt_pairs": 1.0}
    assert plan("sgt", 1).indices == [4, 5, 6, 7, 2]  # agent 1 fails q1; agent 0's correct q1 response is row 2


def test_sgt_loss_is_grpo_plus_lambda_token_mean_nll() -> None:
    """Row 0: a policy row (A = +b, token ratios 1.0); row 1: a supervised row with token log-probs -0.5, -1.5.
    loss = -(b + b) / 2 + 0.1 * (0.5 + 1.5) / 2 (the NLL part is a token mean over the supervised row)."""
    sgt = objective("sgt")
    assert sgt.nll_weight == 0.1 and sgt.minibatch_order == "peer_last"
    logps = torch.tensor([[-1.0, -1.0], [-0.5, -1.5]], dtype=f64)
    inputs = LossInputs(logps=logps.clone().requires_grad_(True), mask=torch.ones(2, 2, dtype=torch.bool),
                        source_logps=torch.zeros(2, dtype=f64), advantages=torch.tensor([b, 0.0], dtype=f64),
                        is_self=torch.tensor([True, False]), weights=torch.ones(2, dtype=f64),
                        old_token_logps=logps.clone())
    loss, _ = sgt.minibatch_loss(inputs, 0, supervised=torch.tensor([False, True]))
    assert loss.item() == pytest.approx(-b + 0.1 * 1.0, rel=1e-9)
    loss.backward()
    assert inputs.logps.grad[0].tolist() == pytest.approx([-b / 2] * 2, rel=1e-9)
    assert inputs.logps.grad[1].tolist() == pytest.approx([-0.1 / 2] * 2, rel=1e-9)  # d(-lambda mean logp)
    only_nll, _ = sgt.minibatch_loss(inputs, 0, supervised=torch.tensor([True, True]))
    assert only_nll.item() == pytest.approx(0.1 * (1 + 1 + 0.5 + 1.5) / 4)


def test_budget_matched_baselines_by_name() -> None:
    n16 = objective("grpo_n16")
    assert n16.rows == "own" and n16.responses_per_prompt(8) == 16 and n16.minibatch_size(64, 8) == 128
    assert objective("gspo_x2").responses_per_prompt(8) == 16 and objective("gspo_x2").minibatch_size(64, 8) == 64
    assert objective("gspo_n24").responses_per_prompt(8) == 24 and objective("gspo_n24").loss.eps_low == 3e-4
    with pytest.raises(ValueError, match="grpo_nK"):
        objective("grpo_x3")


def test_graft_no_balance_keeps_one_directional_transfers() -> None:
    """Agent 0 fails q0 and q1, agent 1 is mixed on both and fails nothing: C(1 -> 0) = {q0, q1}, C(0 -> 1) = {}.
    Balanced, m = 0 keeps nothing; unbalanced, both groups move."""
    rewards = torch.tensor([0, 0, 0, 0, 1, 0, 0, 1], dtype=f64)
    groups, sources = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    tracker = CapabilityTracker(2, window=1)
    tracker.update(rewards, sources)

    def rows(name: str) -> list[int]:
        return objective(name).plan_rows(rewards=rewards, groups=groups, sources=sources, learner=0,
                                         capability=tracker, n_live=2).indices

    assert rows("graft") == [0, 1, 2, 3]
    assert rows("graft-no-balance") == [4, 5, 6, 7]


def test_gate_ablations_by_hand() -> None:
    """Scores 0.5, 0.85, 1.3: GRAFT drops 0.5 and weighs 0.85, 1.0; no weighting keeps the gate with weight 1;
    no gate keeps every row with weight min(score, 1)."""
    from hacrl.learner import gate_rows

    old = torch.tensor([math.log(0.5), math.log(0.85), math.log(1.3)], dtype=f64)
    source = torch.zeros(3, dtype=f64)
    for name, keep, weights in (("graft", [False, True, True], [0.0, 0.85, 1.0]),
                                ("graft-no-weight", [False, True, True], [0.0, 1.0, 1.0]),
                                ("graft-no-gate", [True, True, True], [0.5, 0.85, 1.0])):
        gate = objective(name).gate
        assert gate is not None
        got_keep, got_w = gate_rows(old, source, gate)
        assert got_keep.tolist() == keep and got_w.tolist() == pytest.approx(weights), name


def test_graft_sequence_level_ablation_by_hand() -> None:
    """graft-seq: s_i = exp(mean_t (logp - old logp)) against the receiver's old policy, DAPO's clip [0.8, 1.28],
    mean over rows of w_i * min(s A, clip(s) A).  Row 0: token ratios 1.1, 1.5, 1.0 -> s = (1.65)^(1/3) = 1.1817
    (inside), A = +b. Row 1: ratios 1.0, 0.7, 1.0 -> s = 0.7^(1/3) = 0.8879 (inside), A = -b, w = 0.9."""
    g = objective("graft-seq")
    logps = torch.full((2, 3), -1.0, dtype=f64)
    ratios = torch.tensor([[1.1, 1.5, 1.0], [1.0, 0.7, 1.0]], dtype=f64)
    inputs = LossInputs(logps=logps.clone().requires_grad_(True), mask=torch.ones(2, 3, dtype=torch.bool),
                        source_logps=torch.zeros(2, dtype=f64), advantages=torch.tensor([b, -b], dtype=f64),
                        is_self=torch.tensor([True, False]), weights=torch.tensor([1.0, 0.9], dtype=f64),
                        old_token_logps=logps - ratios.log())
    loss, _ = g.minibatch_loss(inputs, 0, supervised=torch.tensor([False, False]))
    s0, s1 = 1.65 ** (1 / 3), 0.7 ** (1 / 3)
    assert loss.item() == pytest.approx(-(s0 * b + 0.9 * s1 * -b) / 2, rel=1e-9)


def test_every_graft_and_sgt_preset_is_covered_here() -> None:
    from hacrl.algorithms import PRESETS

    covered = {"graft", "graft-successes", "graft-no-balance", "graft-no-weight", "graft-no-gate", "graft-seq",
               "graft-peer-first", "sgt"}  # peer-first: its layout is tested in test_learner.py
    assert covered == {name for name in PRESETS if name.startswith(("graft", "sgt"))}
