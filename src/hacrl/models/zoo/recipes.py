"""The zoo's recipes: every field that determines a built-in agent's weights, and the named agent sets.

A recipe names a real ``transformers`` causal LM built from a config (GPT-2 or Llama), a tokenizer built locally
(characters, or a byte-level BPE trained on the task's text) and a short supervised warm start on the arithmetic
task. Recipes are data; `hacrl.models.zoo.warm_start` trains one and `hacrl.models.zoo.store` stores, ships and
loads the result. What the recipes are tuned to, and the measurements behind them: docs/results/testbed.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from hacrl.tasks.arithmetic import ArithmeticConfig

ZOO_FORMAT = 1
"""Bump when the build procedure changes in a way that changes the weights: it invalidates every cache."""

Architecture = Literal["gpt2", "llama"]
TokenizerKind = Literal["char", "bpe"]
StoredDtype = Literal["float32", "float16"]


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
    schedule_steps: int | None = None
    """Length of the learning-rate schedule when it is longer than `steps` (None: `steps`): the warm start then
    stops partway through its cosine decay, an agent still learning rather than settled, which leaves RL room to
    improve it (docs/results/testbed.md)."""
    stored_dtype: StoredDtype = "float32"
    """The dtype the weights are saved in; `float16` halves the shipped files. The accuracy recorded after the
    warm start is measured on the stored weights, so it is what a run loading them sees at step 0."""

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
        if self.schedule_steps is not None and self.schedule_steps < self.steps:
            raise ValueError(f"recipe {self.name!r}: schedule_steps={self.schedule_steps} is shorter than "
                             f"steps={self.steps}")
        if self.stored_dtype not in ("float32", "float16"):
            raise ValueError(f"recipe {self.name!r}: stored_dtype must be 'float32' or 'float16', "
                             f"not {self.stored_dtype!r}")
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
# The recipes: the testbed of docs/results/testbed.md. Every agent stops its warm start partway through an
# 800-step schedule, where it is partly competent (greedy accuracy around 20-35%) but samples correct answers far
# more often than its greedy decoding finds them, which is the room RL has (measured with
# benchmarks/testbed/warm_start_curve.py). Mixes are per agent, so paired agents are complementary: each fails
# whole groups of prompts that its partner often solves. The weights are shipped (float16): the same recipe
# builds other weights on another CPU.

_CHAR_TEMPLATE = "Q: {prompt}\nA: "
_BPE_TEMPLATE = "Question: {prompt}\nSolution:\n"
_SCHEDULE = 800

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        # Char-level GPT-2 learns place-value multiplication from a small share of its data (the add-leaning
        # agent reaches about 30% on mul too), but the long add chains only from a large one (the mul-leaning
        # agent stays under 10% on add), so the pair's strongest transfer is add, towards gpt2-char-mul.
        Recipe(
            name="gpt2-char-add", architecture="gpt2", tokenizer="char", n_layers=4, hidden=128, heads=4,
            intermediate=512, prompt_template=_CHAR_TEMPLATE, mix=(("add", 0.8), ("mul", 0.2)), steps=500,
            schedule_steps=_SCHEDULE, lr=3e-3, seed=1, stored_dtype="float16",
        ),
        Recipe(
            name="gpt2-char-mul", architecture="gpt2", tokenizer="char", n_layers=4, hidden=128, heads=4,
            intermediate=512, prompt_template=_CHAR_TEMPLATE, mix=(("add", 0.2), ("mul", 0.8)), steps=500,
            schedule_steps=_SCHEDULE, lr=3e-3, seed=2, stored_dtype="float16",
        ),
        # The size pair's small agent: gpt2-char-add's family, tokenizer and mix at a smaller size (3x96, 0.35 M
        # parameters). Shallower models learn this task faster per step, so it stops earlier (400 steps) to stay
        # the weaker of the pair, as a smaller model of one family usually is.
        Recipe(
            name="gpt2-char-small", architecture="gpt2", tokenizer="char", n_layers=3, hidden=96, heads=3,
            intermediate=384, prompt_template=_CHAR_TEMPLATE, mix=(("add", 0.8), ("mul", 0.2)), steps=400,
            schedule_steps=_SCHEDULE, lr=3e-3, seed=3, stored_dtype="float16",
        ),
        # The BPE merges small numbers (10-25 are single tokens), which makes the add chains near table look-ups
        # and multiplication (partial products split unevenly into tokens) hard: on a balanced mix it learns add
        # first and fast (17% -> 65% between steps 250 and 350) and mul late, the mirror image of gpt2-char-mul.
        Recipe(
            name="llama-bpe", architecture="llama", tokenizer="bpe", n_layers=4, hidden=128, heads=4,
            kv_heads=2, intermediate=384, prompt_template=_BPE_TEMPLATE, mix=(("add", 0.5), ("mul", 0.5)),
            steps=300, schedule_steps=_SCHEDULE, lr=3e-3, seed=4, stored_dtype="float16",
        ),
    )
}
"""The built-in agents, by name."""

PAIRS: dict[str, tuple[str, ...]] = {
    "state": ("gpt2-char-add", "gpt2-char-mul"),  # same architecture and size, different warm start
    "size": ("gpt2-char-small", "gpt2-char-add"),  # same family and warm start, different size
    "model": ("gpt2-char-mul", "llama-bpe"),  # different architecture AND tokenizer: the demo pair
    "trio": ("gpt2-char-add", "gpt2-char-mul", "llama-bpe"),
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


def recipe_key(recipe: str | Recipe) -> str:
    """A stable hash of every recipe field plus `ZOO_FORMAT`: any change gives a new cache entry."""
    r = get_recipe(recipe)
    blob = json.dumps({"zoo_format": ZOO_FORMAT, "recipe": r.to_dict()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
