"""The shipped zoo agents: every built-in agent comes with hacrl, checked against its SHA-256 manifest, so every
machine starts from the same weights (a rebuild on another CPU gives other ones); a damaged file is refused; and the
warm start recorded with an agent is what a run starting from it measures at step 0."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import tiny_run_config
from hacrl.config import config_from_dict
from hacrl.models import zoo
from hacrl.models.loading import AgentLoadError, resolve_model_path
from hacrl.trainer import Trainer


@pytest.mark.parametrize("name", sorted(zoo.RECIPES))
def test_every_builtin_agent_is_shipped_small_and_checks_out(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = zoo.shipped_dir(name)
    assert path is not None and path.parent == zoo.SHIPPED_DIR
    zoo.verify_shipped(path)
    meta = json.loads((path / zoo.AGENT_META_FILE).read_text())
    assert meta["recipe_key"] == zoo.recipe_key(name) and meta["recipe"] == zoo.get_recipe(name).to_dict()
    assert (path / "model.safetensors").stat().st_size < 2_000_000  # float16, well under a megaparameter

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a shipped agent must not be trained")

    monkeypatch.setattr(zoo.store, "train_agent", no_build)
    assert resolve_model_path(f"zoo:{name}") == path


def test_a_damaged_shipped_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = sorted(zoo.RECIPES)[0]
    root = tmp_path / "shipped"
    shutil.copytree(zoo.shipped_dir(name), root / name)
    weights = root / name / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the last weight
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(zoo.store, "SHIPPED_DIR", root)
    with pytest.raises(zoo.ZooIntegrityError, match=r"model\.safetensors"):
        zoo.build(name)
    with pytest.raises(AgentLoadError, match=rf"zoo:{name}.*model\.safetensors.*reinstall hacrl"):
        resolve_model_path(f"zoo:{name}")
    (root / name / zoo.store.CHECKSUM_FILE).unlink()
    with pytest.raises(zoo.ZooIntegrityError, match="manifest is missing"):
        zoo.build(name)


def test_a_recipe_changed_since_shipping_is_built_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    name = sorted(zoo.RECIPES)[0]
    changed = replace(zoo.RECIPES[name], lr=zoo.RECIPES[name].lr * 2)
    assert zoo.shipped_dir(changed) is None  # the shipped copy belongs to the old recipe: never served for this one


def test_the_recorded_warm_start_is_a_runs_step0_accuracy(tmp_path: Path) -> None:
    """The zoo measures its warm start with the one evaluator, so a run from the shipped agents reports the same
    numbers before its first step (the whole held-out split, greedy, the default token limit)."""
    agents = [(n, f"zoo:{n}") for n in zoo.PAIRS["model"]]
    data = tiny_run_config(tmp_path / "run", algorithm="grpo", agents=agents, max_new_tokens=48)
    data["task"] = {"name": "arithmetic"}
    data["training"].pop("eval_limit")
    trainer = Trainer(config_from_dict(data))
    try:
        measured = trainer.evaluate()
    finally:
        trainer.close()
    for name, _ in agents:
        recorded = json.loads((zoo.shipped_dir(name) / zoo.AGENT_META_FILE).read_text())["warm_start"]
        assert recorded["eval_problems"] == len(trainer.eval_problems) == 500
        assert measured[name]["accuracy"] == pytest.approx(recorded["greedy_accuracy"]["overall"], abs=1e-4)
        for kind in ("add", "mul"):
            assert measured[name][kind] == pytest.approx(recorded["greedy_accuracy"][kind], abs=1e-4)


def test_the_demo_trains_shipped_agents_with_a_sharing_rule() -> None:
    """`hacrl demo` needs no build: both agents are shipped, and its config validates before anything loads."""
    from hacrl.algorithms.presets import get_preset
    from hacrl.cli import demo_config_dict

    cfg = config_from_dict(demo_config_dict())
    assert len(cfg.agents) == 2 and get_preset(cfg.algorithm.name).shares_rollouts
    for agent in cfg.agents:
        assert agent.model.startswith("zoo:") and zoo.shipped_dir(agent.model.removeprefix("zoo:")) is not None
