"""Golden weights: the exact bytes every preset (and the branches beside them) produce after two steps.

Why: refactoring the training path (who resolves a preset, where the loss is computed, how metrics are
reduced) must not change what is learned. A hash of every agent's weights after two steps on the test agents
was recorded before such a refactor; the test requires the same bytes afterwards, with no tolerance.

The bytes depend on the machine: the test agents are built (warm-started) on it, and float kernels differ
between CPU models and library versions. So a golden entry is keyed by CPU model, torch and transformers
versions. On a machine with no entry the test skips and says how to record one (`HACRL_RECORD_GOLDEN=1`);
record on the commit *before* a refactor, never after, or the test checks nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from conftest import tiny_run_config
from hacrl.config import config_from_dict
from hacrl.machine import cpu_model
from hacrl.tasks.arithmetic import ArithmeticConfig, ArithmeticTask
from hacrl.tasks.base import FunctionRewardTask
from hacrl.trainer import Trainer

GOLDEN = Path(__file__).resolve().parent / "golden" / "two_steps.json"
RECORD = os.environ.get("HACRL_RECORD_GOLDEN") == "1"

PRESETS = ["grpo", "gspo", "gspo_x2", "naive", "hacpo", "hacpo-no-adv", "hacpo-no-omega", "hacpo-alpha0",
           "hacpo-no-stepwise", "hacpo-no-clip"]
SHARING = ["naive", "hacpo", "hacpo-no-adv", "hacpo-no-omega", "hacpo-alpha0", "hacpo-no-stepwise", "hacpo-no-clip"]
# Branches beside the presets: GRPO's loss types, the KL penalty (a reference model), the shuffled order,
# three agents, and binary rewards (uniform groups, so the zero-advantage skip fires). The char + bpe pair
# puts most cross ratios outside HACPO's window (no cross gradient), so the sharing presets also run on two
# copies of the char agent, whose cross ratios start near 1 and make every cross switch change the bytes.
VARIANTS: dict[str, dict[str, Any]] = {
    **{name: {"algorithm": name} for name in PRESETS},
    **{f"{name}-char-pair": {"algorithm": name, "char_pair": True, "algo": {"delta_step": 0.05}} for name in SHARING},
    "grpo-loss-grpo": {"algorithm": "grpo", "algo": {"loss_type": "grpo"}},
    "grpo-loss-dr_grpo": {"algorithm": "grpo", "algo": {"loss_type": "dr_grpo"}},
    "hacpo-beta": {"algorithm": "hacpo", "algo": {"beta": 0.05}},
    "hacpo-shuffle": {"algorithm": "hacpo", "algo": {"minibatch_order": "shuffle"}},
    "hacpo-three-agents": {"algorithm": "hacpo", "three": True},
    "hacpo-binary": {"algorithm": "hacpo", "binary": True},
    "grpo-binary": {"algorithm": "grpo", "binary": True},
}


def machine_key() -> str:
    return f"{cpu_model()} | torch {torch.__version__} | transformers {transformers.__version__}"


def _task(binary: bool) -> FunctionRewardTask:
    arithmetic = ArithmeticTask(ArithmeticConfig(n_train=200, n_eval=20))

    def graded(prompts: list[str], completions: list[str], **_: list) -> list[float]:
        return [(len(c) % 7) / 6 for c in completions]

    def binary_reward(prompts: list[str], completions: list[str], **_: list) -> list[float]:
        return [1.0 if "*" in p else float(len(c) % 2) for p, c in zip(prompts, completions, strict=True)]

    return FunctionRewardTask("golden", arithmetic.train_problems(), arithmetic.eval_problems(),
                              binary_reward if binary else graded)


def weights_digest(trainer: Trainer) -> dict[str, str]:
    """sha256 of every agent's state dict (sorted keys, raw bytes)."""
    out = {}
    for name, worker in zip(trainer.names, trainer.executor.workers, strict=True):
        digest = hashlib.sha256()
        for key, tensor in sorted(worker.model.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        out[name] = digest.hexdigest()
    return out


def run_variant(out: Path, spec: dict[str, Any]) -> dict[str, str]:
    agents = None
    if spec.get("char_pair"):
        agents = [("char1", "zoo:test-gpt2-char"), ("char2", "zoo:test-gpt2-char")]
    if spec.get("three"):
        agents = [("char1", "zoo:test-gpt2-char"), ("char2", "zoo:test-gpt2-char"), ("bpe", "zoo:test-llama-bpe")]
    cfg = tiny_run_config(out, algorithm=spec["algorithm"], agents=agents, steps=2,
                          minibatch_size=3 if spec.get("char_pair") else 6)
    cfg["algorithm"].update(spec.get("algo", {}))
    trainer = Trainer(config_from_dict(cfg), task=_task(bool(spec.get("binary"))))
    try:
        trainer.run()
        return weights_digest(trainer)
    finally:
        trainer.close()


def _recorded() -> dict[str, dict[str, dict[str, str]]]:
    return json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}


def test_weights_after_two_steps_match_the_golden_bytes(tmp_path: Path) -> None:
    key = machine_key()
    recorded = _recorded()
    if not RECORD and key not in recorded:
        pytest.skip(f"no golden weights recorded for this machine ({key}); recorded for: {sorted(recorded)}. "
                    "Record on the commit before a refactor with HACRL_RECORD_GOLDEN=1.")
    got = {name: run_variant(tmp_path / name, spec) for name, spec in VARIANTS.items()}
    if RECORD:
        recorded[key] = got
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        return
    expected = recorded[key]
    differing = sorted(name for name in VARIANTS if got[name] != expected.get(name))
    assert not differing, f"weights after two steps changed for: {differing}"
