"""Presets as data: the names, the one-field ablations, and the combinations a preset may not make."""

import pytest

from hacrl.algorithms import PRESETS, get_preset
from hacrl.algorithms.presets import Preset


def test_all_names_present() -> None:
    assert set(PRESETS) == {"grpo", "gspo", "gspo_x2", "naive", "hacpo", "hacpo-no-adv", "hacpo-no-omega",
                            "hacpo-alpha0", "hacpo-no-stepwise", "hacpo-no-clip", "graft", "graft-no-weight",
                            "graft-no-gate", "graft-no-balance", "graft-seq", "graft-peer-first", "graft-successes",
                            "sgt"}


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [("hacpo-no-adv", "advantage", "joint_group"), ("hacpo-no-omega", "cross_weights", "none"),
     ("hacpo-alpha0", "pins", (("alpha", 0.0),)), ("hacpo-no-stepwise", "pins", (("delta_step", 0.0),)),
     ("hacpo-no-clip", "pins", (("clip_cross", False),)),
     ("graft-no-weight", "weighting", False), ("graft-no-gate", "pins", (("gate_delta", 0.0),)),
     ("graft-no-balance", "balance", False), ("graft-seq", "loss", "sequence_clip_old"),
     ("graft-peer-first", "minibatch_order", "peer_first"), ("graft-successes", "transfer", "successes")],
)
def test_ablation_differs_from_its_rule_in_one_field(name: str, field: str, value: object) -> None:
    rule = name.split("-")[0]
    base, ablation = get_preset(rule).to_dict(), get_preset(name).to_dict()
    differing = {k for k in base if base[k] != ablation[k]} - {"name", "description"}
    assert differing == {field}
    assert getattr(get_preset(name), field) == value


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"rows": "own", "advantage": "capability", "loss": "sequence_clip"}, "needs shared rows"),
     ({"rows": "own", "advantage": "source_group", "loss": "hacpo"}, "cross-row loss, weighting or gate needs"),
     ({"gate": True}, "the compatibility gate belongs to rows='graft'"),
     ({"pins": (("eps_low", 0.1),)}, "only .* can be pinned")],
)
def test_contradictory_presets_are_refused(changes: dict, message: str) -> None:
    fields = {"name": "x", "description": "", "rows": "pool", "advantage": "capability", "loss": "hacpo",
              "baseline": "gspo"} | changes
    with pytest.raises(ValueError, match=message):
        Preset(**fields)


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError, match="unknown algorithm 'ppo'; choose one of: grpo, gspo"):
        get_preset("ppo")


def test_budget_names_resolve_to_their_base() -> None:
    n32 = get_preset("grpo_n32")
    assert (n32.rows, n32.loss, n32.num_generations, n32.baseline) == ("own", "token_clip", 32, "grpo")
    for bad in ("grpo_n0", "graft_n16", "grpo_n"):
        with pytest.raises(ValueError, match="unknown algorithm"):
            get_preset(bad)
