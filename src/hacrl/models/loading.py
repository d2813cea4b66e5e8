"""Load an agent (model + tokenizer + prompt template) from a local Hugging Face directory.

One code path for every agent: a built-in zoo agent is a directory shipped with hacrl (or built into the
cache), a user's checkpoint is a directory on disk; both go through `load_agent`. Nothing is fetched from a hub
(`local_files_only`), weights load only from safetensors, and remote code runs only when the config says so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from hacrl.checkpoint import ADAPTER_FILES

logger = logging.getLogger(__name__)

AGENT_META_FILE = "hacrl_agent.json"
ZOO_PREFIX = "zoo:"
DEFAULT_PLAIN_TEMPLATE = "{prompt}\n"


class AgentLoadError(ValueError):
    """A model directory that cannot serve as an agent; the message says which file or field is wrong."""


@dataclass
class PromptTemplate:
    """How an agent turns a bare question into its model input.

    `plain`: a format string with `{prompt}`; otherwise the tokenizer's chat template renders a single user
    turn with the generation prompt appended. Either is tokenised WITHOUT extra special tokens, the same way
    the zoo's warm start and the pool's re-tokenisation do, so a prompt has one token sequence per agent.
    """

    plain: str | None
    use_chat_template: bool = False
    system_prompt: str | None = None

    def render(self, tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
        if self.use_chat_template:
            messages = [{"role": "user", "content": prompt}]
            if self.system_prompt:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        assert self.plain is not None
        return self.plain.format(prompt=prompt)


@dataclass
class LoadedAgent:
    name: str
    path: Path
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    template: PromptTemplate
    meta: dict[str, Any]

    def encode_prompt(self, prompt: str) -> list[int]:
        text = self.template.render(self.tokenizer, prompt)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def resolve_model_path(model: str, *, build_missing: bool = True, progress: bool = True) -> Path:
    """`zoo:NAME` -> the zoo agent's directory (shipped, checked against its manifest; else built into the cache);
    anything else -> a local path."""
    if model.startswith(ZOO_PREFIX):
        from hacrl.models import zoo

        recipe = model[len(ZOO_PREFIX):]
        try:
            zoo.get_recipe(recipe)
        except ValueError as exc:
            raise AgentLoadError(f"model {model!r}: {exc}") from None
        if not build_missing and zoo.shipped_dir(recipe) is None and not zoo.is_built(recipe):
            raise AgentLoadError(f"zoo agent {recipe!r} is not built; run `hacrl zoo build {recipe}`")
        try:
            return zoo.build(recipe, progress=progress)
        except zoo.ZooIntegrityError as exc:
            raise AgentLoadError(f"model {model!r}: {exc}") from None
    return Path(model).expanduser()


def _dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise AgentLoadError(f"dtype must be one of auto, {', '.join(table)}; got {name!r}")
    return table[name]


def check_device(device: str) -> None:
    """CUDA devices need a GPU; say so plainly instead of failing deep inside PyTorch."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AgentLoadError(f"device {device!r} was requested but no CUDA GPU is available on this machine; "
                             "use device: cpu")


def load_agent(
    name: str,
    model: str,
    *,
    device: str = "cpu",
    dtype: str = "auto",
    prompt_template: str | None = None,
    use_chat_template: bool | None = None,
    system_prompt: str | None = None,
    trust_remote_code: bool = False,
    gradient_checkpointing: bool = False,
    progress: bool = True,
) -> LoadedAgent:
    """Load one agent; errors name the directory and the missing piece."""
    check_device(device)
    path = resolve_model_path(model, progress=progress)
    if not path.is_dir():
        from hacrl.preflight import missing_model_message

        raise AgentLoadError(missing_model_message(name, model))
    if trust_remote_code:
        logger.warning("agent %s: trust_remote_code is on: running the Python code shipped in %s (only do this "
                       "for model code you trust)", name, path)
    if not (path / "config.json").is_file() and (path / ADAPTER_FILES[0]).is_file():
        raise AgentLoadError(f"agent {name!r}: {str(path)!r} holds LoRA adapters ({ADAPTER_FILES[0]}), not a whole "
                             "model; write one with `hacrl export RUN_DIR --agent NAME --merge --out DIR` and use that")
    if not (path / "config.json").is_file():
        raise AgentLoadError(f"agent {name!r}: {str(path)!r} has no config.json; is it a Hugging Face model directory?")
    has_tokenizer = any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))
    if not has_tokenizer:
        raise AgentLoadError(f"agent {name!r}: {str(path)!r} has no tokenizer files (tokenizer.json or "
                             "tokenizer_config.json)")
    has_weights = any(path.glob("*.safetensors"))
    if not has_weights:
        raise AgentLoadError(f"agent {name!r}: {str(path)!r} has no *.safetensors weights (only safetensors are "
                             "loaded; convert .bin checkpoints with `save_pretrained(safe_serialization=True)`)")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise AgentLoadError(f"agent {name!r}: cannot read the config in {str(path)!r}: {exc}") from exc
    try:
        lm = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, trust_remote_code=trust_remote_code, use_safetensors=True,
            dtype=_dtype(dtype, device),
        )
    except ValueError as exc:
        reason = str(exc).split("Model type should be one of")[0].strip()
        raise AgentLoadError(f"agent {name!r}: {str(path)!r} ({config.model_type}) is not a causal language model "
                             f"that transformers can load: {reason}") from exc
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    if tokenizer.eos_token_id is None:
        raise AgentLoadError(f"agent {name!r}: the tokenizer in {str(path)!r} has no EOS token; generation could "
                             "never stop")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm.to(device)
    lm.eval()  # RL updates run without dropout so rollout and training log-probs agree
    if gradient_checkpointing:
        # transformers 5.24 renamed it (the old name warns, to be removed in v6); 5.19 has only the old one
        enable = getattr(lm, "activation_checkpointing_enable", None) or lm.gradient_checkpointing_enable
        enable()
    meta = _read_meta(path)
    template = _choose_template(tokenizer, meta, prompt_template, use_chat_template, system_prompt)
    return LoadedAgent(name=name, path=path, model=lm, tokenizer=tokenizer, template=template, meta=meta)


def _read_meta(path: Path) -> dict[str, Any]:
    meta_file = path / AGENT_META_FILE
    if not meta_file.is_file():
        return {}
    try:
        return dict(json.loads(meta_file.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise AgentLoadError(f"{str(meta_file)!r} is not valid JSON: {exc}") from exc


def _choose_template(
    tokenizer: PreTrainedTokenizerBase,
    meta: dict[str, Any],
    prompt_template: str | None,
    use_chat_template: bool | None,
    system_prompt: str | None,
) -> PromptTemplate:
    """Explicit template > chat template (when the tokenizer has one) > the agent's saved template > plain."""
    if prompt_template is not None:
        if "{prompt}" not in prompt_template:
            raise AgentLoadError(f"prompt_template must contain '{{prompt}}', got {prompt_template!r}")
        return PromptTemplate(plain=prompt_template)
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template is True and not has_chat:
        raise AgentLoadError("use_chat_template is true but the tokenizer has no chat template")
    if has_chat and use_chat_template is not False:
        return PromptTemplate(plain=None, use_chat_template=True, system_prompt=system_prompt)
    return PromptTemplate(plain=str(meta.get("prompt_template", DEFAULT_PLAIN_TEMPLATE)))


def stop_token_ids(tokenizer: Any, model: Any) -> list[int]:
    """The tokenizer's EOS plus every EOS in the model's generation config.

    Real chat checkpoints list several end tokens in `generation_config.json` (Llama 3 Instruct:
    `<|end_of_text|>`, `<|eom_id|>`, `<|eot_id|>`; Qwen3: `<|im_end|>`, `<|endoftext|>`); stopping only at the
    tokenizer's EOS would let a finished answer run on to `max_new_tokens`.
    """
    ids: list[int] = []
    for source in (getattr(tokenizer, "eos_token_id", None),
                   getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        values = source if isinstance(source, list | tuple) else [source]
        for v in values:
            if isinstance(v, int) and v not in ids:
                ids.append(v)
    return ids
