"""`${VAR}` expansion in configuration data, so presets can name model paths without hard-coding them.

Why: a preset such as `configs/paper/qwen3-4b-base_llama3.2-3b-instruct.yaml` is shared, but where each user
keeps the checkpoints is not; `model: ${HACRL_QWEN3_4B_BASE}` reads the path from the environment.

Rules (deliberately small, shell-like, and strict):

* `${NAME}` is replaced by the value of environment variable NAME; `${NAME:-default}` uses `default` when NAME
  is unset or empty. NAME is `[A-Za-z_][A-Za-z0-9_]*`.
* Only string values are expanded (mapping keys are not); lists and nested mappings are walked.
* `$$` is a literal `$` (so `$${HOME}` stays `${HOME}`); a `$` not followed by `{` or `$` is left alone.
* An unset variable without a default, or a malformed `${...}`, raises `EnvVarError` naming the field
  (`agents[0].model`) and the variable. A string that is exactly one `${NAME}` whose value looks like a YAML
  scalar is NOT re-typed: the result is always a string, and the typed config validation decides.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

_TOKEN = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EnvVarError(ValueError):
    """A `${VAR}` in the config cannot be expanded; the message names the field and the variable.

    A ValueError (like `hacrl.config.ConfigError`), so `load_config` can re-raise it as a ConfigError
    unchanged in wording.
    """

    def __init__(self, field: str, variable: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.variable = variable


def expand_string(value: str, where: str = "value", environ: Mapping[str, str] | None = None) -> str:
    """`value` with every `${NAME}` / `${NAME:-default}` replaced (rules in the module doc)."""
    env = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "$$":
            return "$"
        body = match.group(1)
        if body is None:  # "${" without a closing brace
            raise EnvVarError(where, None, f"{where}: unclosed '${{' in {value!r}; write ${{NAME}} or $$ for a '$'")
        name, sep, default = body.partition(":-")
        if not _NAME.fullmatch(name):
            raise EnvVarError(where, name, f"{where}: {text!r} is not a valid variable reference; use ${{NAME}} or "
                                           "${NAME:-default} with NAME made of letters, digits and _")
        got = env.get(name)
        if got:
            return got
        if sep:
            return default
        state = "is set but empty" if got == "" else "is not set"
        raise EnvVarError(where, name, f"{where}: environment variable {name} {state} (the config says {value!r}); "
                                       f"export {name}=... or override the field with --set")

    return _TOKEN.sub(replace, value)


def expand_env(data: Any, where: str = "", environ: Mapping[str, str] | None = None) -> Any:
    """A copy of `data` (parsed YAML: dicts, lists, scalars) with `${VAR}` expanded in every string value.

    `where` is the dotted path of `data` itself, used in error messages (`agents[0].model`).
    """
    if isinstance(data, str):
        return expand_string(data, where or "value", environ)
    if isinstance(data, Mapping):
        return {k: expand_env(v, f"{where}.{k}" if where else str(k), environ) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return type(data)(expand_env(v, f"{where}[{i}]", environ) for i, v in enumerate(data))
    return data


def referenced_variables(data: Any) -> list[str]:
    """Names of the variables `data` refers to, in order of first appearance (for docs and `--help`)."""
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            for m in _TOKEN.finditer(node):
                body = m.group(1)
                if body:
                    name = body.partition(":-")[0]
                    if _NAME.fullmatch(name) and name not in names:
                        names.append(name)
        elif isinstance(node, Mapping):
            for v in node.values():
                walk(v)
        elif isinstance(node, list | tuple):
            for v in node:
                walk(v)

    walk(data)
    return names


__all__ = ["EnvVarError", "expand_env", "expand_string", "referenced_variables"]
