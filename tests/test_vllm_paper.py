"""A paper preset on `backend: vllm`, shrunk for the CPU: real-architecture stand-ins (Qwen2 with tied embeddings
and q/k/v biases, Llama 3 with an untied head), chat templates, two BPE vocabularies, the math task.

The `small` stand-ins have head size 32 (the `tiny` ones' 16 is refused by vLLM's CPU attention).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import shipped_math_data
from hacrl.cli import main as cli_main
from hacrl.models.standins import build_standin_pair
from vllm_support import needs_vllm

pytestmark = needs_vllm

PRESET = Path(__file__).resolve().parents[1] / "configs/paper/qwen3-4b-base_llama3.2-3b-instruct.yaml"


def test_paper_preset_trains_on_vllm_cpu_with_small_standins(tmp_path: Path) -> None:
    data = shipped_math_data()
    if data is None:
        pytest.skip("math benchmark data not found (../shared/data/math next to the repo, or $HACRL_MATH_DATA)")
    standins = build_standin_pair(tmp_path / "standins", size="small", data_dir=data)
    out = tmp_path / "run"
    sets = [
        f"agents.0.model={standins['qwen2']}", f"agents.1.model={standins['llama']}",
        "agents.0.device=cpu", "agents.1.device=cpu",
        "agents.0.rollout={backend: vllm, kv_cache_memory_bytes: 67108864}",
        "agents.1.rollout={backend: vllm, kv_cache_memory_bytes: 67108864}",
        "training.steps=2", "training.prompts_per_step=2", "training.num_generations=2",
        "training.minibatch_size=4", "training.max_new_tokens=16", "training.eval_max_new_tokens=16",
        "training.eval_limit=2", f"task.options.data_dir={data}", "task.options.max_train=16",
        f"output_dir={out}", "logging.tensorboard=false", "logging.progress=false", "threads=1",
    ]
    assert cli_main(["train", str(PRESET), *(x for s in sets for x in ("--set", s))]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert [a["rollout"]["backend"] for a in saved["agents"]] == ["vllm", "vllm"]
    assert (out / "checkpoints/step-000002/agents/qwen3-4b-base/model.safetensors").is_file()
    rows = [yaml.safe_load(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["agent"] for r in rows if r["type"] == "train" and r["step"] == 2} == {"qwen3-4b-base",
                                                                                    "llama3.2-3b-instruct"}
