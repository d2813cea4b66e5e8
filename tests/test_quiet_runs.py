"""Honest, quiet runs: no deprecation warnings from hacrl's own calls, a log line when remote code is trusted,
and the console says where TensorBoard writes, shows reward and accuracy per agent, and times evaluation
apart from training."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from clitools import hacrl, write_config
from hacrl.models.loading import load_agent
from hacrl.rollout.logprobs import cache_keyword
from hacrl.rollout.sampler import SamplingParams, sample


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("recipe", ["test-gpt2-char", "test-llama-bpe"])
def test_sampling_uses_the_current_cache_argument_without_warnings(recipe: str) -> None:
    agent = load_agent("a", f"zoo:{recipe}")
    forward = type(agent.model).forward
    import inspect

    declared = "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"
    assert cache_keyword(type(agent.model)) == declared  # the name this transformers version declares
    collect = _Collect()
    hf = logging.getLogger("transformers")  # transformers logs deprecations here (it does not propagate)
    hf.addHandler(collect)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a FutureWarning/DeprecationWarning from our calls fails the test
            out = sample(agent.model, agent.tokenizer, [agent.encode_prompt("12+7=")] * 3,
                         SamplingParams(max_new_tokens=8), generator=torch.Generator().manual_seed(0))
    finally:
        hf.removeHandler(collect)
    assert len(out) == 3 and all(s.completion_ids for s in out)
    assert not [m for m in collect.messages if "deprecat" in m.lower()], collect.messages


def test_trusting_remote_code_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hacrl"):
        load_agent("mine", "zoo:test-gpt2-char", trust_remote_code=True)
    assert "agent mine: trust_remote_code is on: running the Python code shipped in" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hacrl"):
        load_agent("mine", "zoo:test-gpt2-char")
    assert "trust_remote_code" not in caplog.text


def test_a_run_says_where_things_go_and_nothing_else(tmp_path: Path) -> None:
    config = write_config(tmp_path / "run.yaml", tmp_path / "out", steps=2)
    data = yaml.safe_load(config.read_text())
    data["logging"] = {"tensorboard": True, "progress": True}
    config.write_text(yaml.safe_dump(data))
    proc = hacrl("train", str(config))
    assert proc.returncode == 0, proc.stdout[-3000:]
    text = proc.stdout
    assert f"run directory: {tmp_path / 'out'} (metrics.jsonl, checkpoints/); TensorBoard: tensorboard --logdir " \
           f"{tmp_path / 'out' / 'tensorboard'}" in text.splitlines()[0]
    assert re.search(r"char=r=\d\.\d\d acc=\d\.\d\d, bpe=r=\d\.\d\d acc=\d\.\d\d", text)  # the progress bar
    assert re.search(r"2 steps; training \d+\.\d s, evaluation \d+\.\d s \(whole run; held-out greedy accuracy, "
                     r"4 problems\)", text)
    noisy = [line for line in text.splitlines() if re.search(r"warning|deprecat", line, re.IGNORECASE)]
    assert not noisy, noisy
