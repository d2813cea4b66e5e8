"""Bad input and broken state: each failure class gets a clear error or a counted, logged skip."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from transformers import DistilBertConfig, DistilBertModel

from conftest import tiny_run_config
from hacrl import checkpoint as ckpt
from hacrl.config import ConfigError, config_from_dict
from hacrl.models.loading import AgentLoadError, load_agent
from hacrl.models.zoo import build
from hacrl.rollout.sampler import NonFiniteLogitsError
from hacrl.tasks.arithmetic import ArithmeticConfig, ArithmeticTask
from hacrl.tasks.base import FunctionRewardTask, Problem, RewardFunctionError
from hacrl.tasks.registry import make_task
from hacrl.trainer import Trainer
from hacrl.workers import NonFiniteUpdateError
from rewards import always_raises, graded, some_nan, wrong_length

PROBLEMS = ArithmeticTask(ArithmeticConfig(n_train=200, n_eval=20))


def function_task(fn, **kw) -> FunctionRewardTask:
    return FunctionRewardTask("t", PROBLEMS.train_problems(), PROBLEMS.eval_problems(), fn, **kw)


# ------------------------------------------------------------------ reward functions


def test_raising_reward_function_scores_zero_counts_and_aborts(caplog: pytest.LogCaptureFixture) -> None:
    task = function_task(always_raises, max_error_rate=0.5, min_calls_before_abort=3)
    problems = list(PROBLEMS.train_problems()[:4])
    with caplog.at_level(logging.WARNING):
        assert task.score(problems, ["a", "b", "c", "d"]) == [0.0] * 4
        assert task.score(problems, ["a", "b", "c", "d"]) == [0.0] * 4
    assert task.stats.exceptions == 8
    assert "raised RuntimeError: reward server unavailable" in caplog.text
    with pytest.raises(RewardFunctionError, match="failed on 100% of completions"):
        task.score(problems, ["a", "b", "c", "d"])


def test_reward_function_wrong_length_is_an_error() -> None:
    task = function_task(wrong_length)
    with pytest.raises(RewardFunctionError, match="returned 1 values for 3 completions"):
        task.score(list(PROBLEMS.train_problems()[:3]), ["a", "b", "c"])


def test_none_and_nan_rewards_are_not_applicable_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    """TRL's convention: None (NaN) means "does not apply"; the completion scores 0.0, is counted and logged,
    and is not an error (it does not count toward max_reward_error_rate)."""
    task = function_task(some_nan, max_error_rate=0.0, min_calls_before_abort=1)
    with caplog.at_level(logging.WARNING):
        rewards = task.score(list(PROBLEMS.train_problems()[:8]), ["x"] * 8)
    assert rewards == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    assert (task.stats.not_applicable, task.stats.no_reward, task.stats.invalid_values) == (4, 4, 0)
    assert "no reward function applied to 4 of 8 completions" in caplog.text


def test_reward_fn_from_config(tmp_path: Path) -> None:
    cfg = config_from_dict(tiny_run_config(tmp_path) | {"task": {"name": "arithmetic", "reward_fn": "rewards:graded",
                                                                 "options": {"n_train": 200, "n_eval": 20}}})
    task = make_task(cfg.task)
    assert task.score([PROBLEMS.train_problems()[0]], ["abc"]) == graded([], ["abc"])
    for spec, message in [("rewards", "expected 'module:function'"), ("no_such_module:f", "cannot import"),
                          ("rewards:missing", "has no function 'missing'"), ("nope.py:f", "does not exist")]:
        with pytest.raises(ConfigError, match=message):
            make_task(cfg.task.__class__(name="arithmetic", reward_fn=spec))


def test_empty_datasets_are_refused() -> None:
    with pytest.raises(ValueError, match="the training set is empty"):
        FunctionRewardTask("t", [], PROBLEMS.eval_problems(), graded)
    with pytest.raises(ValueError, match="the evaluation set is empty"):
        FunctionRewardTask("t", PROBLEMS.train_problems(), [], graded)


# ------------------------------------------------------------------ training-time faults


def _nan_logps_for(model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every training forward pass of `model` return NaN log-probs (as a diverged model would)."""
    import hacrl.learner as learner

    real = learner.completion_logps

    def poisoned(m, *args, **kwargs):
        out = real(m, *args, **kwargs)
        return out * float("nan") if m is model else out

    monkeypatch.setattr(learner, "completion_logps", poisoned)


def test_nonfinite_updates_are_skipped_then_abort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    cfg = config_from_dict(tiny_run_config(tmp_path, max_nonfinite_updates=10))
    trainer = Trainer(cfg, task=function_task(graded))
    _nan_logps_for(trainer.executor.workers[0].model, monkeypatch)
    with caplog.at_level(logging.WARNING):
        metrics = trainer.train_step()
    assert metrics["char"]["updates"] == 0 and metrics["char"]["skipped_updates"] == 3  # 16 rows / 6 per batch
    assert "skipped: NaN/inf log-probs" in caplog.text
    assert metrics["bpe"]["skipped_updates"] == 0 and metrics["bpe"]["updates"] == 3  # the healthy agent learns

    trainer2 = Trainer(config_from_dict(tiny_run_config(tmp_path / "b", max_nonfinite_updates=2)),
                       task=function_task(graded))
    _nan_logps_for(trainer2.executor.workers[0].model, monkeypatch)
    with pytest.raises(NonFiniteUpdateError, match="2 consecutive updates had NaN/inf"):
        trainer2.train_step()


def test_diverged_weights_stop_sampling_with_a_clear_error(tmp_path: Path) -> None:
    trainer = Trainer(config_from_dict(tiny_run_config(tmp_path)), task=function_task(graded))
    with torch.no_grad():
        for p in trainer.executor.workers[0].model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(NonFiniteLogitsError, match="NaN/inf logits while sampling"):
        trainer.train_step()


def test_prompts_longer_than_the_context_are_skipped_and_counted(tmp_path: Path) -> None:
    long = [Problem(id=f"long{i}", prompt="1+" * 200 + "1=", answer="201") for i in range(3)]
    task = FunctionRewardTask("t", long + list(PROBLEMS.train_problems()[:20]), PROBLEMS.eval_problems(), graded)
    trainer = Trainer(config_from_dict(tiny_run_config(tmp_path)), task=task)
    assert trainer.skipped_prompts["training"] == 3
    assert all(not p.id.startswith("long") for p in trainer.train_problems)
    only_long = FunctionRewardTask("t", long, PROBLEMS.eval_problems(), graded)
    with pytest.raises(ConfigError, match="no training prompt fits every agent's context"):
        Trainer(config_from_dict(tiny_run_config(tmp_path / "b")), task=only_long)


# ------------------------------------------------------------------ model directories


def test_incompatible_or_incomplete_model_directories(tmp_path: Path) -> None:
    bert = tmp_path / "bert"
    DistilBertModel(DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=16)).save_pretrained(
        bert, safe_serialization=True)
    shutil.copy(build("test-gpt2-char") / "tokenizer.json", bert / "tokenizer.json")
    with pytest.raises(AgentLoadError, match="is not a causal language model"):
        load_agent("x", str(bert))
    no_tok = tmp_path / "no_tok"
    shutil.copytree(build("test-gpt2-char"), no_tok)
    for f in no_tok.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(AgentLoadError, match="has no tokenizer files"):
        load_agent("x", str(no_tok))
    with pytest.raises(AgentLoadError, match="does not exist"):
        load_agent("x", str(tmp_path / "missing"))
    with pytest.raises(AgentLoadError, match="no CUDA GPU is available"):
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        load_agent("x", "zoo:test-gpt2-char", device="cuda")


# ------------------------------------------------------------------ checkpoints


def _write(files: dict[str, str]):
    def write(tmp: Path) -> None:
        for name, text in files.items():
            (tmp / name).write_text(text)
    return write


def test_checkpoints_are_atomic_checked_and_pruned(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    first = ckpt.save_checkpoint(root, 1, _write({"a.txt": "one"}), keep_last=2)
    assert ckpt.latest_checkpoint(root) == first
    # a killed write: a published-looking directory without a manifest, and a stale temporary one
    (root / "step-000005").mkdir()
    (root / "step-000005" / "a.txt").write_text("half")
    (root / ".tmp-step-000006-999999").mkdir()
    assert ckpt.latest_checkpoint(root) == first
    # a corrupted file fails its checksum and is skipped
    second = ckpt.save_checkpoint(root, 2, _write({"a.txt": "two"}), keep_last=2)
    (second / "a.txt").write_text("tampered")
    assert ckpt.latest_checkpoint(root) == first
    assert not (root / ".tmp-step-000006-999999").exists()
    # keep_last prunes old complete checkpoints only
    for step in (3, 4):
        ckpt.save_checkpoint(root, step, _write({"a.txt": str(step)}), keep_last=2)
    names = [p.name for p in ckpt.list_checkpoints(root)]
    assert "step-000001" not in names and "step-000004" in names and "step-000003" in names
    assert json.loads((root / "step-000004" / ckpt.MANIFEST).read_text())["step"] == 4


def test_validation_and_test_holdout_halves_are_disjoint_and_unseen() -> None:
    from hacrl.config import TaskConfig

    options = {"n_train": 200, "n_eval": 20}
    full = make_task(TaskConfig(name="arithmetic", options=options))
    val = make_task(TaskConfig(name="arithmetic", options=options, eval_split="validation"))
    hold = make_task(TaskConfig(name="arithmetic", options=options, eval_split="test-holdout"))
    v, h = {p.id for p in val.eval_problems()}, {p.id for p in hold.eval_problems()}
    train = {p.id for p in full.train_problems()}
    assert len(v) == len(h) == 10 and not v & h and not (v | h) & train
    assert v | h == {p.id for p in full.eval_problems()}
    assert {p.kind for p in val.eval_problems()} == {"add", "mul"}
    assert [p.id for p in val.train_problems()] == [p.id for p in full.train_problems()]
