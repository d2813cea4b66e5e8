"""LoRA agents: wrap a loaded model in peft adapters, and hand out what the rest of hacrl needs from it.

Why a module of its own: a LoRA agent differs from a full-parameter one in four places only, and each has one
function here. What is trained (`trainable_parameters`: the adapters, so AdamW holds state for them alone), what a
checkpoint holds (`save_adapter` / `load_adapter`: adapter weights, never the frozen base), what an inference
engine gets (`hf_weights`: the base weights with the adapters merged in, under the base model's own names), and
the KL reference (`BaseModel`: the same weights with the adapters switched off, instead of a second copy).

The adapters are peft's: a checkpoint's agent directory is an ordinary peft adapter directory
(`adapter_config.json` + `adapter_model.safetensors`), which `peft.PeftModel.from_pretrained` loads.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hacrl.config import LORA_ALL_LINEAR, LORA_INSTALL_HINT, ConfigError, LoraConfig
from hacrl.models.loading import AgentLoadError

__all__ = ["BaseModel", "adaptable_module_names", "apply_lora", "hf_weights", "is_lora", "load_adapter",
           "save_adapter", "trainable_parameters"]


def _import_peft(where: str) -> Any:
    try:
        import peft
    except ImportError as exc:
        raise ConfigError(f"{where}: LoRA agents need peft, which cannot be imported ({exc}; "
                          f"{LORA_INSTALL_HINT})") from exc
    return peft


def _adaptable(module: torch.nn.Module) -> bool:
    """Layers peft's LoRA can adapt that a causal LM is made of: Linear, GPT-2's Conv1D, Embedding."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, torch.nn.Linear | Conv1D | torch.nn.Embedding)


def adaptable_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct leaf names (`q_proj`, `c_attn`, ...) of the model's layers that LoRA can adapt."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if name and _adaptable(module)})


def _check_targets(model: torch.nn.Module, targets: list[str], where: str, agent_name: str) -> None:
    """Every named target matches some layer (peft's rule: the full name, or its ending after a dot)."""
    names = [name for name, _ in model.named_modules() if name]
    for target in targets:
        if not any(name == target or name.endswith(f".{target}") for name in names):
            raise AgentLoadError(
                f"{where}.target_modules: {target!r} matches no module of agent {agent_name!r} "
                f"({type(model).__name__}); its layers LoRA can adapt are named: "
                f"{', '.join(adaptable_module_names(model))} (or use {LORA_ALL_LINEAR!r})")


def _uses_conv1d(model: torch.nn.Module, targets: list[str] | str) -> bool:
    """Whether the targeted layers are GPT-2-style Conv1D (weights stored transposed: peft's `fan_in_fan_out`)."""
    from transformers.pytorch_utils import Conv1D

    for name, module in model.named_modules():
        wanted = targets == LORA_ALL_LINEAR or any(name == t or name.endswith(f".{t}") for t in targets)
        if wanted and isinstance(module, Conv1D):
            return True
    return False


def apply_lora(model: torch.nn.Module, lora: LoraConfig, *, seed: int, where: str = "lora",
               agent_name: str = "agent") -> torch.nn.Module:
    """`model` with LoRA adapters (peft), only the adapters trainable.

    The adapters' random initialisation (peft draws lora_A from torch's global RNG) is seeded with `seed` and
    leaves the global RNG as it was, so the same config builds the same agent in any process (Ray or not).
    lora_B starts at zero: the adapted model computes exactly what the base model computes until the first update.
    """
    peft = _import_peft(where)
    targets = lora.target_modules
    if isinstance(targets, list):
        _check_targets(model, targets, where, agent_name)
    config = peft.LoraConfig(r=lora.r, lora_alpha=lora.effective_alpha, lora_dropout=0.0,
                             target_modules=targets, task_type="CAUSAL_LM", fan_in_fan_out=_uses_conv1d(model, targets))
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        try:
            return peft.get_peft_model(model, config)
        except (ValueError, TypeError) as exc:  # e.g. a target that names a layer type LoRA cannot adapt
            reason = " ".join(str(exc).split())[:400]
            raise AgentLoadError(f"{where}.target_modules: peft cannot put LoRA adapters on agent {agent_name!r} "
                                 f"({type(model).__name__}): {reason}; layers LoRA can adapt are named: "
                                 f"{', '.join(adaptable_module_names(model))}") from exc


def is_lora(model: torch.nn.Module) -> bool:
    """Whether `model` is a peft model (duck-typed, so that checking never imports peft)."""
    return callable(getattr(model, "get_base_model", None)) and hasattr(model, "peft_config")


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the optimizer updates: all of a full-parameter model's, a LoRA model's adapters."""
    return [p for p in model.parameters() if p.requires_grad]


def hf_weights(model: torch.nn.Module) -> Iterator[tuple[str, Tensor]]:
    """The model's weights under the plain Hugging Face names an inference engine loads.

    A full model: its `state_dict`. A LoRA model: the base weights with every adapter merged in (W + scale * B A,
    added in the weight's dtype, as peft's `merge_and_unload` does), yielded one tensor at a time so that at most
    one merged layer exists beside the model at once; the model itself is never modified.
    """
    if not is_lora(model):
        yield from ((name, tensor.detach()) for name, tensor in model.state_dict().items())
        return
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    layers = {f"{name}.weight": module for name, module in base.named_modules() if isinstance(module, LoraLayer)}
    for key, tensor in base.state_dict().items():
        if "lora_" in key:
            continue
        name = key.replace(".base_layer.", ".")
        layer = layers.get(name)
        if layer is None:
            yield name, tensor.detach()
            continue
        weight = tensor.detach()
        for adapter in layer.active_adapters:
            weight = weight + layer.get_delta_weight(adapter).detach().to(weight.dtype)
        yield name, weight


def save_adapter(model: torch.nn.Module, directory: Path) -> None:
    """The adapters only, as a peft adapter directory (the frozen base is never written; neither is the empty
    model card peft adds, which would be one more file per agent in every checkpoint)."""
    model.save_pretrained(directory, safe_serialization=True)
    (directory / "README.md").unlink(missing_ok=True)


def load_adapter(model: torch.nn.Module, state: dict[str, Tensor]) -> tuple[list[str], list[str]]:
    """Put adapter weights (as `save_adapter` wrote them) into `model`; returns (missing, unexpected) keys."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    expected = set(get_peft_model_state_dict(model))
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if not missing and not unexpected:
        set_peft_model_state_dict(model, state)
    return missing, unexpected


class BaseModel(torch.nn.Module):
    """A LoRA model's base: the same module with its adapters switched off for each call.

    Used as the KL reference of a LoRA agent. At the start of training the adapters add exactly zero (lora_B is
    zero), so the base IS the initial policy that a full agent's reference copy holds, without a second copy of
    the weights. The peft model is not registered as a submodule (its parameters are not this module's).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self._peft = (model,)  # a tuple: nn.Module would register a module attribute as a submodule

    def get_base_model(self) -> torch.nn.Module:
        """The underlying transformers model (its forward's signature tells callers which arguments it takes)."""
        return self._peft[0].get_base_model()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        model = self._peft[0]
        with model.disable_adapter():
            return model(*args, **kwargs)
