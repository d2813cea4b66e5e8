"""Per-token log-probabilities of given token sequences under a causal LM — the trainer's forward pass.

This is the single source of truth for "log pi(y_t | prefix)": the trainer calls it (with grad) to get
`logp_k(theta)`, and the sampler's tests compare the sampler's rollout-time log-probs against it. If the two
disagreed, every importance ratio `exp(logp_k - logp_src)` of a self response would start away from 1 and
GSPO's tight clip (3e-4 / 4e-4, docs/method.md §3.6) would discard it.

Conventions (shared with `hacrl.rollout.sampler` and `hacrl.pool`):

* Batches are LEFT padded: every row's last real token sits in the last column. The attention mask is 1 on
  real tokens and 0 on padding.
* Position ids are explicit: `cumsum(attention_mask) - 1`, so a row's first real token has position 0 however
  much padding precedes it. Without them, HF models count positions from the first column and a padded row
  would see different positional encodings (and different log-probs) than the same row unpadded.
* Log-probs are `log_softmax(logits / temperature)` of the full (untruncated) distribution, computed in
  float32 whatever the model's dtype.
"""

from __future__ import annotations

import inspect
from functools import lru_cache

import torch
from torch import Tensor

__all__ = [
    "completion_logps",
    "masked_mean",
    "position_ids_from_mask",
    "selective_log_softmax",
    "token_logps",
]


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions that count only real tokens: 0 for each row's first real token.

    Padding columns get position 0 (any valid index works: they are masked out), which keeps absolute
    position embeddings (GPT-2's `wpe`) in range.
    """
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).clamp(min=0)


def selective_log_softmax(logits: Tensor, index: Tensor, temperature: float = 1.0) -> Tensor:
    """`log_softmax(logits / temperature).gather(-1, index)` without materialising the log-softmax.

    Computed in float32 (bf16 log-probs are too coarse for ratios near 1) as `logit - logsumexp(logits)`,
    which needs one [.., V] float32 copy instead of two.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


@lru_cache(maxsize=64)
def accepts_logits_to_keep(forward_cls: type) -> bool:
    """Whether a model class's forward takes `logits_to_keep` (HF causal LMs since 4.45 do; wrappers with
    only `**kwargs` are treated as not taking it, which costs speed, never correctness)."""
    try:
        return "logits_to_keep" in inspect.signature(forward_cls.forward).parameters
    except (TypeError, ValueError):
        return False


def forward_class(model: torch.nn.Module) -> type:
    """The class whose `forward` a call on `model` ends in. A wrapper that hands every argument on to an inner
    model (peft's PeftModel of a LoRA agent, its adapters-off view `hacrl.models.lora.BaseModel`) says so with
    `get_base_model`; the inner class decides which arguments (`logits_to_keep`, the cache's name) are taken."""
    inner = getattr(model, "get_base_model", None)
    return type(inner()) if callable(inner) else type(model)


@lru_cache(maxsize=64)
def cache_keyword(forward_cls: type) -> str:
    """The forward argument that takes a KV cache, as the model's forward declares it: `cache` in transformers
    5.24 (where `past_key_values` is a deprecated alias that warns, to be removed in 5.40), `past_key_values` in
    versions that predate the rename. The model output carries the cache under the same name."""
    try:
        params = inspect.signature(forward_cls.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def returned_cache(output: object, keyword: str) -> object:
    """The KV cache a forward pass returned, read under the name that does not warn."""
    return getattr(output, keyword)


def _forward_logits(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, keep: int) -> Tensor:
    """Logits of the last `keep` columns; asks the model to skip the LM head elsewhere when it can."""
    kwargs = {}
    if keep < input_ids.shape[1] and accepts_logits_to_keep(forward_class(model)):
        kwargs["logits_to_keep"] = keep
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
        **kwargs,
    )
    return out.logits[:, -keep:, :]


def _check_inputs(input_ids: Tensor, attention_mask: Tensor, temperature: float) -> None:
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids and attention_mask must both be [B, L]; got {tuple(input_ids.shape)} and "
            f"{tuple(attention_mask.shape)}"
        )
    if input_ids.shape[1] < 2:
        raise ValueError("input_ids needs at least 2 columns: a prefix and one target token")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def token_logps(
    model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, *, temperature: float = 1.0
) -> Tensor:
    """Log-prob of every `input_ids[:, 1:]` token given its prefix: float32 `[B, L-1]`.

    Column `t` scores the token at column `t + 1`. Values at padding targets are meaningless (finite, but
    mask them). Runs with whatever grad mode and train/eval mode the caller set: the trainer wants grad;
    wrap in `torch.no_grad()` for reference values.
    """
    _check_inputs(input_ids, attention_mask, temperature)
    logits = _forward_logits(model, input_ids, attention_mask, keep=input_ids.shape[1])[:, :-1, :]
    return selective_log_softmax(logits, input_ids[:, 1:], temperature)


def completion_logps(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    *,
    temperature: float = 1.0,
) -> Tensor:
    """Like `token_logps`, but only where `completion_mask` (`[B, L-1]`, aligned with the targets) is True.

    Returns float32 `[B, L-1]` with exact zeros outside the mask. Because batches are left padded and
    completions end every row, the LM head (the costly part for large vocabularies) runs only over the
    trailing columns that hold some completion target, not over the prompts.
    """
    _check_inputs(input_ids, attention_mask, temperature)
    width = input_ids.shape[1] - 1
    if completion_mask.shape != (input_ids.shape[0], width):
        raise ValueError(
            f"completion_mask must be [B, L-1] = {(input_ids.shape[0], width)}, got {tuple(completion_mask.shape)}"
        )
    completion_mask = completion_mask.bool()
    used = completion_mask.any(dim=0).nonzero()
    out = torch.zeros(completion_mask.shape, dtype=torch.float32, device=input_ids.device)
    if used.numel() == 0:
        return out
    first = int(used[0])
    keep = width - first  # target columns first .. width-1, predicted by input columns first .. width-1
    logits = _forward_logits(model, input_ids, attention_mask, keep=keep + 1)[:, :-1, :]
    logps = selective_log_softmax(logits, input_ids[:, first + 1 :], temperature)
    out = torch.cat([out[:, :first], logps], dim=1) if first else logps
    return out.masked_fill(~completion_mask, 0.0)


def masked_mean(values: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Mean of `values` over `mask` along `dim` (the length-normalised log-prob of docs/method.md §1).

    A row with an empty mask gives 0 rather than NaN, so one degenerate row cannot poison a batch.
    """
    mask = mask.to(values.dtype)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)
