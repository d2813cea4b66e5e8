"""Checks of a run's inputs that need no model: done before anything is loaded, so a typo costs a second.

`check_models` resolves every agent's `model` without loading it: a `zoo:` name must be a recipe, anything
else a local directory (`check_model_paths`, torch-free, which the CLI runs before torch is imported). A
name that looks like a Hugging Face Hub id (`Qwen/Qwen3-4B`) gets the advice to download it first, because
hacrl loads only local directories (`local_files_only`: nothing is fetched).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hacrl.config import ConfigError

ZOO_PREFIX = "zoo:"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def missing_model_message(name: str, model: str) -> str:
    """The error for a model that is not a local directory, with the download hint when it looks like a Hub id."""
    path = Path(model).expanduser()
    message = f"agent {name!r}: model directory {str(path)!r} does not exist"
    if _HUB_ID.fullmatch(model) and not model.startswith((".", "/", "~")):
        local = f"models/{model.rsplit('/', 1)[-1]}"
        message += (f"; if {model!r} is a Hugging Face Hub id, download it to a local directory first "
                    f"(`hf download {model} --local-dir {local}`) and set model: {local} (hacrl never downloads)")
    return message


def check_models(agents: Sequence[Any]) -> None:
    """Every agent's model resolves: `check_model_paths`, then zoo names against the recipes."""
    check_model_paths(agents)
    known: list[str] | None = None
    for i, agent in enumerate(agents):
        model = str(agent.model)
        if not model.startswith(ZOO_PREFIX):
            continue
        known = known or zoo_recipe_names()
        recipe = model[len(ZOO_PREFIX):]
        if recipe not in known:
            close = difflib.get_close_matches(recipe, known, n=1)
            hint = f"; did you mean 'zoo:{close[0]}'?" if close else ""
            raise ConfigError(f"agents[{i}].model: agent {agent.name!r}: unknown zoo recipe {recipe!r}{hint} "
                              f"(valid: {', '.join(known)}; see `hacrl zoo list --all`)")


def check_model_paths(agents: Sequence[Any]) -> None:
    """Every non-zoo model is an existing directory (no torch needed, so the CLI checks it first)."""
    for agent in agents:
        model = str(agent.model)
        if model.startswith(ZOO_PREFIX):
            continue
        path = Path(model).expanduser()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"agent {agent.name!r}: model {str(path)!r} is a file; give the model's directory")
        if not path.is_dir():
            raise ConfigError(missing_model_message(agent.name, model))


def zoo_recipe_names() -> list[str]:
    from hacrl.models import zoo

    return [*zoo.RECIPES, *zoo.TEST_RECIPES]
