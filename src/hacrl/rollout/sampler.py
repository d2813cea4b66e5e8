"""Batched sampling with a KV cache for any Hugging Face causal LM, recording rollout-time log-probs.

Why not `model.generate`: HACPO needs, for every sampled token, `log pi_old(y_t | prefix)` of the FULL
(untruncated, temperature-scaled) distribution — the quantity the trainer recomputes with
`hacrl.rollout.logprobs.token_logps` — and `generate`'s `output_scores` returns processed (top-p-filtered)
scores. A hand-written loop also pins the padding conventions the trainer relies on (left padding, explicit
position ids; see `hacrl.rollout.logprobs`) and costs about the same on small models (docs/results/performance.md,
the sampler section).

Cache handling works with transformers 4.46+ and 5.x: the prefill call is made with `use_cache=True` and no
cache, and the cache object the model returns is passed back on every later call together with the full 2-D
attention mask and the new tokens' explicit `position_ids`. The cache goes in and out under the name the
model's forward declares (`cache` in transformers 5.24, `past_key_values` before the rename; `cache_keyword`), so
no deprecation warning is triggered and the numbers are the same under either name. No `cache_position` is
passed (5.x removed it from the model forwards; 4.x derives it from the cache length, which is what we want).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from hacrl.rollout.logprobs import (
    accepts_logits_to_keep,
    cache_keyword,
    forward_class,
    position_ids_from_mask,
    returned_cache,
)

__all__ = ["Sample", "SamplingParams", "sample"]

FinishReason = Literal["stop", "length"]


class NonFiniteLogitsError(RuntimeError):
    """Sampling met NaN/inf logits: the model is broken, and no token choice would mean anything."""


@dataclass(frozen=True)
class SamplingParams:
    """How to draw completions.

    `temperature` scales logits before sampling (and the recorded log-probs use the same temperature, so they
    equal what the trainer recomputes at that temperature). `top_k` > 0 keeps the k most likely tokens (ties at
    the k-th value stay), then `top_p` < 1 keeps the nucleus of what is left (vLLM's order); neither changes the
    recorded log-probs. `top_k` 0 or None is off. `greedy` takes the argmax and records temperature-1 log-probs.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    greedy: bool = False
    top_k: int | None = 0

    def __post_init__(self) -> None:
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, int | float):
            raise ValueError(f"SamplingParams.temperature must be a number, got {self.temperature!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(
                f"SamplingParams.temperature must be a finite number > 0, got {self.temperature!r} "
                "(use greedy=True for argmax decoding)"
            )
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, int | float):
            raise ValueError(f"SamplingParams.top_p must be a number, got {self.top_p!r}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise ValueError(f"SamplingParams.max_new_tokens must be an int, got {self.max_new_tokens!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not isinstance(self.greedy, bool):
            raise ValueError(f"SamplingParams.greedy must be a bool, got {self.greedy!r}")
        if self.top_k is None:
            object.__setattr__(self, "top_k", 0)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be an int >= 0 (0 or None: off), got {self.top_k!r}")

    @property
    def truncates(self) -> bool:
        """Whether sampling draws from a truncated distribution (top-k or top-p); recorded log-probs never are."""
        return not self.greedy and (bool(self.top_k) or self.top_p < 1.0)


@dataclass
class Sample:
    """One completion, in the sampling model's own tokenisation.

    `completion_ids` includes the EOS token when `finish_reason == "stop"`, and `token_logps[i]` is the
    log-prob of `completion_ids[i]` (so EOS's log-prob is included: "stopping here" is part of the response
    the trainer scores). `text` is the decoded completion without special tokens — what the verifier reads
    and what other agents re-tokenise.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    token_logps: list[float]
    text: str
    finish_reason: FinishReason

    @property
    def mean_logp(self) -> float:
        """Length-normalised log-prob (docs/method.md §1, the rollout log-prob); 0.0 for an empty completion."""
        if not self.token_logps:
            return 0.0
        return math.fsum(self.token_logps) / len(self.token_logps)

    @property
    def truncated(self) -> bool:
        """True when the completion hit `max_new_tokens` without producing EOS."""
        return self.finish_reason == "length"


def _eos_ids(tokenizer: Any, eos_token_ids: Sequence[int] | None) -> list[int]:
    if eos_token_ids is not None:
        ids = [int(i) for i in eos_token_ids]
    else:
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            ids = []
        elif isinstance(eos, int):
            ids = [eos]
        else:
            ids = [int(i) for i in eos]
    return ids


def _pad_id(tokenizer: Any, eos_ids: Sequence[int]) -> int:
    """Any valid id works for padding (it is masked out); prefer the tokenizer's own pad token."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None:
        return int(pad)
    return int(eos_ids[0]) if eos_ids else 0


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt) :] = torch.as_tensor(list(prompt), dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def _nucleus_filter(logits: Tensor, top_p: float) -> Tensor:
    """Set logits outside the top-p nucleus to -inf (the most likely token always stays).

    A token stays if the probability mass of the tokens strictly more likely than it is < top_p, so the kept
    set is the smallest prefix of the sorted distribution whose mass reaches top_p.
    """
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = mass_before >= top_p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def _top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Set logits below the k-th largest of their row to -inf (a tie with the k-th value stays)."""
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def _choose(logits: Tensor, params: SamplingParams, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Pick one token per row and return (tokens, log-prob of each under the untruncated distribution)."""
    logits = logits.float()
    if not bool(torch.isfinite(logits).any(dim=-1).all()) or bool(torch.isnan(logits).any()):
        raise NonFiniteLogitsError("the model produced NaN/inf logits while sampling: its weights have diverged "
                                   "(lower the learning rate, or resume from an earlier checkpoint)")
    if params.greedy:
        tokens = logits.argmax(dim=-1)
        logps = torch.log_softmax(logits, dim=-1)
    else:
        scaled = logits / params.temperature if params.temperature != 1.0 else logits
        logps = torch.log_softmax(scaled, dim=-1)
        pick_from = _top_k_filter(scaled, params.top_k) if params.top_k else scaled
        pick_from = _nucleus_filter(pick_from, params.top_p) if params.top_p < 1.0 else pick_from
        probs = torch.softmax(pick_from, dim=-1)
        tokens = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
    return tokens, logps.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def _sample_batch(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    generator: torch.Generator | None,
    eos_ids: Sequence[int],
    pad_id: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Decode one left-padded batch. Returns (tokens [B, T], logps [B, T], lengths [B], stopped [B])."""
    device = next(model.parameters()).device
    input_ids, prompt_mask = _left_pad(prompts, pad_id, device)
    batch, width = input_ids.shape
    steps = params.max_new_tokens

    # One preallocated mask for prompt + every possible new token; slicing it avoids a cat per step.
    attention_mask = torch.ones((batch, width + steps), dtype=torch.long, device=device)
    attention_mask[:, :width] = prompt_mask
    positions = position_ids_from_mask(prompt_mask)
    next_position = positions[:, -1] + 1

    extra = {"logits_to_keep": 1} if accepts_logits_to_keep(forward_class(model)) else {}
    cache_kw = cache_keyword(forward_class(model))
    out = model(
        input_ids=input_ids,
        attention_mask=prompt_mask,
        position_ids=positions,
        use_cache=True,
        **extra,
    )
    cache = returned_cache(out, cache_kw)
    logits = out.logits[:, -1, :]

    tokens = torch.full((batch, steps), pad_id, dtype=torch.long, device=device)
    logps = torch.zeros((batch, steps), dtype=torch.float32, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    stopped = torch.zeros(batch, dtype=torch.bool, device=device)
    eos = torch.as_tensor(list(eos_ids), dtype=torch.long, device=device)

    for step in range(steps):
        chosen, chosen_logps = _choose(logits, params, generator)
        alive = ~finished
        chosen = torch.where(alive, chosen, torch.full_like(chosen, pad_id))
        tokens[:, step] = chosen
        logps[:, step] = torch.where(alive, chosen_logps, torch.zeros_like(chosen_logps))
        lengths += alive.long()
        if eos.numel():
            hit = alive & torch.isin(chosen, eos)
            stopped |= hit
            finished |= hit
        if step == steps - 1 or bool(finished.all()):
            break
        # Finished rows keep feeding padding; their outputs are ignored, so their mask value is irrelevant.
        out = model(
            input_ids=chosen.unsqueeze(-1),
            attention_mask=attention_mask[:, : width + step + 1],
            position_ids=next_position.unsqueeze(-1),
            use_cache=True,
            **{cache_kw: cache},
        )
        cache = returned_cache(out, cache_kw)
        logits = out.logits[:, -1, :]
        next_position = next_position + 1
    return tokens, logps, lengths, stopped


def sample(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    params: SamplingParams,
    *,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    eos_token_ids: Sequence[int] | None = None,
) -> list[Sample]:
    """Sample one completion per prompt (repeat a prompt G times for a group), in input order.

    * Prompts are token ids already rendered with the agent's template; each must be non-empty.
    * Decoding stops per row at an EOS token (`eos_token_ids`, default the tokenizer's `eos_token_id`; pass
      e.g. a chat model's end-of-turn ids too), which is kept in `completion_ids`; a batch stops as soon as
      every row has finished.
    * All randomness comes from `generator` (on the model's device); a seeded generator with the same
      inputs and `batch_size` reproduces the samples exactly. `None` uses torch's global RNG.
    * `batch_size` bounds memory: prompts are decoded in consecutive chunks of that many rows.
    * The model is put in eval mode for sampling (dropout would make the recorded log-probs differ from the
      distribution actually sampled) and its previous mode is restored afterwards.
    """
    if not isinstance(params, SamplingParams):
        raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
    prompts = [list(p) for p in prompt_ids]
    if not prompts:
        return []
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty: a prompt needs at least one token to condition on")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    eos_ids = _eos_ids(tokenizer, eos_token_ids)
    pad_id = _pad_id(tokenizer, eos_ids)
    chunk = batch_size or len(prompts)

    was_training = model.training
    model.eval()
    try:
        results: list[Sample] = []
        for start in range(0, len(prompts), chunk):
            part = prompts[start : start + chunk]
            tokens, logps, lengths, stopped = _sample_batch(model, part, params, generator, eos_ids, pad_id)
            tokens_l, logps_l = tokens.tolist(), logps.tolist()
            lengths_l, stopped_l = lengths.tolist(), stopped.tolist()
            completions = [tokens_l[r][: lengths_l[r]] for r in range(len(part))]
            texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
            for r, prompt in enumerate(part):
                results.append(
                    Sample(
                        prompt_ids=prompt,
                        completion_ids=completions[r],
                        token_logps=logps_l[r][: lengths_l[r]],
                        text=texts[r],
                        finish_reason="stop" if stopped_l[r] else "length",
                    )
                )
        return results
    finally:
        model.train(was_training)
