"""Algorithm presets: every name exists, ablations differ from HACPO in exactly their switch."""

import pytest

from hacrl.algorithms import PRESETS, get_preset


def test_all_names_present() -> None:
    assert set(PRESETS) == {"grpo", "gspo", "gspo_x2", "naive", "hacpo", "hacpo-no-adv", "hacpo-no-omega",
                            "hacpo-alpha0", "hacpo-no-stepwise", "hacpo-no-clip"}


@pytest.mark.parametrize(
    ("name", "switch"),
    [("hacpo-no-adv", {"advantage": "joint"}), ("hacpo-no-omega", {"omega_in_loss": False}),
     ("hacpo-alpha0", {"alpha": 0.0}), ("hacpo-no-stepwise", {"stepwise": False}),
     ("hacpo-no-clip", {"clip_cross": False})],
)
def test_ablation_differs_in_one_switch(name: str, switch: dict) -> None:
    base = get_preset("hacpo").to_dict()
    ablation = get_preset(name).to_dict()
    differing = {k for k in base if base[k] != ablation[k]} - {"name", "description"}
    assert differing == set(switch)
    assert all(ablation[k] == v for k, v in switch.items())


def test_baselines() -> None:
    assert not get_preset("gspo").shares_rollouts and get_preset("gspo").loss == "gspo"
    assert get_preset("gspo_x2").rollout_multiplier == 2
    assert get_preset("grpo").loss == "grpo"
    naive = get_preset("naive")
    assert naive.shares_rollouts and naive.advantage == "joint" and naive.loss == "gspo"


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError, match="unknown algorithm 'ppo'; choose one of: grpo, gspo"):
        get_preset("ppo")
