"""CapabilityTracker: window, floor, ratio clipping, state round-trip (docs/method.md §3.2)."""

import pytest
import torch

from hacrl.algorithms import CapabilityTracker


def _step(tracker: CapabilityTracker, per_agent: list[list[float]]) -> None:
    rewards = torch.tensor([r for rs in per_agent for r in rs], dtype=torch.float64)
    sources = torch.tensor([j for j, rs in enumerate(per_agent) for _ in rs])
    tracker.update(rewards, sources)


def test_window_mean_includes_current_step_and_forgets_old_ones() -> None:
    t = CapabilityTracker(2, window=2)
    _step(t, [[1, 1], [0, 0, 0, 1]])  # P = (1, 0.25)
    assert t.capabilities().tolist() == pytest.approx([1.0, 0.25])
    _step(t, [[0, 1], [1, 1, 1, 1]])  # P = (0.5, 1)
    assert t.capabilities().tolist() == pytest.approx([0.75, 0.625])
    _step(t, [[0, 0], [0.5, 0.5, 0.5, 0.5]])  # P = (0, 0.5); the first step leaves the window
    assert t.capabilities().tolist() == pytest.approx([0.25, 0.75])
    assert t.steps_seen == 2


def test_fractional_rewards_use_the_mean_not_the_fraction_positive() -> None:
    t = CapabilityTracker(2)
    _step(t, [[0.2, 0.4], [1.0, 0.0]])
    assert t.capabilities().tolist() == pytest.approx([0.3, 0.5])


def test_floor_and_ratio_clipping() -> None:
    t = CapabilityTracker(3, window=5, ratio_bounds=(0.1, 10.0), floor=1e-8)
    _step(t, [[0.0, 0.0], [1.0, 1.0], [0.04, 0.06]])
    caps = t.capabilities()
    assert caps[0].item() == 1e-8
    assert t.ratio(1, 0) == 10.0  # 1 / 1e-8 clipped to the upper bound
    assert t.ratio(0, 1) == 0.1  # clipped to the lower bound
    assert t.ratio(2, 1) == pytest.approx(0.1)
    assert t.ratio(1, 2) == pytest.approx(10.0)
    assert t.ratio(2, 2) == 1.0
    t2 = CapabilityTracker(2, ratio_bounds=(0.5, 3.0))
    _step(t2, [[0.2], [0.5]])
    assert t2.ratio(1, 0) == pytest.approx(2.5)
    assert t2.ratio(0, 1) == pytest.approx(0.5)  # 0.4 clipped up
    assert t2.ratios_for(torch.tensor([0, 1, 1, 0]), learner=0).tolist() == pytest.approx([1.0, 2.5, 2.5, 1.0])


def test_state_round_trip_and_refusals() -> None:
    t = CapabilityTracker(2, window=3)
    for step in ([[1, 0], [1, 1]], [[0, 0], [1, 0]], [[1, 1], [0, 0]], [[0, 1], [1, 1]]):
        _step(t, step)
    restored = CapabilityTracker(2, window=3)
    restored.load_state_dict(t.state_dict())
    assert torch.equal(restored.capabilities(), t.capabilities())
    _step(t, [[1, 1], [1, 1]])
    _step(restored, [[1, 1], [1, 1]])
    assert torch.equal(restored.capabilities(), t.capabilities())

    with pytest.raises(ValueError, match="n_agents: saved 2, configured 3"):
        CapabilityTracker(3, window=3).load_state_dict(t.state_dict())
    with pytest.raises(ValueError, match="window: saved 3, configured 5"):
        CapabilityTracker(2, window=5).load_state_dict(t.state_dict())
    with pytest.raises(ValueError, match="ratio_bounds"):
        CapabilityTracker(2, window=3, ratio_bounds=(0.2, 5.0)).load_state_dict(t.state_dict())
    bad = t.state_dict() | {"history": [[0.5]]}
    with pytest.raises(ValueError, match="malformed history"):
        CapabilityTracker(2, window=3).load_state_dict(bad)


def test_bad_input_is_named() -> None:
    t = CapabilityTracker(2)
    with pytest.raises(ValueError, match="before any update"):
        t.capabilities()
    with pytest.raises(ValueError, match=r"no response from agent\(s\) \[1\]"):
        t.update(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="rewards contains 1 NaN"):
        t.update(torch.tensor([1.0, float("nan")]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="sources contains index 2"):
        t.update(torch.tensor([1.0, 0.0]), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="sources has 1 entries but 2"):
        t.update(torch.tensor([1.0, 0.0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="window"):
        CapabilityTracker(2, window=0)
    with pytest.raises(ValueError, match="ratio_bounds"):
        CapabilityTracker(2, ratio_bounds=(2.0, 10.0))
