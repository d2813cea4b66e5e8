"""Building, shipping, caching and loading zoo agents.

`zoo:NAME` resolves, in order, to
1. the **shipped** agent: weights that come with hacrl (`SHIPPED_DIR`), checked against their SHA-256 manifest,
   so every machine starts from the same agents. Rebuilding a recipe on another CPU gives other weights (the
   float kernels differ; measured: docs/results/testbed.md), which is why the results are pinned to shipped files;
2. otherwise (test recipes, or a recipe changed since its agent was shipped) a build from the recipe in the
   cache (``$HACRL_CACHE``, default ``~/.cache/hacrl``), keyed by a hash of every recipe field.

A built agent is an ordinary Hugging Face directory (``config.json``, ``model.safetensors``, tokenizer files)
plus ``hacrl_agent.json`` (prompt template, recipe, the warm start's measured greedy accuracy), so the loader
that serves real models serves these too. Builds are written atomically (temp directory + ``os.replace``), so a
killed build never looks complete. `hacrl zoo build NAME` rebuilds into the cache (and says whether the result
is bitwise the shipped agent); `hacrl zoo build --ship NAME` (maintainers) replaces the shipped copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from hacrl.models.tokenizers import build_char_tokenizer
from hacrl.models.zoo.recipes import RECIPES, TEST_RECIPES, Recipe, get_recipe, recipe_key
from hacrl.models.zoo.warm_start import (
    build_model,
    build_tokenizer,
    count_parameters,
    measure_accuracy,
    warm_start,
)
from hacrl.tasks.arithmetic import ArithmeticTask, reference_solution
from hacrl.tasks.splits import balanced_prefix

logger = logging.getLogger(__name__)

AGENT_META_FILE = "hacrl_agent.json"
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
"""Where the shipped agents live, one directory per recipe name (package data)."""
CHECKSUM_FILE = "SHA256SUMS"
"""A shipped agent's manifest: ``<sha256>  <file>`` per file, the format `sha256sum -c` reads."""


class ZooIntegrityError(ValueError):
    """A shipped agent whose files do not match its manifest (a damaged install, or an edited file)."""


# --------------------------------------------------------------------------------------------------------
# Cache layout


def cache_root() -> Path:
    """Where built agents live: ``$HACRL_CACHE`` if set, else ``~/.cache/hacrl``."""
    env = os.environ.get("HACRL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hacrl"


def agent_dir(recipe: str | Recipe, cache: Path | None = None) -> Path:
    """The directory a recipe builds into (it may not exist yet)."""
    r = get_recipe(recipe)
    return (cache or cache_root()) / "zoo" / f"{r.name}-{recipe_key(r)}"


def is_built(recipe: str | Recipe, cache: Path | None = None) -> bool:
    """True when the recipe's directory is complete (its metadata file is written last)."""
    return (agent_dir(recipe, cache) / AGENT_META_FILE).is_file()


# --------------------------------------------------------------------------------------------------------
# Shipped agents


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_dir(recipe: str | Recipe, root: Path | None = None) -> Path | None:
    """The shipped agent of this exact recipe, or None (not shipped, or shipped for an older version of it)."""
    r = get_recipe(recipe)
    path = (root or SHIPPED_DIR) / r.name
    meta = path / AGENT_META_FILE
    if not meta.is_file():
        return None
    try:
        key = json.loads(meta.read_text()).get("recipe_key")
    except (OSError, json.JSONDecodeError):
        key = None
    if key != recipe_key(r):
        logger.warning("zoo: the shipped %s was built from another version of its recipe; building it instead",
                       r.name)
        return None
    return path


def verify_shipped(path: Path) -> None:
    """Check every file of a shipped agent against its manifest; a ZooIntegrityError names the first mismatch."""
    manifest = path / CHECKSUM_FILE
    if not manifest.is_file():
        raise ZooIntegrityError(f"{manifest}: the shipped agent's checksum manifest is missing; reinstall hacrl")
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        expected, name = line.split(maxsplit=1)
        file = path / name.strip()
        if not file.is_file() or _sha256(file) != expected:
            raise ZooIntegrityError(f"{file}: does not match its SHA-256 in {manifest} (a damaged install or an "
                                    f"edited file); reinstall hacrl, or rebuild with `hacrl zoo build {path.name}` "
                                    "and use the directory it prints as the agent's model")


def ship(recipe: str | Recipe, *, root: Path | None = None, cache: Path | None = None) -> Path:
    """Build a recipe (a cache hit when built) and install a copy with its manifest as the shipped agent."""
    r = get_recipe(recipe)
    built = build(r, cache=cache, use_shipped=False)
    target = (root or SHIPPED_DIR) / r.name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{r.name}-", dir=target.parent))
    try:
        files = sorted(p.name for p in built.iterdir() if p.is_file())
        for name in files:
            shutil.copy2(built / name, tmp / name)
        (tmp / CHECKSUM_FILE).write_text("".join(f"{_sha256(tmp / n)}  {n}\n" for n in files))
        _install(tmp, target, force=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------------------
# Building


def build(recipe: str | Recipe, *, cache: Path | None = None, force: bool = False, progress: bool = True,
          use_shipped: bool = True) -> Path:
    """The directory of a zoo agent: its shipped copy (checked) when there is one for this recipe and
    `use_shipped`, else a cache hit, else a fresh build into the cache.

    A build happens in a temporary directory beside the target and is moved into place with `os.replace`, so a
    killed build leaves at most a ``.tmp-*`` directory (swept by a later build once it is stale), never a half
    agent that looks complete. `force` rebuilds into the cache (never touching the shipped copy). Training runs
    on one thread (see `train_agent`).
    """
    r = get_recipe(recipe)
    if use_shipped and not force:
        shipped = shipped_dir(r)
        if shipped is not None:
            verify_shipped(shipped)
            return shipped
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


@dataclass
class TrainedAgent:
    """An agent fresh from its warm start, before it is written to disk."""

    recipe: Recipe
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    meta: dict[str, Any]


def train_agent(recipe: str | Recipe, *, progress: bool = True) -> TrainedAgent:
    """Tokenizer, seeded model init, warm start, rounding to the stored dtype and the greedy measurement, in
    memory (no cache involved).

    Runs on one thread (restored afterwards): that is what makes the result bitwise-reproducible on one CPU.
    """
    r = get_recipe(recipe)
    with _single_thread():
        start, cpu_start = time.perf_counter(), time.process_time()
        task = ArithmeticTask(r.task)
        tokenizer = build_tokenizer(r, task)
        torch.manual_seed(r.seed)
        model = build_model(r, tokenizer)
        losses = warm_start(model, tokenizer, r, task, progress=progress)
        if r.stored_dtype == "float16":  # measure what is stored: the weights a run will load
            model.half().float()
        train_seconds, train_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        problems = list(task.eval_problems())
        if r.eval_limit is not None:
            problems = balanced_prefix(problems, r.eval_limit)
        eval_start = time.perf_counter()
        accuracy = measure_accuracy(model, tokenizer, r, problems, task)
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
    """Write an agent as a Hugging Face directory in its stored dtype; the metadata file goes last (it marks
    completeness)."""
    model = agent.model
    if agent.recipe.stored_dtype == "float16":
        import copy

        model = copy.deepcopy(model).half()
    with _quiet_transformers(progress_bars=False):  # a one-shard "Writing model shards" bar is just noise
        model.save_pretrained(out, safe_serialization=True)
    agent.tokenizer.save_pretrained(out)
    (out / AGENT_META_FILE).write_text(json.dumps(agent.meta, indent=2) + "\n")


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
# Loading and listing


def load(path: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """Load a built agent in float32: (model in eval mode, tokenizer, the ``hacrl_agent.json`` metadata)."""
    path = Path(path)
    meta_file = path / AGENT_META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not a built zoo agent (no {AGENT_META_FILE})")
    meta = json.loads(meta_file.read_text())
    with _quiet_transformers(progress_bars=False):
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                     dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model.eval()
    return model, tokenizer, meta


def load_recipe(recipe: str | Recipe, *, cache: Path | None = None, progress: bool = True) -> tuple[
    PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]
]:
    """`build` (the shipped copy or a cache hit when there is one) then `load`."""
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
    warm-start mix, where the agent comes from (shipped / cached / not built) and, when available, the measured
    greedy accuracy per kind."""
    names: list[str] = list(RECIPES) + (list(TEST_RECIPES) if include_tests else [])
    rows = []
    for name in names:
        r = get_recipe(name)
        shipped = shipped_dir(r)
        where = shipped if shipped is not None else (agent_dir(r, cache) if is_built(r, cache) else None)
        accuracy = "-"
        if where is not None:
            meta = json.loads((where / AGENT_META_FILE).read_text())
            acc: Mapping[str, float] = meta["warm_start"]["greedy_accuracy"]
            accuracy = " ".join(f"{k} {v:.0%}" for k, v in acc.items())
        rows.append({
            "name": name,
            "architecture": r.architecture,
            "tokenizer": r.tokenizer if r.tokenizer == "char" else f"bpe-{r.bpe_vocab_size}",
            "params": recipe_parameters(r),
            "layers x hidden": f"{r.n_layers}x{r.hidden}",
            "mix": " ".join(f"{k} {w:.0%}" for k, w in r.mix_weights.items()),
            "agent": "shipped" if shipped is not None else ("cached" if where is not None else "not built"),
            "greedy accuracy": accuracy,
        })
    return rows
