"""Kill a real `hacrl train` process (SIGKILL at 5 seeded random moments, and SIGINT), resume it, and
require final weights identical to an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import tiny_run_config
from hacrl.checkpoint import latest_checkpoint
from hacrl.models.zoo import build

TESTS = Path(__file__).resolve().parent
STEPS = 6


def write_config(out: Path) -> Path:
    data = tiny_run_config(out, steps=STEPS)
    data["task"]["reward_fn"] = "rewards:graded"  # a learning signal for untrained agents
    data["checkpoint"] = {"every": 1, "keep_last": 2}
    data["threads"] = 1
    path = out.parent / f"{out.name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def start(config: Path, *extra: str) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "hacrl.cli", "train", str(config), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(config: Path, *extra: str) -> str:
    proc = start(config, *extra)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def final_weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    final = latest_checkpoint(out / "checkpoints")
    assert final is not None and final.name == f"step-{STEPS:06d}"
    return {agent.name: load_file(str(agent / "model.safetensors")) for agent in (final / "agents").iterdir()}


def assert_same(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]]) -> None:
    assert a.keys() == b.keys()
    for agent in a:
        for key in a[agent]:
            assert torch.equal(a[agent][key], b[agent][key]), f"{agent}: {key} differs"


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, float]:
    build("test-gpt2-char")
    build("test-llama-bpe")  # built once here, not raced by the subprocesses
    out = tmp_path_factory.mktemp("kill") / "straight"
    begin = time.perf_counter()
    finish(write_config(out))
    return final_weights(out), time.perf_counter() - begin


def test_sigkill_at_five_random_moments_then_resume(straight: tuple[dict, float], tmp_path: Path) -> None:
    reference, duration = straight
    rng = random.Random(1234)
    for attempt in range(5):
        out = tmp_path / f"run{attempt}"
        config = write_config(out)
        proc = start(config)
        delay = rng.uniform(0.3, 0.95) * duration
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        latest = latest_checkpoint(out / "checkpoints")
        print(f"kill {attempt}: after {delay:.1f}s of {duration:.1f}s, last checkpoint "
              f"{latest.name if latest else 'none'}")
        finish(config, "--resume", "auto")  # a kill before the first checkpoint leaves nothing to resume
        assert_same(reference, final_weights(out))


def test_sigint_finishes_the_step_checkpoints_and_resumes(straight: tuple[dict, float], tmp_path: Path) -> None:
    reference, _ = straight
    out = tmp_path / "interrupted"
    config = write_config(out)
    proc = start(config)
    deadline = time.time() + 120
    while latest_checkpoint(out / "checkpoints") is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, text[-3000:]
    if "stopped early on a signal" in text:  # the usual case: stopped before the last step
        stopped = latest_checkpoint(out / "checkpoints")
        assert stopped is not None and stopped.name < f"step-{STEPS:06d}"
        finish(config, "--resume")
    assert_same(reference, final_weights(out))
