"""The tiny-agent zoo: real HF directories, cached, atomic, deterministic, heterogeneous as advertised."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hacrl.models import zoo
from hacrl.tasks.arithmetic import ArithmeticConfig, ArithmeticTask, reference_solution
from hacrl.tasks.splits import balanced_prefix

TEST_NAMES = ("test-gpt2-char", "test-llama-bpe")


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty cache, so no test ever writes into (or reads from) the user's."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HACRL_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both test agents, built once for the read-only tests of this module (in a private cache)."""
    cache = tmp_path_factory.mktemp("zoo-shared")
    return {name: zoo.build(name, cache=cache, progress=False) for name in TEST_NAMES}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cache_root_follows_env(private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert zoo.cache_root() == private_cache
    monkeypatch.delenv("HACRL_CACHE")
    assert zoo.cache_root() == Path.home() / ".cache" / "hacrl"


@pytest.mark.parametrize("name", TEST_NAMES)
def test_build_writes_a_hugging_face_directory(name: str, private_cache: Path) -> None:
    path = zoo.build(name, progress=False)
    assert path.parent.parent == private_cache and path.name.startswith(name + "-")
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "hacrl_agent.json"):
        assert (path / f).is_file(), f
    meta = json.loads((path / "hacrl_agent.json").read_text())
    recipe = zoo.get_recipe(name)
    assert meta["format"] == 1 and meta["name"] == name
    assert meta["prompt_template"] == recipe.prompt_template
    assert meta["recipe"] == recipe.to_dict()
    assert set(meta["warm_start"]["greedy_accuracy"]) == {"overall", "add", "mul"}
    assert meta["warm_start"]["seconds"] < 30
    assert not list(private_cache.glob("zoo/.tmp-*")), "the temporary build directory must be gone"


@pytest.mark.parametrize("name", TEST_NAMES)
def test_reload_with_auto_classes_gives_identical_logits(name: str, built: dict[str, Path]) -> None:
    path = built[name]
    trained = zoo.train_agent(name, progress=False)  # deterministic: the same weights, still in memory
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    problem = ArithmeticTask(trained.recipe.task).eval_problems()[0]
    prompt_ids, completion_ids = zoo.encode_example(
        tokenizer, trained.recipe.prompt_template, problem, reference_solution(problem)
    )
    assert (prompt_ids, completion_ids) == zoo.encode_example(
        trained.tokenizer, trained.recipe.prompt_template, problem, reference_solution(problem)
    )
    ids = torch.tensor([prompt_ids + completion_ids])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, trained.model(ids).logits)
    assert type(model).__name__ == ("GPT2LMHeadModel" if "gpt2" in name else "LlamaForCausalLM")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.padding_side == "left"


def test_second_build_is_a_cache_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    first = zoo.build("test-gpt2-char", progress=False)
    stamp = (first / "model.safetensors").stat().st_mtime_ns

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached recipe must not be trained again")

    monkeypatch.setattr(zoo.store, "train_agent", no_training)
    assert zoo.build("test-gpt2-char", progress=False) == first
    assert zoo.build(zoo.get_recipe("test-gpt2-char"), progress=False) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert zoo.is_built("test-gpt2-char")


def test_force_rebuilds_in_place() -> None:
    first = zoo.build("test-gpt2-char", progress=False)
    digest = _digest(first / "model.safetensors")
    again = zoo.build("test-gpt2-char", force=True, progress=False)
    assert again == first and _digest(again / "model.safetensors") == digest
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no .tmp-* or .old-* left behind


@pytest.mark.parametrize("name", TEST_NAMES)
def test_build_is_bitwise_deterministic(name: str, tmp_path: Path, built: dict[str, Path]) -> None:
    a = built[name]
    b = zoo.build(name, cache=tmp_path / "again", progress=False)
    for f in ("model.safetensors", "tokenizer.json"):
        assert _digest(a / f) == _digest(b / f), f


def test_a_killed_build_leaves_nothing_that_looks_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    def dies(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # what Ctrl-C in the middle of the warm start raises

    monkeypatch.setattr(zoo.store, "warm_start", dies)
    with pytest.raises(KeyboardInterrupt):
        zoo.build("test-gpt2-char", progress=False)
    assert not zoo.is_built("test-gpt2-char")
    assert not zoo.agent_dir("test-gpt2-char").exists()
    assert not list(zoo.agent_dir("test-gpt2-char").parent.glob(".tmp-*"))


def test_stale_leftovers_are_swept_young_ones_kept(private_cache: Path) -> None:
    folder = zoo.agent_dir("test-gpt2-char").parent
    stale, young = folder / ".tmp-test-gpt2-char-old", folder / ".tmp-test-llama-bpe-running"
    for d in (stale, young):
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
    past = time.time() - 7 * 3600
    os.utime(stale, (past, past))
    zoo.build("test-gpt2-char", progress=False)
    assert not stale.exists() and young.exists()


def test_recipe_key_is_stable_and_sensitive() -> None:
    base = zoo.get_recipe("test-gpt2-char")
    key = zoo.recipe_key(base)
    assert key == zoo.recipe_key("test-gpt2-char") == zoo.recipe_key(replace(base))
    assert len(key) == 16 and int(key, 16) >= 0
    variants = [
        replace(base, seed=base.seed + 1),
        replace(base, steps=base.steps + 1),
        replace(base, lr=base.lr * 2),
        replace(base, hidden=64),
        replace(base, prompt_template="Question: {prompt}\n"),
        replace(base, mix=(("add", 0.5), ("mul", 0.5))),
        replace(base, task=replace(base.task, seed=1)),
        replace(base, name="renamed"),
    ]
    keys = {zoo.recipe_key(v) for v in variants}
    assert key not in keys and len(keys) == len(variants)


def test_char_tokenizer_round_trips_a_reference_solution(built: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(built["test-gpt2-char"])
    task = ArithmeticTask()
    for problem in (task.eval_problems()[0], task.eval_problems()[-1]):
        text = reference_solution(problem)
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert len(ids) == len(text)  # one token per character
        assert tokenizer.decode(ids) == text
        full = [*ids, tokenizer.eos_token_id]
        assert tokenizer.decode(full, skip_special_tokens=True) == text


def test_bpe_tokenizer_round_trips_and_compresses(built: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(built["test-llama-bpe"])
    problem = ArithmeticTask().eval_problems()[-1]
    text = zoo.get_recipe("test-llama-bpe").prompt_template.format(prompt=problem.prompt) + reference_solution(problem)
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text)  # merges learned from the task's own text


def test_load_helper_and_the_warm_start_measurement(built: dict[str, Path]) -> None:
    """The recorded warm start is measured by the one evaluator on the stored weights: re-measuring the loaded
    agent gives the recorded numbers."""
    model, tokenizer, meta = zoo.load(built["test-llama-bpe"])
    recipe = zoo.get_recipe("test-llama-bpe")
    task = ArithmeticTask(recipe.task)
    problems = balanced_prefix(list(task.eval_problems()), recipe.eval_limit or 8)
    assert zoo.measure_accuracy(model, tokenizer, recipe, problems, task) == meta["warm_start"]["greedy_accuracy"]
    with pytest.raises(FileNotFoundError, match="not a built zoo agent"):
        zoo.load(Path("/nonexistent"))


def test_float16_storage_rounds_what_is_measured(tmp_path: Path) -> None:
    """A float16 recipe stores half-size weights, and the agent loaded from them (float32) is the one measured."""
    recipe = replace(zoo.get_recipe("test-gpt2-char"), stored_dtype="float16")
    path = zoo.build(recipe, cache=tmp_path, progress=False)
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118 - safe_open has no iter
    model, tokenizer, meta = zoo.load(path)
    assert next(model.parameters()).dtype == torch.float32
    task = ArithmeticTask(recipe.task)
    problems = balanced_prefix(list(task.eval_problems()), 8)
    assert zoo.measure_accuracy(model, tokenizer, recipe, problems, task) == meta["warm_start"]["greedy_accuracy"]
    trained = zoo.train_agent(recipe, progress=False)
    for (name, a), b in zip(trained.model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # the in-memory agent was rounded before it was measured


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="gpt2-char-add") as info:
        zoo.build("no-such-agent")
    assert "no-such-agent" in str(info.value) and "test-gpt2-char" in str(info.value)
    with pytest.raises(ValueError, match="model"):
        zoo.get_pair("nope")


def test_bad_recipes_raise() -> None:
    base = zoo.get_recipe("test-gpt2-char")
    with pytest.raises(ValueError, match="architecture"):
        replace(base, architecture="rnn")
    with pytest.raises(ValueError, match="mix"):
        replace(base, mix=(("div", 1.0),))
    with pytest.raises(ValueError, match="prompt"):
        replace(base, prompt_template="no placeholder")
    with pytest.raises(ValueError, match="format string"):
        replace(base, prompt_template="{prompt} {other}")


def test_recipes_cover_every_heterogeneity_type() -> None:
    assert len(zoo.RECIPES) >= 4
    for names in zoo.PAIRS.values():
        assert all(n in zoo.RECIPES for n in names)
    assert set(zoo.PAIRS) >= {"state", "size", "model", "trio"} and len(zoo.PAIRS["trio"]) == 3

    a, b = (zoo.RECIPES[n] for n in zoo.PAIRS["state"])
    assert (a.architecture, a.tokenizer, a.n_layers, a.hidden) == (b.architecture, b.tokenizer, b.n_layers, b.hidden)
    assert a.mix != b.mix
    a, b = (zoo.RECIPES[n] for n in zoo.PAIRS["size"])
    assert a.architecture == b.architecture and a.tokenizer == b.tokenizer
    assert zoo.recipe_parameters(a) != zoo.recipe_parameters(b)
    a, b = (zoo.RECIPES[n] for n in zoo.PAIRS[zoo.DEMO_PAIR])
    assert {a.architecture, b.architecture} == {"gpt2", "llama"} and {a.tokenizer, b.tokenizer} == {"char", "bpe"}
    assert a.prompt_template != b.prompt_template
    # (that the demo pair is complementary is a measured property: benchmarks/zoo_calibration.py)


def test_list_recipes_rows() -> None:
    zoo.build("test-gpt2-char", progress=False)
    rows = zoo.list_recipes(include_tests=True)
    by_name = {r["name"]: r for r in rows}
    assert set(zoo.RECIPES) | set(zoo.TEST_RECIPES) <= set(by_name)
    assert by_name["test-gpt2-char"]["agent"] == "cached" and by_name["test-llama-bpe"]["agent"] == "not built"
    assert all(0.05e6 < by_name[n]["params"] < 3e6 for n in zoo.RECIPES)
    assert {r["name"] for r in zoo.list_recipes()} == set(zoo.RECIPES)  # test recipes hidden by default


def test_recipe_task_config_round_trips_to_json() -> None:
    recipe = replace(zoo.get_recipe("test-gpt2-char"), task=ArithmeticConfig(kinds=["mul", "add"]))  # type: ignore[arg-type]
    d = json.loads(json.dumps(recipe.to_dict()))
    assert d["task"]["kinds"] == ["mul", "add"] and d["mix"] == {"add": 0.85, "mul": 0.15}
    assert hash(recipe)  # frozen and hashable even when given a list
    assert zoo.Recipe.from_dict(d) == recipe
