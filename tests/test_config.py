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
        (lambda d: d["agents"][0].update(dtype="bf17"), r"agents\[0\].dtype: 'bf17' is not one of auto, float32"),
        (lambda d: (d["training"].update(num_generations=1), d["algorithm"].update(name="gspo")),
         r"training.num_generations: must be >= 2 with 'gspo', got 1: .* \(TRL's GRPOTrainer refuses it too\)"),
        (lambda d: d["agents"][1].update(num_generations=1, name="bpe") or d["algorithm"].update(name="grpo"),
         r"agents\[1\].num_generations: must be >= 2 with 'grpo', got 1"),
        (lambda d: d["training"].update(minibatch_size=17),
         r"training.minibatch_size: 17 is larger than the batch of agent 'char', 16 responses per step "
         r"\(training.prompts_per_step 2 x 8 responses per prompt, the shared pool of every agent\)"),
        (lambda d: (d["training"].update(minibatch_size=9), d["algorithm"].update(name="gspo")),
         r"minibatch_size: 9 is larger than the batch of agent 'char', 8 responses per step .* its own responses"),
        (lambda d: d["task"].update(reward_fn=["a:f", "b:g"], reward_weights=[1.0]),
         r"task.reward_weights: 1 weights for 2 reward functions"),
        (lambda d: d["task"].update(reward_fn=7), r"task.reward_fn: expected a string or a list of strings, got 7"),
        (lambda d: d["task"].update(reward_fn=[]), r"task.reward_fn: an empty list"),
        (lambda d: d["agents"][1].update(lora={"r": 0}), r"agents\[1\].lora.r: the adapter rank must be >= 1, got 0"),
        (lambda d: d["agents"][1].update(lora={"r": -4}), r"agents\[1\].lora.r: the adapter rank must be >= 1, got -4"),
        (lambda d: d["agents"][1].update(lora={"rank": 8}),
         r"agents\[1\].lora.rank: unknown field \(valid: r, alpha, dropout, target_modules; also lora_alpha, "
         r"lora_dropout\)"),
        (lambda d: d["agents"][1].update(lora={"alpha": 0}), r"agents\[1\].lora.alpha: must be a number > 0"),
        (lambda d: d["agents"][1].update(lora={"alpha": 8, "lora_alpha": 16}),
         r"agents\[1\].lora.lora_alpha: the same field as 'agents\[1\].lora.alpha'; give only one"),
        (lambda d: d["agents"][1].update(lora={"lora_dropout": 0.05}),
         r"agents\[1\].lora.dropout: must be 0, got 0.05: .* noise to every ratio, which GSPO/HACPO clip at 3e-4"),
        (lambda d: d["agents"][1].update(lora={"target_modules": "q_proj"}),
         r"agents\[1\].lora.target_modules: a list of module names .* or 'all-linear', got 'q_proj'"),
        (lambda d: d["agents"][1].update(lora={"target_modules": []}),
         r"agents\[1\].lora.target_modules: name at least one module"),
        (lambda d: d["agents"][1].update(lora=8), r"agents\[1\].lora: expected a mapping of fields, got 8"),
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


def test_hacpo_with_one_response_per_agent_still_has_a_group(tmp_path: Path) -> None:
    """A sharing preset's group is every agent's responses to the prompt: 2 agents x 1 response is a group of 2."""
    data = base(tmp_path)
    data["training"].update(num_generations=1, minibatch_size=2)
    assert config_from_dict(data).training.num_generations == 1


def test_reward_fn_list_and_weights(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["task"].update(reward_fn=["rewards:graded", "rewards:graded"], reward_weights=[1, 0.5])
    task = config_from_dict(data).task
    assert task.reward_fn == ["rewards:graded", "rewards:graded"] and task.reward_weights == [1.0, 0.5]


def test_lora_takes_peft_names_and_defaults_alpha_to_twice_the_rank(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["agents"][0]["lora"] = {"r": 8, "lora_alpha": 4, "lora_dropout": 0.0, "target_modules": ["c_attn"]}
    data["agents"][1]["lora"] = {}
    first, second = (a.lora for a in config_from_dict(data).agents)
    assert first is not None and (first.r, first.effective_alpha, first.target_modules) == (8, 4.0, ["c_attn"])
    assert second is not None and (second.r, second.effective_alpha, second.target_modules) == (16, 32.0, "all-linear")
    data["agents"][1].pop("lora")
    assert config_from_dict(data).agents[1].lora is None  # full-parameter training unless asked


def test_lora_without_peft_names_the_field_and_the_install_command(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    data = base(tmp_path)
    data["agents"][1]["lora"] = {"r": 8}
    with pytest.raises(ConfigError, match=r"agents\[1\].lora: LoRA agents need peft, which is not installed "
                                          r"\(pip install 'hacrl\[lora\]' \(or pip install peft\)\)"):
        config_from_dict(data)
    data["agents"][1].pop("lora")
    config_from_dict(data)  # full agents never need peft
