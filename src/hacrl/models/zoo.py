"""The built-in zoo of tiny heterogeneous agents, warm-started and cached on disk.

Why a zoo: HACPO needs agents that differ in *state* (same architecture and size, different weights),
*size* (same family, different parameter counts) and *model* (different architecture and tokenizer)
(HACPO.md §1), that start partly competent so RL has signal, and that cost no download. Each recipe
names a real ``transformers`` causal LM built from a config (GPT-2 or Llama), a tokenizer built locally
(characters or a BPE trained on the task's text) and a short supervised warm start on the arithmetic
task's reference solutions. Warm-start data mixes differ per recipe (leaning to ``add`` or to ``mul``;
the name says which), and the tokenizers shape what comes easily, so that paired agents are
complementary: each is good at what its partner is weak at (measured: benchmarks/zoo_calibration.py).

Recipes: ``gpt2-char-add`` and ``gpt2-char-mul`` (STATE pair: same GPT-2 4x128, char tokenizer, opposite
mixes), ``gpt2-char-small`` (SIZE pair with ``gpt2-char-add``: 3x96, same mix), ``llama-bpe-mul`` (MODEL
pair with ``gpt2-char-mul``: Llama + byte-level BPE; the demo pair). ``test-*`` recipes build in a second.

A built agent is an ordinary Hugging Face directory (``config.json``, ``model.safetensors``, tokenizer files)
plus ``hacrl_agent.json`` (prompt template, recipe, measured greedy accuracy), so the loader that serves real
models serves these too. Builds are deterministic for a recipe on one CPU model (bitwise-identical weights:
one thread, fixed seeds, a fixed data order; transformers 5.23 and 5.24 built the same bytes for
``gpt2-char-add``), but not necessarily across machines: an AMD EPYC built other weights than the Intel Xeon
behind the committed results (warm-start greedy accuracy of ``gpt2-char-add`` 39.0% vs 39.4%; same code and
versions, so most likely the CPU's float kernels). Builds are cached under a key that hashes every recipe
field, and written atomically (temp directory + ``os.replace``), so a killed build never looks complete.

Conventions every consumer of these agents must follow (they are how the warm start trained them):

* The prompt is ``prompt_template.format(prompt=problem.prompt)``; prompt and completion are tokenized
  **separately** with ``add_special_tokens=False`` (no BOS) and concatenated, and the completion ends with
  the tokenizer's EOS token. Generation therefore starts right after the prompt's own tokens.
* Dropout is 0 everywhere, so train-mode and eval-mode log-probabilities agree (RL ratios rely on it).
* The tokenizers pad on the left (for batched generation); ``pad_token_id != eos_token_id``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from hacrl.models.tokenizers import build_char_tokenizer, train_bpe_tokenizer
from hacrl.tasks.arithmetic import ArithmeticConfig, ArithmeticTask, reference_solution
from hacrl.tasks.base import Problem

logger = logging.getLogger(__name__)

ZOO_FORMAT = 1
"""Bump when the build procedure changes in a way that changes the weights: it invalidates every cache."""
AGENT_META_FILE = "hacrl_agent.json"

Architecture = Literal["gpt2", "llama"]
TokenizerKind = Literal["char", "bpe"]


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a zoo agent's weights; all fields enter `recipe_key`.

    `mix` is the warm start's data mix over problem kinds as ``(kind, weight)`` pairs (weights are
    normalised). `intermediate` is the MLP width (GPT-2 ``n_inner``, Llama ``intermediate_size``).
    `max_length` is the model's position limit, not the length of warm-start sequences (those are the
    task's reference solutions, about 60 tokens at most with the char tokenizer). `eval_limit` caps the
    eval problems used to measure accuracy after the warm start (None: the whole eval split); only test
    recipes set it, to stay fast.
    """

    name: str
    architecture: Architecture
    tokenizer: TokenizerKind
    n_layers: int
    hidden: int
    heads: int
    intermediate: int
    prompt_template: str
    mix: tuple[tuple[str, float], ...]
    steps: int
    lr: float
    batch_size: int = 32
    warmup_steps: int = 30
    weight_decay: float = 0.01
    seed: int = 0
    max_length: int = 128
    bpe_vocab_size: int = 320
    kv_heads: int | None = None
    """Llama only: key/value heads (grouped-query attention); None means `heads`."""
    task: ArithmeticConfig = field(default_factory=ArithmeticConfig)
    eval_limit: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mix", tuple((str(k), float(w)) for k, w in self.mix))  # lists -> hashable
        if self.architecture not in ("gpt2", "llama"):
            raise ValueError(f"recipe {self.name!r}: architecture must be 'gpt2' or 'llama', not {self.architecture!r}")
        if self.tokenizer not in ("char", "bpe"):
            raise ValueError(f"recipe {self.name!r}: tokenizer must be 'char' or 'bpe', not {self.tokenizer!r}")
        try:
            rendered = self.prompt_template.format(prompt="\0")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"recipe {self.name!r}: prompt_template must be a format string with only "
                             f"'{{prompt}}' in braces: {exc}") from exc
        if "\0" not in rendered:
            raise ValueError(f"recipe {self.name!r}: prompt_template must contain '{{prompt}}'")
        if self.hidden % self.heads:
            raise ValueError(f"recipe {self.name!r}: hidden={self.hidden} is not divisible by heads={self.heads}")
        kinds = [k for k, _ in self.mix]
        unknown = [k for k in kinds if k not in self.task.kinds]
        if not self.mix or unknown or any(w < 0 for _, w in self.mix) or sum(w for _, w in self.mix) <= 0:
            raise ValueError(
                f"recipe {self.name!r}: mix={self.mix!r} needs non-negative weights over kinds {self.task.kinds}"
            )

    @property
    def mix_weights(self) -> dict[str, float]:
        """The data mix normalised to sum to 1."""
        total = sum(w for _, w in self.mix)
        return {k: w / total for k, w in self.mix}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (mix as a mapping, task config as a nested mapping)."""
        d = asdict(self)
        d["mix"] = {k: w for k, w in self.mix}
        d["task"]["kinds"] = list(self.task.kinds)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Inverse of `to_dict` (e.g. the ``recipe`` of a built agent's ``hacrl_agent.json``)."""
        d = dict(data)
        d["mix"] = tuple(d["mix"].items()) if isinstance(d["mix"], Mapping) else d["mix"]
        d["task"] = ArithmeticConfig(**d["task"])
        return cls(**d)

    @classmethod
    def for_tests(cls, architecture: Architecture = "gpt2", **overrides: Any) -> Recipe:
        """A recipe whose build takes a few seconds (accuracy irrelevant), for test suites."""
        base = TEST_RECIPES["test-gpt2-char" if architecture == "gpt2" else "test-llama-bpe"]
        return replace(base, **overrides)


# --------------------------------------------------------------------------------------------------------
# The recipes. Calibrated with benchmarks/zoo_calibration.py on a 2-core CPU (one thread per build).

_CHAR_TEMPLATE = "Q: {prompt}\nA: "
_BPE_TEMPLATE = "Question: {prompt}\nSolution:\n"

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        # Char-level GPT-2 finds place-value multiplication easier than the longer add chains, so its
        # add-leaning agent needs a 90/10 mix to be clearly add-leaning, and its mul-leaning one 25/75 to
        # stay above 10% on add.
        Recipe(
            name="gpt2-char-add", architecture="gpt2", tokenizer="char", n_layers=4, hidden=128, heads=4,
            intermediate=512, prompt_template=_CHAR_TEMPLATE, mix=(("add", 0.9), ("mul", 0.1)), steps=600,
            lr=3e-3, seed=1,
        ),
        Recipe(
            name="gpt2-char-mul", architecture="gpt2", tokenizer="char", n_layers=4, hidden=128, heads=4,
            intermediate=512, prompt_template=_CHAR_TEMPLATE, mix=(("add", 0.25), ("mul", 0.75)), steps=600,
            lr=3e-3, seed=2,
        ),
        Recipe(
            name="gpt2-char-small", architecture="gpt2", tokenizer="char", n_layers=3, hidden=96, heads=4,
            intermediate=384, prompt_template=_CHAR_TEMPLATE, mix=(("add", 0.9), ("mul", 0.1)), steps=600,
            lr=3e-3, seed=3,
        ),
        # Names say which kind the warm-start MIX leans to. The BPE merges small numbers (10-25 are single
        # tokens), which makes the add chains (running values mostly under 30) near table look-ups and
        # multiplication (partial products split unevenly into tokens) hard: even this mul-leaning mix leaves
        # it better at add (~80-86%) than at mul (~35-40%), the mirror image of gpt2-char-mul. That
        # tokenizer-made complementarity is what the demo pair uses. Its add skill appears abruptly between
        # steps 400 and 550; 600 steps is the shortest run where it did for every seed tried (at 540 steps
        # seed 5 stayed at 38% add).
        Recipe(
            name="llama-bpe-mul", architecture="llama", tokenizer="bpe", n_layers=4, hidden=128, heads=4,
            kv_heads=2, intermediate=384, prompt_template=_BPE_TEMPLATE, mix=(("add", 0.3), ("mul", 0.7)),
            steps=600, lr=3e-3, seed=4,
        ),
    )
}
"""The built-in agents, by name."""

PAIRS: dict[str, tuple[str, ...]] = {
    "state": ("gpt2-char-add", "gpt2-char-mul"),  # same architecture and size, different warm start
    "size": ("gpt2-char-small", "gpt2-char-add"),  # same family and warm start, different size
    "model": ("gpt2-char-mul", "llama-bpe-mul"),  # different architecture AND tokenizer: the demo pair
    "trio": ("gpt2-char-add", "gpt2-char-mul", "llama-bpe-mul"),
}
"""Named agent sets per heterogeneity type; ``PAIRS["model"]`` is the demo pair (see `DEMO_PAIR`)."""
DEMO_PAIR = "model"

_TEST_TASK = ArithmeticConfig(n_train=2_000, n_eval=500)
TEST_RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            name="test-gpt2-char", architecture="gpt2", tokenizer="char", n_layers=1, hidden=32, heads=2,
            intermediate=64, prompt_template=_CHAR_TEMPLATE, mix=(("add", 0.85), ("mul", 0.15)), steps=12, lr=3e-3,
            batch_size=8, warmup_steps=2, task=_TEST_TASK, eval_limit=8,
        ),
        Recipe(
            name="test-llama-bpe", architecture="llama", tokenizer="bpe", n_layers=1, hidden=32, heads=2,
            intermediate=64, prompt_template=_BPE_TEMPLATE, mix=(("add", 0.15), ("mul", 0.85)), steps=12, lr=3e-3,
            batch_size=8, warmup_steps=2, task=_TEST_TASK, eval_limit=8,
        ),
        # Head size 32 (hidden 64 / 2 heads) instead of 16: vLLM's CPU attention only runs head sizes of 32 and
        # up, so the vLLM backend's tests use these. New names rather than wider `test-*` recipes above, whose
        # weights the golden-hash test pins. 256 positions so a prompt can fill a whole KV block (128 tokens on
        # vLLM's CPU backend), which is what the prefix-cache test needs.
        Recipe(
            name="test-gpt2-char-h32", architecture="gpt2", tokenizer="char", n_layers=1, hidden=64, heads=2,
            intermediate=128, prompt_template=_CHAR_TEMPLATE, mix=(("add", 0.85), ("mul", 0.15)), steps=12,
            lr=3e-3, batch_size=8, warmup_steps=2, task=_TEST_TASK, eval_limit=8, max_length=256,
        ),
        Recipe(
            name="test-llama-bpe-h32", architecture="llama", tokenizer="bpe", n_layers=1, hidden=64, heads=2,
            intermediate=128, prompt_template=_BPE_TEMPLATE, mix=(("add", 0.15), ("mul", 0.85)), steps=12,
            lr=3e-3, batch_size=8, warmup_steps=2, task=_TEST_TASK, eval_limit=8, max_length=256,
        ),
    )
}
"""Tiny recipes for test suites (a few seconds each, accuracy irrelevant); not listed by default."""


def get_recipe(recipe: str | Recipe) -> Recipe:
    """Resolve a recipe name (built-in or test) to its `Recipe`; a clear error lists the valid names."""
    if isinstance(recipe, Recipe):
        return recipe
    if recipe in RECIPES:
        return RECIPES[recipe]
    if recipe in TEST_RECIPES:
        return TEST_RECIPES[recipe]
    raise ValueError(
        f"unknown zoo recipe {recipe!r}; valid names: {', '.join(RECIPES)} (test recipes: {', '.join(TEST_RECIPES)})"
    )


def get_pair(name: str) -> tuple[str, ...]:
    """The recipe names of a named agent set (`PAIRS`), with a clear error for unknown names."""
    if name not in PAIRS:
        raise ValueError(f"unknown zoo pair {name!r}; valid names: {', '.join(PAIRS)}")
    return PAIRS[name]


# --------------------------------------------------------------------------------------------------------
# Cache layout


def cache_root() -> Path:
    """Where built agents live: ``$HACRL_CACHE`` if set, else ``~/.cache/hacrl``."""
    env = os.environ.get("HACRL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hacrl"


def recipe_key(recipe: str | Recipe) -> str:
    """A stable hash of every recipe field plus `ZOO_FORMAT`: any change gives a new cache entry."""
    r = get_recipe(recipe)
    blob = json.dumps({"zoo_format": ZOO_FORMAT, "recipe": r.to_dict()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def agent_dir(recipe: str | Recipe, cache: Path | None = None) -> Path:
    """The directory a recipe builds into (it may not exist yet)."""
    r = get_recipe(recipe)
    return (cache or cache_root()) / "zoo" / f"{r.name}-{recipe_key(r)}"


def is_built(recipe: str | Recipe, cache: Path | None = None) -> bool:
    """True when the recipe's directory is complete (its metadata file is written last)."""
    return (agent_dir(recipe, cache) / AGENT_META_FILE).is_file()


# --------------------------------------------------------------------------------------------------------
# Building


def build(
    recipe: str | Recipe, *, cache: Path | None = None, force: bool = False, progress: bool = True
) -> Path:
    """Build (or fetch from the cache) a zoo agent and return its Hugging Face directory.

    A cache hit returns at once, without training. Otherwise the agent is built in a temporary directory
    beside the target and moved into place with `os.replace`, so a killed build leaves at most a
    ``.tmp-*`` directory (swept by a later build once it is stale), never a half agent that looks
    complete. Training runs on one thread (see `train_agent`).
    """
    r = get_recipe(recipe)
    target = agent_dir(r, cache)
    if not force and is_built(r, cache):
        logger.debug("zoo: %s is cached at %s", r.name, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(target.parent)
    logger.info("zoo: building %s (%s/%s, %d warm-start steps) into %s", r.name, r.architecture, r.tokenizer,
                r.steps, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{r.name}-", dir=target.parent))
    try:
        save_agent(train_agent(r, progress=progress), tmp)
        _install(tmp, target, force=force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


_STALE_SECONDS = 6 * 3600


def _sweep_stale(folder: Path) -> None:
    """Remove leftovers of killed builds; young ones may belong to a build still running elsewhere."""
    now = time.time()
    for leftover in [*folder.glob(".tmp-*"), *folder.glob(".old-*")]:
        with contextlib.suppress(OSError):
            if now - leftover.stat().st_mtime > _STALE_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)


def _install(tmp: Path, target: Path, *, force: bool) -> None:
    """Move a finished build into place; a concurrent builder that won the race is accepted."""
    if target.exists():
        if not force and (target / AGENT_META_FILE).is_file():
            return  # another process finished the same recipe first; keep its (identical) result
        trash = Path(tempfile.mkdtemp(prefix=f".old-{target.name}-", dir=target.parent))
        os.replace(target, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(tmp, target)
    except OSError:
        if not (target / AGENT_META_FILE).is_file():
            raise


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _quiet_transformers(*, progress_bars: bool = True) -> Iterator[None]:
    """Silence transformers' warnings (and optionally its progress bars) for the duration."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    if not progress_bars:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def build_tokenizer(recipe: Recipe, task: ArithmeticTask) -> PreTrainedTokenizerBase:
    """The recipe's tokenizer: characters, or a byte-level BPE trained on rendered training examples."""
    if recipe.tokenizer == "char":
        return build_char_tokenizer()
    corpus = [
        recipe.prompt_template.format(prompt=p.prompt) + reference_solution(p)
        for p in task.train_problems()[:4000]
    ]
    return train_bpe_tokenizer(corpus, vocab_size=recipe.bpe_vocab_size)


def build_model(recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A randomly initialised model from the recipe (seed the global torch RNG first for determinism)."""
    common = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    if recipe.architecture == "gpt2":
        config = GPT2Config(
            n_positions=recipe.max_length, n_embd=recipe.hidden, n_layer=recipe.n_layers, n_head=recipe.heads,
            n_inner=recipe.intermediate, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common,
        )
        return GPT2LMHeadModel(config)
    config = LlamaConfig(
        hidden_size=recipe.hidden, intermediate_size=recipe.intermediate, num_hidden_layers=recipe.n_layers,
        num_attention_heads=recipe.heads, num_key_value_heads=recipe.kv_heads or recipe.heads,
        max_position_embeddings=recipe.max_length, attention_dropout=0.0, **common,
    )
    return LlamaForCausalLM(config)


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


@dataclass
class TrainedAgent:
    """An agent fresh from its warm start, before it is written to disk."""

    recipe: Recipe
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    meta: dict[str, Any]


def train_agent(recipe: str | Recipe, *, progress: bool = True) -> TrainedAgent:
    """Tokenizer, seeded model init, warm start and greedy evaluation, in memory (no cache involved).

    Runs on one thread (restored afterwards): that is what makes the result bitwise-reproducible.
    """
    r = get_recipe(recipe)
    with _single_thread():
        start, cpu_start = time.perf_counter(), time.process_time()
        task = ArithmeticTask(r.task)
        tokenizer = build_tokenizer(r, task)
        torch.manual_seed(r.seed)
        model = build_model(r, tokenizer)
        losses = warm_start(model, tokenizer, r, task, progress=progress)
        train_seconds, train_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        problems = list(task.eval_problems())
        if r.eval_limit is not None:
            problems = _balanced_subset(problems, r.eval_limit)
        eval_start = time.perf_counter()
        accuracy = greedy_accuracy(model, tokenizer, r.prompt_template, problems, task)
        eval_seconds = time.perf_counter() - eval_start
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.generation_config, key, getattr(tokenizer, key))
    lengths = _token_lengths(r, tokenizer, task)
    meta = {
        "format": 1,
        "name": r.name,
        "prompt_template": r.prompt_template,
        "recipe": r.to_dict(),
        "recipe_key": recipe_key(r),
        "architecture": r.architecture,
        "tokenizer": r.tokenizer,
        "parameters": count_parameters(model),
        "max_prompt_tokens": lengths["prompt"],
        "max_completion_tokens": lengths["completion"],
        "warm_start": {
            "greedy_accuracy": accuracy,
            "eval_problems": len(problems),
            "seconds": round(train_seconds, 2),
            "cpu_seconds": round(train_cpu, 2),  # wall time is noisy on a shared machine; CPU time less so
            "eval_seconds": round(eval_seconds, 2),
            "final_loss": round(sum(losses[-20:]) / max(len(losses[-20:]), 1), 4),
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    return TrainedAgent(r, model, tokenizer, meta)


def save_agent(agent: TrainedAgent, out: Path) -> None:
    """Write an agent as a Hugging Face directory; the metadata file goes last (it marks completeness)."""
    with _quiet_transformers(progress_bars=False):  # a one-shard "Writing model shards" bar is just noise
        agent.model.save_pretrained(out, safe_serialization=True)
    agent.tokenizer.save_pretrained(out)
    (out / AGENT_META_FILE).write_text(json.dumps(agent.meta, indent=2) + "\n")


def _balanced_subset(problems: Sequence[Problem], n: int) -> list[Problem]:
    """The first problems of each kind, round-robin, so a small eval still covers every kind."""
    by_kind: dict[str, list[Problem]] = {}
    for p in problems:
        by_kind.setdefault(p.kind, []).append(p)
    out: list[Problem] = []
    i = 0
    while len(out) < n and any(i < len(v) for v in by_kind.values()):
        out.extend(v[i] for v in by_kind.values() if i < len(v))
        i += 1
    return out[:n]


def _token_lengths(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, task: ArithmeticTask) -> dict[str, int]:
    """Longest prompt and completion (with EOS) in tokens over a sample of training problems."""
    sample = [*task.train_problems()[:2000], *task.eval_problems()]
    prompts = tokenizer([recipe.prompt_template.format(prompt=p.prompt) for p in sample], add_special_tokens=False)
    completions = tokenizer([reference_solution(p) for p in sample], add_special_tokens=False)
    return {
        "prompt": max(len(x) for x in prompts["input_ids"]),
        "completion": max(len(x) for x in completions["input_ids"]) + 1,
    }


# --------------------------------------------------------------------------------------------------------
# Supervised warm start


def encode_example(
    tokenizer: PreTrainedTokenizerBase, template: str, problem: Problem, completion: str
) -> tuple[list[int], list[int]]:
    """Token ids of prompt and completion (+EOS), tokenized separately exactly as generation sees them."""
    prompt_ids = tokenizer.encode(template.format(prompt=problem.prompt), add_special_tokens=False)
    completion_ids = [*tokenizer.encode(completion, add_special_tokens=False), tokenizer.eos_token_id]
    return prompt_ids, completion_ids


def warm_start(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    recipe: Recipe,
    task: ArithmeticTask,
    *,
    progress: bool = True,
    callback: Callable[[int, PreTrainedModel], None] | None = None,
) -> list[float]:
    """Cross-entropy on reference solutions (completion tokens and EOS only); returns per-step losses.

    Each example's kind is drawn from the recipe's mix, then a training problem of that kind; the data
    order comes from ``random.Random(seed)`` so it is reproducible. AdamW with a linear warmup (the lr is
    high for such short runs) and cosine decay to 10% (the last steps settle instead of bouncing).
    `callback(steps_done, model)` runs after every step (calibration draws learning curves with it; it
    must leave the model in train mode).
    """
    from tqdm.auto import tqdm

    rng = random.Random(f"zoo:{recipe.seed}:data")
    by_kind: dict[str, list[Problem]] = {}
    for p in task.train_problems():
        by_kind.setdefault(p.kind, []).append(p)
    weights = recipe.mix_weights
    kinds = [k for k in weights if weights[k] > 0 and by_kind.get(k)]
    if not kinds:
        raise ValueError(f"recipe {recipe.name!r}: the task has no training problems of kinds {list(weights)}")
    cache: dict[str, tuple[list[int], list[int]]] = {}

    def example(p: Problem) -> tuple[list[int], list[int]]:
        if p.id not in cache:
            cache[p.id] = encode_example(tokenizer, recipe.prompt_template, p, reference_solution(p))
        return cache[p.id]

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "norm" in name or "ln_" in name else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr, betas=(0.9, 0.98),
    )

    def lr_at(step: int) -> float:
        if step < recipe.warmup_steps:
            return recipe.lr * (step + 1) / recipe.warmup_steps
        frac = (step - recipe.warmup_steps) / max(recipe.steps - recipe.warmup_steps, 1)
        return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    model.train()
    losses: list[float] = []
    bar = tqdm(range(recipe.steps), desc=f"warm start {recipe.name}", disable=not progress, leave=False)
    for step in bar:
        batch_kinds = rng.choices(kinds, weights=[weights[k] for k in kinds], k=recipe.batch_size)
        examples = [example(rng.choice(by_kind[k])) for k in batch_kinds]
        input_ids, labels, attention = _collate(examples, tokenizer.pad_token_id)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        logits = model(input_ids=input_ids, attention_mask=attention).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if callback is not None:
            callback(step + 1, model)
    bar.close()
    model.eval()
    return losses


def _collate(
    examples: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded batch; labels are -100 on prompt and padding so only the completion is learned."""
    width = max(len(p) + len(c) for p, c in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (p, c) in enumerate(examples):
        ids = p + c
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, len(p) : len(ids)] = torch.tensor(c)
        attention[i, : len(ids)] = 1
    return input_ids, labels, attention


# --------------------------------------------------------------------------------------------------------
# Greedy evaluation


@torch.no_grad()
def greedy_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    problems: Sequence[Problem],
    *,
    batch_size: int = 125,
    max_new_tokens: int = 80,
) -> list[str]:
    """Greedy completions (decoded, special tokens stripped) for `problems`, batched with left padding."""
    model.eval()
    texts: list[str] = []
    for i in range(0, len(problems), batch_size):
        chunk = problems[i : i + batch_size]
        prompts = [tokenizer.encode(template.format(prompt=p.prompt), add_special_tokens=False) for p in chunk]
        width = max(len(p) for p in prompts)
        limit = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
        new = min(max_new_tokens, limit - width)
        input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, p in enumerate(prompts):
            input_ids[j, width - len(p) :] = torch.tensor(p)
            attention[j, width - len(p) :] = 1
        with _quiet_transformers():  # finished rows are fed pad tokens, which makes GPT-2 warn needlessly
            out = model.generate(
                input_ids=input_ids, attention_mask=attention, do_sample=False, max_new_tokens=new,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
        texts.extend(tokenizer.batch_decode(out[:, width:], skip_special_tokens=True))
    return texts


def greedy_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    problems: Sequence[Problem],
    task: ArithmeticTask | None = None,
    *,
    batch_size: int = 125,
) -> dict[str, float]:
    """Greedy accuracy overall and per kind (keys ``"overall"`` and each kind), rounded to 4 places."""
    task = task or ArithmeticTask()
    completions = greedy_generate(model, tokenizer, template, problems, batch_size=batch_size)
    scores = task.score(problems, completions)
    result = {"overall": round(sum(scores) / max(len(scores), 1), 4)}
    by_kind: dict[str, list[float]] = {}
    for p, s in zip(problems, scores, strict=True):
        by_kind.setdefault(p.kind, []).append(s)
    for kind, values in by_kind.items():
        result[kind] = round(sum(values) / len(values), 4)
    return result


# --------------------------------------------------------------------------------------------------------
# Loading and listing


def load(path: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """Load a built agent: (model in eval mode, tokenizer, the ``hacrl_agent.json`` metadata)."""
    path = Path(path)
    meta_file = path / AGENT_META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not a built zoo agent (no {AGENT_META_FILE})")
    meta = json.loads(meta_file.read_text())
    with _quiet_transformers(progress_bars=False):
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model.eval()
    return model, tokenizer, meta


def load_recipe(recipe: str | Recipe, *, cache: Path | None = None, progress: bool = True) -> tuple[
    PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]
]:
    """`build` (a cache hit when already built) then `load`."""
    return load(build(recipe, cache=cache, progress=progress))


def recipe_parameters(recipe: str | Recipe) -> int:
    """Parameter count of a recipe's model, without training (builds the tokenizer and a random model)."""
    r = get_recipe(recipe)
    vocab = len(build_char_tokenizer()) if r.tokenizer == "char" else r.bpe_vocab_size
    with torch.device("meta"):
        model = build_model(r, _FakeVocab(vocab))
    return count_parameters(model)


class _FakeVocab:
    """Just enough tokenizer for `build_model` when only the shape matters."""

    def __init__(self, size: int) -> None:
        self._size = size
        self.bos_token_id, self.eos_token_id, self.pad_token_id = 1, 2, 0

    def __len__(self) -> int:
        return self._size


def list_recipes(*, cache: Path | None = None, include_tests: bool = False) -> list[dict[str, Any]]:
    """Rows for a ``hacrl zoo list`` table (flat values): name, architecture, tokenizer, params, size,
    warm-start mix, cached yes/no and, when cached, the measured greedy accuracy per kind."""
    names: list[str] = list(RECIPES) + (list(TEST_RECIPES) if include_tests else [])
    rows = []
    for name in names:
        r = get_recipe(name)
        built = is_built(r, cache)
        accuracy = "-"
        if built:
            meta = json.loads((agent_dir(r, cache) / AGENT_META_FILE).read_text())
            acc: Mapping[str, float] = meta["warm_start"]["greedy_accuracy"]
            accuracy = " ".join(f"{k} {v:.0%}" for k, v in acc.items())
        rows.append({
            "name": name,
            "architecture": r.architecture,
            "tokenizer": r.tokenizer if r.tokenizer == "char" else f"bpe-{r.bpe_vocab_size}",
            "params": recipe_parameters(r),
            "layers x hidden": f"{r.n_layers}x{r.hidden}",
            "mix": " ".join(f"{k} {w:.0%}" for k, w in r.mix_weights.items()),
            "cached": "yes" if built else "no",
            "greedy accuracy": accuracy,
        })
    return rows
