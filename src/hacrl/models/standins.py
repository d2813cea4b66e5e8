"""Stand-in Hugging Face models: tiny, random-weight Qwen2 and Llama 3 checkpoints written to disk.

Why: the paper trains Qwen3 and Llama 3.2 checkpoints of billions of parameters, which this project cannot
download or run on a CPU. A stand-in is a directory laid out exactly like such a checkpoint — `config.json`
of the real architecture (`Qwen2ForCausalLM` / `LlamaForCausalLM`), `model.safetensors`,
`generation_config.json`, `tokenizer.json` + `tokenizer_config.json` with the family's special tokens, EOS
and a Jinja chat template — only a few hundred thousand parameters large. Loading, chat-template prompt
rendering, EOS handling, re-tokenisation between two DIFFERENT tokenizers, checkpointing and evaluation
then run the same code path a real checkpoint takes; only the answers are nonsense (random weights).

The two kinds differ where the real families differ, so heterogeneity is real, not cosmetic:

| | qwen2 | llama |
|---|---|---|
| architecture | `Qwen2ForCausalLM` (q/k/v biases, tied embeddings) | `LlamaForCausalLM` (no biases, untied head) |
| numbers | split into single digits | split into runs of up to three digits |
| vocabulary | byte-level BPE, 400 entries ("tiny") | byte-level BPE, 520 entries ("tiny") |
| chat markers | `<|im_start|>role ... <|im_end|>` | `<|start_header_id|>role<|end_header_id|> ... <|eot_id|>` |
| EOS | `<|im_end|>` | `<|eot_id|>` |
| BOS | none (like Qwen) | `<|begin_of_text|>`, written by the chat template |

Both tokenizers are byte-level BPEs trained here with the `tokenizers` library on MATH problem text
(`standin_corpus`), so any text round-trips and the two vocabularies share no merge order.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

StandinKind = Literal["qwen2", "llama"]
StandinSize = Literal["tiny", "small", "medium"]

KINDS: tuple[StandinKind, ...] = ("qwen2", "llama")
STANDIN_META_FILE = "hacrl_standin.json"
"""Provenance of a stand-in (kind, size, seed, tokenizer corpus); not read by the loader."""

# ---------------------------------------------------------------------------------------------------------
# Chat templates (written for this project in the style of each family; they render the same structure)

QWEN2_CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' -}}"
    "{%- set rest = messages[1:] -%}"
    "{%- else -%}"
    "{%- set rest = messages -%}"
    "{%- endif -%}"
    "{%- for message in rest -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
"""Qwen2-style ChatML: one `<|im_start|>role\\n...<|im_end|>\\n` block per message."""

LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim)"
    " + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)
"""Llama-3-style headers: `<|begin_of_text|>` then `<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>`."""


@dataclass(frozen=True)
class _Family:
    """What distinguishes one stand-in family: tokenizer conventions and the chat template."""

    specials: tuple[str, ...]  # in id order, right after the 256 byte tokens
    bos: str | None
    eos: str
    pad: str
    number_pattern: str  # how runs of digits are pre-split before BPE
    chat_template: str


_FAMILIES: dict[str, _Family] = {
    "qwen2": _Family(
        specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        bos=None, eos="<|im_end|>", pad="<|endoftext|>",
        number_pattern=r"\p{N}",
        chat_template=QWEN2_CHAT_TEMPLATE,
    ),
    "llama": _Family(
        specials=("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>", "<|finetune_right_pad_id|>"),
        bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>",
        number_pattern=r"\p{N}{1,3}",
        chat_template=LLAMA3_CHAT_TEMPLATE,
    ),
}


@dataclass(frozen=True)
class _Shape:
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    context: int


# "tiny": ~0.2 M parameters, builds in about a second; "small": ~3 M, still CPU-friendly; "medium": ~25 M, for
# throughput benchmarks where per-token overhead no longer hides the model's arithmetic (head size 64).
_SHAPES: dict[tuple[str, str], _Shape] = {
    ("qwen2", "tiny"): _Shape(vocab=400, hidden=64, layers=4, heads=4, kv_heads=2, intermediate=128, context=2048),
    ("llama", "tiny"): _Shape(vocab=520, hidden=64, layers=3, heads=4, kv_heads=4, intermediate=160, context=2048),
    ("qwen2", "small"): _Shape(vocab=2000, hidden=192, layers=6, heads=6, kv_heads=2, intermediate=512,
                               context=4096),
    ("llama", "small"): _Shape(vocab=2600, hidden=160, layers=6, heads=5, kv_heads=5, intermediate=448,
                               context=4096),
    ("qwen2", "medium"): _Shape(vocab=8000, hidden=512, layers=8, heads=8, kv_heads=2, intermediate=1408,
                                context=4096),
    ("llama", "medium"): _Shape(vocab=8000, hidden=512, layers=8, heads=8, kv_heads=8, intermediate=1376,
                                context=4096),
}


# ---------------------------------------------------------------------------------------------------------
# Corpus


def _synthetic_math_text(n: int, seed: int) -> list[str]:
    """MATH-flavoured LaTeX sentences, for when no MATH file is at hand (the tokenizer still sees
    `\\frac`, `\\boxed`, `$`, digits and English)."""
    rng = random.Random(f"standin-corpus:{seed}")
    out = []
    for _ in range(n):
        a, b, c, d = (rng.randint(1, 999) for _ in range(4))
        out.append(rng.choice([
            f"What is $\\frac{{{a}}}{{{b}}} + \\frac{{{c}}}{{{d}}}$? Express your answer as a common fraction.",
            f"Find the value of $x$ such that ${a}x + {b} = {c}$. The answer is $\\boxed{{{c - b}/{a}}}$.",
            f"Compute $\\sqrt{{{a * a}}}$. We have $\\sqrt{{{a * a}}} = {a}$, so the answer is $\\boxed{{{a}}}$.",
            f"A triangle has sides {a}, {b} and {c}. What is its perimeter? The perimeter is "
            f"${a}+{b}+{c}=\\boxed{{{a + b + c}}}$.",
            f"How many positive divisors does {a} have? Let $n = {a}$; then we count them.",
            f"Simplify $\\left({a}^2 - {b}^2\\right) \\div ({a} - {b})$ to get $\\boxed{{{a + b}}}$.",
        ]))
    return out


def standin_corpus(data_dir: str | Path | None = None, *, rows: int = 1500, seed: int = 0) -> tuple[list[str], str]:
    """Text to train a stand-in tokenizer on, and a description of where it came from.

    The first `rows` problems and solutions of MATH train (`math_train.jsonl` in `data_dir`, default
    $HACRL_MATH_DATA) when that file exists, else `rows` synthetic MATH-style sentences. A few chat words
    are added either way so "user"/"assistant" get merges like in a real chat tokenizer.
    """
    from hacrl.tasks.benchmarks import BENCHMARK_FILES, default_data_dir

    base = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    texts: list[str] = []
    source = f"{rows} synthetic MATH-style sentences (seed {seed})"
    if base is not None:
        file = base / BENCHMARK_FILES["math_train"] if base.is_dir() else base
        if file.is_file():
            with file.open(encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    texts.append(str(row.get("problem", "")))
                    texts.append(str(row.get("solution", "")))
                    if len(texts) >= 2 * rows:
                        break
            source = f"first {len(texts) // 2} problems + solutions of {file.name}"
    if not texts:
        texts = _synthetic_math_text(rows, seed)
    texts += ["system user assistant", "You are a helpful assistant.", "Please reason step by step."] * 20
    return texts, source


# ---------------------------------------------------------------------------------------------------------
# Tokenizer


def _pre_tokenizer(number_pattern: str) -> pre_tokenizers.PreTokenizer:
    """Words (with their leading space), numbers (family-specific chunking), punctuation runs, whitespace,
    then the byte-level mapping (without its own GPT-2 regex, which would undo the number chunking)."""
    pattern = (
        r"'(?:s|t|re|ve|m|ll|d)| ?\p{L}+|" + number_pattern + r"| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
    )
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def build_standin_tokenizer(kind: StandinKind, corpus: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE with the family's special tokens, EOS, padding token and chat template."""
    family = _FAMILIES[kind]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre_tokenizer(family.number_pattern)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(family.specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    if family.bos is not None:
        # Like Llama 3: plain `tokenizer(text)` prepends BOS; chat-template text already starts with it and is
        # encoded with add_special_tokens=False.
        bos_id = tok.token_to_id(family.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{family.bos} $A", pair=f"{family.bos} $A {family.bos} $B", special_tokens=[(family.bos, bos_id)],
        )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=family.bos, eos_token=family.eos, pad_token=family.pad,
        additional_special_tokens=[s for s in family.specials if s not in (family.bos, family.eos, family.pad)],
        clean_up_tokenization_spaces=False, model_max_length=1 << 30,
    )
    wrapped.chat_template = family.chat_template
    return wrapped


# ---------------------------------------------------------------------------------------------------------
# Model


def _build_model(kind: StandinKind, shape: _Shape, tokenizer: PreTrainedTokenizerFast, seed: int) -> PreTrainedModel:
    vocab = len(tokenizer)
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    common = {
        "vocab_size": vocab, "hidden_size": shape.hidden, "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers, "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads, "max_position_embeddings": shape.context, "rms_norm_eps": 1e-6,
    }
    torch.manual_seed(seed)
    model: PreTrainedModel
    if kind == "qwen2":
        if tokenizer.bos_token_id is None:  # Qwen configs name <|endoftext|> as BOS though nothing prepends it
            ids["bos_token_id"] = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True, **ids))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False, attention_bias=False,
                                             mlp_bias=False, **ids))
    model.generation_config = GenerationConfig(**ids)
    return model.eval()


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers draws a progress bar per saved shard; a stand-in is one tiny shard, so hide it."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def build_standin(
    kind: StandinKind,
    out_dir: str | Path,
    *,
    seed: int = 0,
    size: StandinSize = "tiny",
    corpus: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    max_position_embeddings: int | None = None,
    corpus_note: str | None = None,
) -> Path:
    """Write a random-weight `kind` stand-in checkpoint into `out_dir` (created; existing files replaced).

    `corpus` trains the tokenizer (default `standin_corpus(data_dir)`: MATH train text when found);
    `seed` fixes the weights; `max_position_embeddings` overrides the context length of the size preset
    (e.g. to exercise prompt-too-long handling); `corpus_note` describes a caller-supplied corpus in the
    provenance file. Returns `out_dir` as a Path. Building is deterministic for
    the same arguments and corpus.
    """
    if kind not in _FAMILIES:
        raise ValueError(f"stand-in kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if (kind, size) not in _SHAPES:
        raise ValueError(f"stand-in size must be 'tiny', 'small' or 'medium', got {size!r}")
    shape = _SHAPES[(kind, size)]
    if max_position_embeddings is not None:
        if max_position_embeddings < 8:
            raise ValueError(f"max_position_embeddings must be >= 8, got {max_position_embeddings}")
        shape = _Shape(**{**shape.__dict__, "context": max_position_embeddings})
    if corpus is None:
        texts, source = standin_corpus(data_dir, seed=seed)
    else:
        texts, source = list(corpus), corpus_note or f"{len(corpus)} caller-supplied texts"
    tokenizer = build_standin_tokenizer(kind, texts, shape.vocab)
    model = _build_model(kind, shape, tokenizer, seed)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with _no_progress_bars():
        model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    meta = {
        "kind": kind, "size": size, "seed": seed, "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer),
        "context": shape.context, "eos_token": tokenizer.eos_token, "tokenizer_corpus": source,
        "note": "random weights: a stand-in for running the real local-model code path, not a usable model",
    }
    (out / STANDIN_META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def build_standin_pair(out_root: str | Path, *, seed: int = 0, size: StandinSize = "tiny",
                       data_dir: str | Path | None = None) -> dict[str, Path]:
    """Both stand-ins under `out_root/qwen2` and `out_root/llama` (the tokenizer corpus is read once)."""
    texts, source = standin_corpus(data_dir, seed=seed)
    root = Path(out_root).expanduser()
    return {kind: build_standin(kind, root / kind, seed=seed + i, size=size, corpus=texts, corpus_note=source)
            for i, kind in enumerate(KINDS)}


__all__ = [
    "KINDS",
    "LLAMA3_CHAT_TEMPLATE",
    "QWEN2_CHAT_TEMPLATE",
    "STANDIN_META_FILE",
    "build_standin",
    "build_standin_pair",
    "build_standin_tokenizer",
    "standin_corpus",
]
