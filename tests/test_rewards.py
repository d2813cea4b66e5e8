"""Reward functions written for TRL's GRPOTrainer work unchanged: what they may return, the keyword
arguments they get, several functions with weights, and where their modules are found."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from clitools import env, hacrl, import_path, write_config
from hacrl.config import ConfigError
from hacrl.rewards import RewardFunctionError, RewardFunctions, coerce_rewards, load_reward_function


@pytest.mark.parametrize(("raw", "expected"), [
    ([1.0, 0, True, None], [1.0, 0.0, 1.0, None]),
    ((0.5, False, float("nan"), 2), [0.5, 0.0, None, 2.0]),
    (np.array([True, False, True, False]), [1.0, 0.0, 1.0, 0.0]),
    (np.array([0.25, 0.5, 1.0, 0.0], dtype=np.float32), [0.25, 0.5, 1.0, 0.0]),
    ([np.float64(1.5), np.int32(2), np.bool_(True), torch.tensor(0.5)], [1.5, 2.0, 1.0, 0.5]),
    (torch.tensor([1.0, 0.0, 1.0, 0.0], requires_grad=True), [1.0, 0.0, 1.0, 0.0]),
    (torch.tensor([True, False, False, True]), [1.0, 0.0, 0.0, 1.0]),
    ((x for x in (1, 2, 3, 4)), [1.0, 2.0, 3.0, 4.0]),
])
def test_what_trl_accepts_is_accepted(raw: object, expected: list[float | None]) -> None:
    values, invalid = coerce_rewards(raw, 4)
    assert values == expected and invalid == 0


@pytest.mark.parametrize(("raw", "message"), [
    (1.0, r"returned a single number \(1.0\) for 4 completions"),
    (np.float32(0.5), r"returned a single number \(0.5\) for 4 completions"),
    (torch.tensor(1.0), r"returned a single number \(1.0\) for 4 completions"),
    (True, r"returned a single number \(True\)"),
    (None, "returned None for 4 completions"),
    ([1.0, 2.0], "returned 2 values for 4 completions"),
    (np.zeros((2, 2)), r"returned an array of shape \(2, 2\)"),
    ("1.0", "returned a str"),
    ({"a": 1}, "returned a dict"),
])
def test_unusable_returns_are_one_clear_error(raw: object, message: str) -> None:
    with pytest.raises(RewardFunctionError, match=message):
        coerce_rewards(raw, 4, "f")


def test_non_numbers_and_infinities_are_invalid_and_counted() -> None:
    values, invalid = coerce_rewards(["1", float("inf"), object(), 0.5], 4)
    assert values == [None, None, None, 0.5] and invalid == 3


def test_weighted_functions_combine_like_trl() -> None:
    """reward = sum_k w_k r_k over the functions that apply (TRL: nansum of weighted rewards); a completion no
    function applies to scores 0.0 and is counted."""
    def correct(completions, answer, **kwargs):
        return [float(c == a) for c, a in zip(completions, answer, strict=True)]

    def only_short(completions, **kwargs):
        return [0.25 if len(c) < 3 else None for c in completions]

    def never(completions, **kwargs):
        return [None] * len(completions)

    rewards = RewardFunctions([correct, only_short, never], [1.0, -2.0, 5.0])
    got = rewards(["p"] * 3, ["4", "no", "long"], {"answer": ["4", "5", "6"]})
    assert got == [1.0 - 0.5, -0.5, 0.0]
    assert rewards.stats.not_applicable == 1 + 3 and rewards.stats.no_reward == 0
    lonely = RewardFunctions([never])
    assert lonely(["p"], ["x"], {"answer": ["1"]}) == [0.0] and lonely.stats.no_reward == 1


def test_the_keyword_arguments_trl_passes() -> None:
    seen: dict[str, object] = {}

    def spy(prompts, completions, completion_ids, trainer_state, answer, difficulty, **kwargs):
        seen.update(prompts=prompts, completions=completions, completion_ids=completion_ids, answer=answer,
                    difficulty=difficulty, step=trainer_state.global_step, extra=sorted(kwargs))
        return [1.0] * len(completions)

    def named_only(completions, answer):  # no **kwargs: gets just what it names
        return [float(c == a) for c, a in zip(completions, answer, strict=True)]

    rewards = RewardFunctions([spy, named_only])
    rewards.trainer_state._step = lambda: 7
    assert rewards(["1+1=", "2+2="], ["2", "5"], {"answer": ["2", "4"], "difficulty": [1, 3]},
                   completion_ids=[[5, 6], [7]]) == [2.0, 1.0]
    assert seen == {"prompts": ["1+1=", "2+2="], "completions": ["2", "5"], "completion_ids": [[5, 6], [7]],
                    "answer": ["2", "4"], "difficulty": [1, 3], "step": 7, "extra": []}

    def needs_column(completions, solution):
        return [0.0] * len(completions)

    with pytest.raises(RewardFunctionError, match=r"needs argument\(s\) 'solution', which are neither TRL's"):
        RewardFunctions([needs_column])(["p"], ["c"], {"answer": ["a"]})


def test_reward_function_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "scoring.py").write_text("def f(completions, **kw):\n    return [1.0] * len(completions)\n")
    (tmp_path / "loose.py").write_text("def g(completions, **kw):\n    return [0.0] * len(completions)\n")
    monkeypatch.chdir(tmp_path)
    assert load_reward_function("pkg.scoring:f")(completions=["a"]) == [1.0]
    assert load_reward_function("loose.py:g")(completions=["a"]) == [0.0]
    assert load_reward_function(str(tmp_path / "loose.py") + ":g")(completions=["a"]) == [0.0]
    for spec, message in [("pkg.scoring", "expected 'module:function'"), ("pkg.nope:f", "cannot import 'pkg.nope'"),
                          ("pkg.scoring:h", "has no function 'h'"), ("nope.py:f", "file 'nope.py' does not exist")]:
        with pytest.raises(ConfigError, match=message):
            load_reward_function(spec)


REWARDS_MODULE = '''
import json, os
import numpy as np

def correct(prompts, completions, completion_ids, trainer_state, answer, **kwargs):
    """TRL style: a numpy array of bools."""
    with open(os.environ["REWARD_LOG"], "a") as log:
        log.write(json.dumps({"fn": "correct", "step": trainer_state.global_step, "kwargs": sorted(kwargs),
                              "n": len(completions), "ids": completion_ids is not None and
                              all(isinstance(i, int) for ids in completion_ids for i in ids)}) + "\\n")
    return np.array([c.strip() == a for c, a in zip(completions, answer)])
'''

FORMAT_MODULE = '''
import torch

def short(completions, **kwargs):
    """A torch tensor, and None where it does not apply."""
    return [torch.tensor(1.0) if len(c) < 8 else None for c in completions]
'''


def test_trl_reward_functions_through_the_cli(tmp_path: Path) -> None:
    """`module:function` from the current directory (the console script does not put it on sys.path by itself)
    and `path/file.py:function`, with weights; returns a numpy bool array and torch scalars."""
    (tmp_path / "my_rewards.py").write_text(REWARDS_MODULE)
    (tmp_path / "shaping").mkdir()
    (tmp_path / "shaping" / "format.py").write_text(FORMAT_MODULE)
    config = write_config(tmp_path / "run.yaml", tmp_path / "out", steps=2)
    data = yaml.safe_load(config.read_text())
    data["task"].update(reward_fn=["my_rewards:correct", "shaping/format.py:short"], reward_weights=[1.0, 0.25])
    config.write_text(yaml.safe_dump(data))
    log = tmp_path / "calls.jsonl"
    environ = env(REWARD_LOG=str(log), PYTHONPATH=import_path())  # tests/ not on the path: found from the cwd
    proc = hacrl("train", str(config), cwd=tmp_path, environ=environ)
    assert proc.returncode == 0, proc.stdout[-3000:]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    train = [c for c in calls if c["ids"]]  # training calls carry completion_ids; evaluation calls do not
    assert [c["step"] for c in train] == [0, 1]  # trainer_state.global_step: steps completed so far
    assert all(c["n"] == 16 for c in train) and all(c["kwargs"] == [] for c in calls)  # no extra columns
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    for r in (r for r in records if r["type"] == "train"):
        assert 0.0 <= r["reward"] <= 1.25 and math.isfinite(r["reward"])


def test_the_readme_example_runs() -> None:
    """The reward functions shown in the README, as printed there."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("```python\n# my_rewards.py\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    rewards = RewardFunctions([namespace["correct"], namespace["concise"]], [1.0, 0.1])
    got = rewards(["q1", "q2"], ["so it is 12", "x" * 300 + " 7"], {"answer": [12, 8], "difficulty": [1, 2]})
    assert got == [1.0 + 0.1, 0.0]
