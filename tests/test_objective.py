"""From a preset name to the loss it computes: every preset on one hand-made step, values and gradients by hand.

The step (torchtune style: every expected number is derived in the comments, not by the code under test):
two agents answer one prompt twice each; learner 0 is being trained.

    pool row      source  reward   rollout ratio s   (per-token logps: mean - source_logp = log s)
    0 (self)        0       1        1.0002
    1 (self)        0       0        1.01
    2 (cross)       1       1        0.9
    3 (cross)       1       1        0.5

Capability after this step (window 1): Phat_0 = 0.5, Phat_1 = 1.0, so the baseline weighs agent 1's rewards by
omega^(0,1) = 0.5 and HACPO's loss weighs agent 1's rows by omega^(1,0) = 2.0.
Advantages (eps = 1e-6; the joint group's unbiased std of [1, 0, 1, 1] is 0.5):
* capability (HACPO): mu = (1*1 + 1*0 + 0.5*1 + 0.5*1) / 4 = 0.5, so A = +-0.5 / 0.500001 = +-a;
* joint group (Naive, hacpo-no-adv): mean 0.75, so A = 0.25/0.500001 = e for reward 1 and -3e for reward 0;
* source group (GRPO/GSPO, own rows only): mean 0.5, std sqrt(0.5), so A = +-0.5/(sqrt(0.5) + 1e-6) = +-b.
The update index is m = 1, so HACPO's cross lower bound is 1 - 0.2 + 0.025 = 0.825 (0.8 without stepwise).
"""

from __future__ import annotations

import math

import pytest
import torch

from hacrl.algorithms import PRESETS, CapabilityTracker, resolve_objective
from hacrl.algorithms.objective import LossInputs, Objective
from hacrl.config import AlgorithmConfig

f64 = torch.float64
RATIOS = [1.0002, 1.01, 0.9, 0.5]
REWARDS = [1.0, 0.0, 1.0, 1.0]
SOURCES = [0, 0, 1, 1]
TOKEN_RATIOS_ROW0 = [1.1, 1.5, 0.5]  # GRPO: learner's own token ratios against its old policy (row 1: all 1.0)
a = 0.5 / 0.500001
e = 0.25 / 0.500001
b = 0.5 / (math.sqrt(0.5) + 1e-6)
M = 1


def objective(name: str) -> Objective:
    return resolve_objective(AlgorithmConfig(name=name), max_completion_length=4)


def plan(obj: Objective) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    tracker = CapabilityTracker(2, window=1)
    rewards, sources = torch.tensor(REWARDS, dtype=f64), torch.tensor(SOURCES)
    tracker.update(rewards, sources)
    rows = obj.plan_rows(rewards=rewards, groups=torch.zeros(4, dtype=torch.long), sources=sources, learner=0,
                         capability=tracker)
    return rows.indices, torch.tensor(rows.advantages, dtype=f64), torch.tensor(rows.weights, dtype=f64)


def inputs(rows: list[int], advantages: torch.Tensor, weights: torch.Tensor) -> LossInputs:
    """Per-token logps (3 tokens + one padding column) whose mean is -1 + log s, a spread around it."""
    spread = torch.tensor([0.3, -0.1, -0.2], dtype=f64)
    logps = torch.zeros(len(rows), 4, dtype=f64)
    for i, r in enumerate(rows):
        logps[i, :3] = -1.0 + math.log(RATIOS[r]) + spread
    logps[:, 3] = -math.inf
    mask = torch.zeros(len(rows), 4, dtype=torch.bool)
    mask[:, :3] = True
    token_ratios = torch.ones(len(rows), 4, dtype=f64)
    token_ratios[0, :3] = torch.tensor(TOKEN_RATIOS_ROW0, dtype=f64)
    old = torch.where(mask, logps - token_ratios.log(), torch.zeros_like(logps))
    source = torch.full((len(rows),), -1.0, dtype=f64)
    return LossInputs(logps=logps.requires_grad_(True), mask=mask, source_logps=source,
                      advantages=advantages, is_self=torch.tensor([SOURCES[r] == 0 for r in rows]), weights=weights,
                      old_token_logps=old)


# Per preset: the rows learner 0 trains on, their advantages and weights, the loss, and d loss / d logps of each
# row's tokens (a sequence-level term J_i contributes -(dJ_i/d seq_i) / (B * T) to each of its T tokens, with
# dJ/dseq = s * A for an unclipped GSPO term and s * c^alpha * w * A for an unclipped cross term; 0 when clipped).
SEQ_CASES = {
    # self row 0: inside [1-3e-4, 1+4e-4] -> 1.0002 b; row 1: A < 0 and s > 1+4e-4 -> unclipped min -1.01 b
    "gspo": dict(rows=[0, 1], adv=[b, -b], w=[1, 1], terms=[1.0002 * b, -1.01 * b], dj=[1.0002 * b, -1.01 * b]),
    "gspo_x2": dict(rows=[0, 1], adv=[b, -b], w=[1, 1], terms=[1.0002 * b, -1.01 * b], dj=[1.0002 * b, -1.01 * b]),
    # every row GSPO against its source's rollout log-prob; row 2: A > 0, s = 0.9 < 1-3e-4 -> unclipped 0.9 e
    "naive": dict(rows=[0, 1, 2, 3], adv=[e, -3 * e, e, e], w=[1, 1, 1, 1],
                  terms=[1.0002 * e, -1.01 * 3 * e, 0.9 * e, 0.5 * e], dj=[1.0002 * e, -3.03 * e, 0.9 * e, 0.5 * e]),
    # cross row 2: c = 0.9 -> 0.9 * 0.9 * 2 * a; row 3: 0.5 < 0.825 -> c = 0.825 (no gradient)
    "hacpo": dict(rows=[0, 1, 2, 3], adv=[a, -a, a, a], w=[1, 1, 2, 2],
                  terms=[1.0002 * a, -1.01 * a, 0.81 * 2 * a, 0.825**2 * 2 * a],
                  dj=[1.0002 * a, -1.01 * a, 0.81 * 2 * a, 0.0]),
    "hacpo-no-adv": dict(rows=[0, 1, 2, 3], adv=[e, -3 * e, e, e], w=[1, 1, 2, 2],
                         terms=[1.0002 * e, -3.03 * e, 0.81 * 2 * e, 0.825**2 * 2 * e],
                         dj=[1.0002 * e, -3.03 * e, 0.81 * 2 * e, 0.0]),
    "hacpo-no-omega": dict(rows=[0, 1, 2, 3], adv=[a, -a, a, a], w=[1, 1, 1, 1],
                           terms=[1.0002 * a, -1.01 * a, 0.81 * a, 0.825**2 * a],
                           dj=[1.0002 * a, -1.01 * a, 0.81 * a, 0]),
    # alpha = 0: J = c * w * A, dJ/dseq = s * w * A inside
    "hacpo-alpha0": dict(rows=[0, 1, 2, 3], adv=[a, -a, a, a], w=[1, 1, 2, 2],
                         terms=[1.0002 * a, -1.01 * a, 0.9 * 2 * a, 0.825 * 2 * a],
                         dj=[1.0002 * a, -1.01 * a, 1.8 * a, 0]),
    # fixed bound 0.8: row 3 clipped to 0.8
    "hacpo-no-stepwise": dict(rows=[0, 1, 2, 3], adv=[a, -a, a, a], w=[1, 1, 2, 2],
                              terms=[1.0002 * a, -1.01 * a, 0.81 * 2 * a, 0.64 * 2 * a],
                              dj=[1.0002 * a, -1.01 * a, 0.81 * 2 * a, 0]),
    # no clip: c = s, row 3: 0.5 * 0.5 * 2 * a, gradient 0.25 * 2 * a
    "hacpo-no-clip": dict(rows=[0, 1, 2, 3], adv=[a, -a, a, a], w=[1, 1, 2, 2],
                          terms=[1.0002 * a, -1.01 * a, 0.81 * 2 * a, 0.25 * 2 * a],
                          dj=[1.0002 * a, -1.01 * a, 0.81 * 2 * a, 0.25 * 2 * a]),
}


def test_every_preset_has_a_hand_computed_case() -> None:
    """HACPO, GSPO, GRPO and Naive families here; GRAFT's and SGT's in test_sharing.py."""
    assert set(SEQ_CASES) | {"grpo"} == {name for name in PRESETS if not name.startswith(("graft", "sgt"))}


@pytest.mark.parametrize("name", sorted(SEQ_CASES))
def test_preset_loss_and_gradient_by_hand(name: str) -> None:
    case = SEQ_CASES[name]
    obj = objective(name)
    rows, adv, weights = plan(obj)
    assert rows == case["rows"]
    assert adv.tolist() == pytest.approx(case["adv"], rel=1e-12)
    assert weights.tolist() == pytest.approx(case["w"], rel=1e-12)
    x = inputs(rows, adv, weights)
    loss, _ = obj.loss(x, M)
    n = len(rows)
    assert loss.item() == pytest.approx(-sum(case["terms"]) / n, rel=1e-9)
    loss.backward()
    for i, dj in enumerate(case["dj"]):
        assert x.logps.grad[i, :3].tolist() == pytest.approx([-dj / (n * 3)] * 3, rel=1e-9, abs=1e-15), (name, i)


def test_grpo_loss_and_gradient_by_hand() -> None:
    """GRPO: own rows, token ratios against the learner's old policy, DAPO clip [0.8, 1.28], token mean (dapo).

    Row 0 (A = +b), token ratios 1.1 (inside), 1.5 (clipped to 1.28: no gradient), 0.5 (below with A > 0:
    unclipped); row 1 (A = -b), ratios 1.0. Loss = -(1.1 b + 1.28 b + 0.5 b - 3 b) / 6 tokens.
    """
    obj = objective("grpo")
    rows, adv, weights = plan(obj)
    assert rows == [0, 1] and adv.tolist() == pytest.approx([b, -b], rel=1e-12)
    x = inputs(rows, adv, weights)
    loss, _ = obj.loss(x, M)
    assert loss.item() == pytest.approx(-(1.1 + 1.28 + 0.5 - 3.0) * b / 6, rel=1e-9)
    loss.backward()
    # d/d logp_t of -(1/6) sum min(r A, clip(r) A) = -r_t A / 6 where unclipped
    assert x.logps.grad[0, :3].tolist() == pytest.approx([-1.1 * b / 6, 0.0, -0.5 * b / 6], rel=1e-9)
    assert x.logps.grad[1, :3].tolist() == pytest.approx([b / 6] * 3, rel=1e-9)
    assert obj.loss.normaliser == "tokens"
    assert resolve_objective(AlgorithmConfig(name="grpo", loss_type="grpo"), max_completion_length=4).loss.normaliser \
        == "responses"


def test_objective_fills_every_number() -> None:
    """Preset pins win over the config, eps defaults follow the loss, nothing is left None."""
    hacpo = objective("hacpo").loss
    assert (hacpo.eps_low, hacpo.eps_high, hacpo.alpha, hacpo.delta, hacpo.delta_step, hacpo.clip_cross) == \
        (3e-4, 4e-4, 1.0, 0.2, 0.025, True)
    assert hacpo.lower_bound(3) == pytest.approx(0.875)
    pinned = resolve_objective(AlgorithmConfig(name="hacpo-alpha0", alpha=3.0), max_completion_length=4).loss
    assert pinned.alpha == 0.0
    grpo = objective("grpo").loss
    assert (grpo.eps_low, grpo.eps_high, grpo.loss_type, grpo.max_completion_length) == (0.2, 0.28, "dapo", 4)
    custom = resolve_objective(AlgorithmConfig(name="gspo", eps_low=0.1, eps_high=0.2), max_completion_length=4)
    assert (custom.loss.eps_low, custom.loss.eps_high) == (0.1, 0.2)
    assert objective("gspo_x2").rollout_multiplier == 2 and objective("gspo").rollout_multiplier == 1
    assert objective("naive").shares_rollouts and not objective("grpo").shares_rollouts


def test_objective_is_picklable() -> None:
    import pickle

    obj = objective("hacpo")
    assert pickle.loads(pickle.dumps(obj)) == obj


def test_source_group_advantages_on_pooled_rows() -> None:
    """`source_group` on the pool (GRAFT's convention): each row normalised within its source's own group."""
    from dataclasses import replace

    obj = replace(objective("naive"), advantage="source_group")
    rows, adv, _ = plan(obj)
    # agent 0's group [1, 0] -> +-b; agent 1's group [1, 1] is uniform -> 0
    assert rows == [0, 1, 2, 3] and adv.tolist() == pytest.approx([b, -b, 0.0, 0.0], rel=1e-12)
