"""Hand-computed checks of the per-run training diagnostics that `hacrl compare` prints beside its accuracies."""

from __future__ import annotations

import pytest

from hacrl.run_diagnostics import diagnostics_table, mean_over_runs, reward_window, summarise_agent


def _rows(rewards: list[float], **extra: list[float]) -> list[dict[str, float]]:
    rows = []
    for i, r in enumerate(rewards):
        row = {"step": i + 1, "reward": r}
        row.update({k: v[i] for k, v in extra.items()})
        rows.append(row)
    return rows


def test_reward_windows_are_a_quarter_of_the_run() -> None:
    assert [reward_window(n) for n in (1, 3, 4, 8, 40)] == [1, 1, 1, 2, 10]
    # 8 steps -> windows of 2: first (0.1 + 0.2) / 2, last (0.7 + 0.9) / 2; records out of order are sorted.
    rows = _rows([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9], grad_norm=[1, 2, 3, 4, 5, 6, 7, 8])
    d = summarise_agent(list(reversed(rows)))
    assert d["reward_first"] == pytest.approx(0.15) and d["reward_last"] == pytest.approx(0.8)
    assert d["grad_norm"] == pytest.approx(4.5) and d["steps"] == 8


def test_missing_and_non_finite_values_are_left_out_not_zeroed() -> None:
    rows = _rows([0.5, 0.5], **{"cross/weight_mean": [2.0, float("nan")]})
    d = summarise_agent(rows)
    assert d["cross/weight_mean"] == pytest.approx(2.0)  # the NaN step is ignored, not averaged as 0
    assert d["cross/zero_grad_frac"] is None  # a single-agent run logs no cross metrics
    assert summarise_agent([])["reward_first"] is None


def test_mean_over_runs_and_table() -> None:
    a = {"reward_first": 0.1, "reward_last": 0.3, "grad_norm": 1.0, "cross/zero_grad_frac": None}
    b = {"reward_first": 0.3, "reward_last": 0.5, "grad_norm": 3.0, "cross/zero_grad_frac": 0.25}
    m = mean_over_runs([a, b])
    assert m["reward_first"] == pytest.approx(0.2) and m["grad_norm"] == pytest.approx(2.0)
    assert m["cross/zero_grad_frac"] == pytest.approx(0.25)  # one seed logged it, the other did not
    lines = diagnostics_table([("HACPO", m)])
    assert lines[0].startswith("| Method | Train reward, first → last quarter | Grad norm (pre-clip) |")
    assert lines[2].startswith("| HACPO | 20% → 40% | 2.00 | - | 25% |")
