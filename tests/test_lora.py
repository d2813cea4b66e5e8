"""LoRA agents beside full-parameter ones: what is trained, what is checkpointed, what an engine and the KL get,
and `hacrl export` of both kinds (real peft, real transformers test agents).

One run (module fixture) trains a GPT-2 + character-tokenizer agent with all its weights and a Llama + BPE agent
through LoRA adapters for two HACPO steps, and keeps each agent's logits on a fixed input; the export tests compare
the exported directories, loaded with transformers / peft alone, against those logits.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from conftest import nonzero_adapters, tiny_run_config
from hacrl.cli import main
from hacrl.config import LoraConfig, config_from_dict
from hacrl.export import EXPORT_NOTE, export_agent
from hacrl.models.loading import AgentLoadError, load_agent
from hacrl.models.lora import BaseModel, apply_lora, hf_weights
from hacrl.trainer import Trainer
from vllm_support import graded_task

CHAR, BPE = "zoo:test-gpt2-char", "zoo:test-llama-bpe"
R = 4
INPUT = torch.tensor([[3, 5, 7, 9, 11, 13, 15, 17]])  # ids every test agent's vocabulary holds


def lora_run_config(out: Path, **training: Any) -> dict[str, Any]:
    """The test pair (different architectures and tokenizers) with the Llama agent on LoRA (all linear layers)."""
    cfg = tiny_run_config(out, **training)
    cfg["agents"][1]["lora"] = {"r": R}
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("lora") / "run"
    trainer = Trainer(config_from_dict(lora_run_config(out, steps=2)), task=graded_task())
    try:
        char, bpe = trainer.executor.workers
        bpe_start = {k: v.clone() for k, v in bpe.model.state_dict().items()}
        trainer.run()
        with torch.no_grad():
            logits = {w.config.name: w.model(input_ids=INPUT).logits for w in (char, bpe)}
        return {"out": out, "logits": logits, "bpe_start": bpe_start, "bpe_end": bpe.model.state_dict(),
                "optimized": [p for g in bpe.optimizer.param_groups for p in g["params"]],
                "adapters": [p for n, p in bpe.model.named_parameters() if "lora_" in n]}
    finally:
        trainer.close()


def test_only_the_adapters_are_trained_and_checkpointed(run: dict[str, Any]) -> None:
    # test-llama-bpe: hidden 32, MLP 64, one layer; LoRA on q,k,v,o (32 -> 32), gate, up (32 -> 64), down (64 -> 32)
    # holds r x (in + out) per layer: 4 x (4 x 64 + 3 x 96) = 2176 parameters, all of them in the optimizer
    assert sum(p.numel() for p in run["optimized"]) == R * (4 * 64 + 3 * 96) == 2176
    assert {id(p) for p in run["optimized"]} == {id(p) for p in run["adapters"]}
    start, end = run["bpe_start"], run["bpe_end"]
    frozen = [k for k in start if "lora_" not in k]
    assert frozen and all(torch.equal(start[k], end[k]) for k in frozen), "the base weights must not move"
    assert any(not torch.equal(start[k], end[k]) for k in start if "lora_B" in k), "the adapters must learn"
    agents = run["out"] / "checkpoints" / "step-000002" / "agents"
    bpe_files = sorted(p.name for p in (agents / "bpe").iterdir())
    assert "adapter_model.safetensors" in bpe_files and "adapter_config.json" in bpe_files
    assert "model.safetensors" not in bpe_files  # the frozen base is never written
    assert (agents / "char" / "model.safetensors").is_file()  # the full agent beside it: its whole weights


def test_target_modules_the_model_lacks_are_named_with_the_layers_it_has(tmp_path: Path) -> None:
    cfg = tiny_run_config(tmp_path / "run")
    cfg["agents"][0]["lora"] = {"target_modules": ["c_attn", "q_proj"]}
    with pytest.raises(AgentLoadError, match=r"agents\[0\].lora.target_modules: 'q_proj' matches no module of agent "
                                             r"'char' \(GPT2LMHeadModel\); its layers LoRA can adapt are named: "
                                             r"c_attn, c_fc, c_proj, lm_head, wpe, wte \(or use 'all-linear'\)"):
        Trainer(config_from_dict(cfg), task=graded_task())


@pytest.mark.parametrize("recipe", [CHAR, BPE])
def test_merged_weights_are_peft_merge_under_the_base_names(recipe: str) -> None:
    """What the vLLM engine gets (`hf_weights`) is bit for bit peft's `merge_and_unload`, under the base model's own
    parameter names (GPT-2's Conv1D stores its weights transposed: peft's fan_in_fan_out)."""
    base = load_agent("a", recipe, progress=False).model
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = apply_lora(base, LoraConfig(r=R), seed=0)
    nonzero_adapters(model)
    merged = dict(hf_weights(model))
    reference = copy.deepcopy(model).merge_and_unload().state_dict()
    assert set(merged) == set(before) == set(reference)
    assert all(torch.equal(merged[k], reference[k]) for k in before)
    assert any(not torch.equal(merged[k], before[k]) for k in before)  # the adapters are in them
    assert all(torch.equal(p, before[k.replace(".base_layer.", ".")])
               for k, p in model.get_base_model().state_dict().items()
               if "lora_" not in k), "merging must leave the model itself untouched"


def test_the_kl_reference_of_a_lora_agent_is_its_base_without_a_copy() -> None:
    fresh = load_agent("a", BPE, progress=False).model
    model = nonzero_adapters(apply_lora(load_agent("a", BPE, progress=False).model, LoraConfig(r=R), seed=0))
    with torch.no_grad():
        reference = BaseModel(model)
        assert list(reference.parameters()) == []
        assert torch.equal(reference(input_ids=INPUT).logits, fresh(input_ids=INPUT).logits)
        assert not torch.equal(model(input_ids=INPUT).logits, fresh(input_ids=INPUT).logits)  # adapters back on


def test_gradient_checkpointing_gives_the_same_adapter_gradients() -> None:
    grads = []
    for checkpointing in (False, True):
        model = nonzero_adapters(apply_lora(
            load_agent("a", BPE, gradient_checkpointing=checkpointing, progress=False).model, LoraConfig(r=R), seed=0))
        model.train()
        model(input_ids=INPUT, labels=INPUT).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and all(g is not None for g in grads[1].values())
    assert all(torch.allclose(grads[0][k], grads[1][k], rtol=1e-5, atol=1e-8) for k in grads[0])


# ------------------------------------------------------------------ hacrl export


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=INPUT).logits


def test_export_gives_the_trained_agents_logits(run: dict[str, Any], tmp_path: Path) -> None:
    full = export_agent(run["out"], "char", tmp_path / "char")
    assert full.kind == "full" and not (full.out / "optimizer.pt").exists()
    assert torch.equal(_logits(AutoModelForCausalLM.from_pretrained(full.out)), run["logits"]["char"])

    adapter = export_agent(run["out"], "bpe", tmp_path / "bpe-adapter")
    assert adapter.kind == "lora-adapter" and (adapter.out / "adapter_config.json").is_file()
    note = json.loads((adapter.out / EXPORT_NOTE).read_text())
    assert note["base_model"] == BPE and note["base_model_path"] == adapter.base_model
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(adapter.base_model), adapter.out)
    assert torch.equal(_logits(loaded), run["logits"]["bpe"])

    merged = export_agent(run["out"], "bpe", tmp_path / "bpe-merged", merge=True)
    assert merged.kind == "lora-merged" and not (merged.out / "adapter_config.json").exists()
    # merged weights compute x (W + s B A) instead of x W + s (x A) B: equal up to float rounding
    gap = (_logits(AutoModelForCausalLM.from_pretrained(merged.out)) - run["logits"]["bpe"]).abs().max()
    assert float(gap) < 1e-5


def test_an_adapter_directory_is_refused_as_a_model_with_the_export_command(run: dict[str, Any]) -> None:
    adapters = run["out"] / "checkpoints" / "step-000002" / "agents" / "bpe"
    with pytest.raises(AgentLoadError, match=r"holds LoRA adapters \(adapter_config.json\), not a whole model; write "
                                             r"one with `hacrl export RUN_DIR --agent NAME --merge --out DIR`"):
        load_agent("bpe", str(adapters), progress=False)


def test_export_errors_are_one_clear_line(run: dict[str, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = run["out"]
    used = tmp_path / "used"
    used.mkdir()
    (used / "file").write_text("x")
    cases = [
        (["--agent", "llama"], f"--agent: the run in '{out}' has no agent 'llama'; its agents are char, bpe"),
        (["--agent", "char", "--out", str(used)],
         f"--out: '{used}' already exists and is not an empty directory; export into a new directory"),
        (["--agent", "char", "--checkpoint", "7"],
         f"--checkpoint: '{out / 'checkpoints' / 'step-000007'}' does not exist; the run's checkpoints are "
         "step-000002"),
    ]
    for extra, message in cases:
        args = ["export", str(out), *extra]
        assert main(args if "--out" in extra else [*args, "--out", str(tmp_path / "new")]) == 2
        assert message in capsys.readouterr().err
    missing = tmp_path / "nope"
    assert main(["export", str(missing), "--agent", "char", "--out", str(tmp_path / "new")]) == 2
    assert f"RUN_DIR '{missing}' does not exist" in capsys.readouterr().err
    assert main(["export", str(used), "--agent", "char", "--out", str(tmp_path / "new")]) == 2
    assert f"RUN_DIR '{used}' is not a hacrl run directory (it has no config.yaml)" in capsys.readouterr().err
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    (untrained / "config.yaml").write_bytes((out / "config.yaml").read_bytes())
    assert main(["export", str(untrained), "--agent", "char", "--out", str(tmp_path / "new")]) == 2
    assert f"RUN_DIR '{untrained}' has no complete checkpoint in" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------ the memory table's parameter counts


def _paper_pairs() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "memory" / "paper_pairs.py"
    spec = importlib.util.spec_from_file_location("paper_pairs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("family", ["Qwen3", "Llama"])
def test_the_memory_tables_counts_are_those_of_real_models_and_peft(family: str) -> None:
    """docs/lora.md's table counts parameters and LoRA parameters from architecture numbers; on small real
    transformers models of both families (Qwen3: per-head q/k norms; tied and untied heads) they are exact."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    pairs = _paper_pairs()
    pairs.check_counts()  # the five paper models against their published totals
    for tied in (True, False):
        arch = pairs.Architecture(f"{family}-test", 0.0, vocab=100, hidden=64, layers=2, heads=4, kv_heads=2,
                                  head_dim=24, intermediate=96, tied=tied)
        shape = {"vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "head_dim": 24, "intermediate_size": 96, "tie_word_embeddings": tied}
        config_cls, model_cls = (Qwen3Config, Qwen3ForCausalLM) if family == "Qwen3" else (LlamaConfig,
                                                                                         LlamaForCausalLM)
        model = model_cls(config_cls(**shape))
        assert sum(p.numel() for p in model.parameters()) == arch.parameters
        adapted = apply_lora(model, LoraConfig(r=8), seed=0)
        assert sum(p.numel() for p in adapted.parameters() if p.requires_grad) == arch.lora_parameters(8)
