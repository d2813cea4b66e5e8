"""Config validation: every error names the field and what is allowed; CLI turns them into one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import tiny_run_config
from hacrl.cli import main
from hacrl.config import ConfigError, apply_overrides, config_from_dict, load_config


def base(tmp_path: Path) -> dict:
    return tiny_run_config(tmp_path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["training"].update(stepz=3), r"training.stepz: unknown field; did you mean 'steps'\?"),
        (lambda d: d["training"].update(steps="ten"), r"training.steps: expected an integer, got 'ten'"),
        (lambda d: d["training"].update(steps=0), r"training.steps: must be >= 1, got 0"),
        (lambda d: d["algorithm"].update(name="hacp"), r"algorithm.name: 'hacp' is not one of grpo, gspo"),
        (lambda d: d["algorithm"].update(minibatch_order="random"),
         r"algorithm.minibatch_order: 'random' is not one of self_first, shuffle"),
        (lambda d: d["algorithm"].update(loss_type="sum"), r"algorithm.loss_type: 'sum' is not one of"),
        (lambda d: d["algorithm"].update(ratio_bounds=[2, 3]), r"algorithm.ratio_bounds: must be"),
        (lambda d: d["algorithm"].update(delta=1.5), r"algorithm.delta: must be in \[0, 1\]"),
        (lambda d: d["agents"].append(dict(d["agents"][0])), r"agents: duplicate agent name\(s\) \['char'\]"),
        (lambda d: d["agents"][0].pop("model"), r"agents\[0\].model: required field is missing"),
        (lambda d: d["agents"][0].update(lr="fast"), r"agents\[0\].lr: expected a number, got 'fast'"),
        (lambda d: d.update(agents=[d["agents"][0]]), r"'hacpo' shares rollouts between agents and needs at least 2"),
        (lambda d: d["training"].update(top_p=1.5), r"training.top_p: must be in \(0, 1\]"),
        (lambda d: d["logging"].update(tensorboard="yes"), r"logging.tensorboard: expected true or false"),
        (lambda d: d.update(executor="threads"), r"executor: 'threads' is not one of sequential, ray"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, mutate, message: str) -> None:
    data = base(tmp_path)
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_single_agent_baselines_accept_one_agent(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["agents"] = data["agents"][:1]
    data["algorithm"]["name"] = "gspo"
    assert config_from_dict(data).agents[0].name == "char"


def test_overrides(tmp_path: Path) -> None:
    data = apply_overrides(base(tmp_path), ["training.steps=7", "agents.1.lr=3e-4", "algorithm.name=naive"])
    cfg = config_from_dict(data)
    assert cfg.training.steps == 7 and cfg.agents[1].lr == 3e-4 and cfg.algorithm.name == "naive"
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(base(tmp_path), ["training.steps"])
    with pytest.raises(ConfigError, match="'5' is not an index of a list of 2"):
        apply_overrides(base(tmp_path), ["agents.5.lr=1"])


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("agents: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(bad)


def test_cli_prints_one_clear_line_for_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = base(tmp_path)
    data["agents"][0]["model"] = str(tmp_path / "no-such-model")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "hacrl train: error: agent 'char': model directory" in err and "does not exist" in err
    assert "Traceback" not in err
    assert main(["train", str(path), "--set", "training.steps=abc"]) == 2
    assert "training.steps: expected an integer, got 'abc'" in capsys.readouterr().err
