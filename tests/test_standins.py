"""Stand-in HF checkpoints: real directory layout, family chat templates and EOS, two different tokenizers,
deterministic builds, and loading through the same `load_agent` path as a user's checkpoint."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import shipped_math_data
from hacrl.models.loading import PromptTemplate, load_agent
from hacrl.models.standins import STANDIN_META_FILE, build_standin, build_standin_pair, standin_corpus


def _shipped_data() -> Path | None:
    return shipped_math_data()


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_standin_pair(tmp_path_factory.mktemp("standins"), data_dir=_shipped_data())


MARKERS = {
    "qwen2": ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>"),
    "llama": ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
              "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
}


def test_directory_is_a_real_checkpoint(standins: dict[str, Path]) -> None:
    for kind, arch in (("qwen2", "Qwen2ForCausalLM"), ("llama", "LlamaForCausalLM")):
        path = standins[kind]
        for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                     "tokenizer_config.json"):
            assert (path / name).is_file(), f"{kind}: {name} missing"
        config = json.loads((path / "config.json").read_text())
        assert config["architectures"] == [arch] and config["model_type"] == kind
        meta = json.loads((path / STANDIN_META_FILE).read_text())
        assert 50_000 < meta["parameters"] < 1_000_000  # "a few hundred K"
        if _shipped_data() is not None:
            assert "math_train.jsonl" in meta["tokenizer_corpus"]


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_loads_with_chat_template_and_family_eos(standins: dict[str, Path], kind: str) -> None:
    agent = load_agent(kind, str(standins[kind]), progress=False)
    assert agent.template.use_chat_template
    start, end, eos = MARKERS[kind]
    text = agent.template.render(agent.tokenizer, "What is $1+1$?")
    assert text == f"{start}What is $1+1$?{end}"
    assert agent.tokenizer.eos_token == eos
    assert agent.model.config.eos_token_id == agent.tokenizer.eos_token_id
    assert agent.model.generation_config.eos_token_id == agent.tokenizer.eos_token_id
    ids = agent.encode_prompt("What is $1+1$?")
    for marker in re.findall(r"<\|[a-z_]+\|>", start + end):  # every chat marker is one special token
        assert agent.tokenizer.convert_tokens_to_ids(marker) in ids
    assert agent.tokenizer.decode(ids) == text
    system = PromptTemplate(plain=None, use_chat_template=True, system_prompt="Be brief.")
    rendered = system.render(agent.tokenizer, "Hi")
    assert ("<|im_start|>system\nBe brief.<|im_end|>" if kind == "qwen2"
            else "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>") in rendered
    with torch.no_grad():
        logits = agent.model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(agent.tokenizer)) and torch.isfinite(logits).all()


def test_the_two_tokenizers_differ(standins: dict[str, Path]) -> None:
    qwen = load_agent("q", str(standins["qwen2"]), progress=False).tokenizer
    llama = load_agent("l", str(standins["llama"]), progress=False).tokenizer
    assert len(qwen) != len(llama)
    text = "Let $f(x) = 3x^2 - 12345$. Compute $\\frac{7}{12}$ of 2024, naïvely."
    for tok in (qwen, llama):  # byte-level: any text round-trips
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert qwen(text, add_special_tokens=False)["input_ids"] != llama(text, add_special_tokens=False)["input_ids"]
    digits_q = [t for t in qwen.tokenize("12345 678") if t.strip("Ġ").isdigit()]
    digits_l = [t for t in llama.tokenize("12345 678") if t.strip("Ġ").isdigit()]
    assert all(len(t.strip("Ġ")) == 1 for t in digits_q)  # Qwen style: one token per digit
    assert all(len(t.strip("Ġ")) <= 3 for t in digits_l)  # Llama 3 style: chunks of at most three digits
    assert llama("hi")["input_ids"][0] == llama.bos_token_id  # like Llama 3, plain encoding starts with BOS
    assert qwen.bos_token is None


def test_build_is_deterministic_and_seeded(tmp_path: Path) -> None:
    corpus, _ = standin_corpus(tmp_path / "no-data")  # the synthetic fallback corpus
    a = build_standin("qwen2", tmp_path / "a", corpus=corpus, seed=1)
    b = build_standin("qwen2", tmp_path / "b", corpus=corpus, seed=1)
    c = build_standin("qwen2", tmp_path / "c", corpus=corpus, seed=2)
    wa, wb, wc = (load_file(str(p / "model.safetensors")) for p in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    with pytest.raises(ValueError, match="kind"):
        build_standin("gpt2", tmp_path / "d")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        build_standin("llama", tmp_path / "e", size="huge")  # type: ignore[arg-type]


def test_make_standins_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks/make_standins.py"
    spec = importlib.util.spec_from_file_location("make_standins", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["make_standins.py", str(tmp_path / "out")])
    module.main()
    out = capsys.readouterr().out
    assert f"export HACRL_STANDIN_QWEN2={(tmp_path / 'out/qwen2').resolve()}" in out
    assert (tmp_path / "out/llama/model.safetensors").is_file()
