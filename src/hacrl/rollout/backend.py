"""The interface between the trainer and whatever produces responses with their per-token log-probs.

A worker asks its backend for `Sample`s (token ids, per-token log-probs under the sampling policy, text,
finish reason) and tells it when the weights changed. The in-process backend runs `hacrl.rollout.sampler`
on the training model itself, so there is nothing to synchronise. A backend on a separate inference engine
(e.g. vLLM on a GPU) implements the same two methods: `generate` must return log-probs of the untruncated,
temperature-scaled distribution (what the trainer recomputes), and `sync_weights` must push the learner's
current weights before the next `generate`. Such a backend is not shipped because it cannot be tested on a
CPU-only machine; this protocol is the seam where it plugs in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from hacrl.rollout.sampler import Sample, SamplingParams, sample


class RolloutBackend(Protocol):
    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                 generator: torch.Generator | None = None, batch_size: int | None = None) -> list[Sample]:
        """One `Sample` per prompt (repeat a prompt for several samples), in order."""
        ...

    def sync_weights(self) -> None:
        """Called after every optimizer update of the step, before the next `generate`."""
        ...


class InProcessBackend:
    """Samples with the training model itself (KV cache, batched); weights are always in sync."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, eos_token_ids: Sequence[int] | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = list(eos_token_ids) if eos_token_ids else None

    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                 generator: torch.Generator | None = None, batch_size: int | None = None) -> list[Sample]:
        return sample(self.model, self.tokenizer, prompt_ids, params, generator=generator, batch_size=batch_size,
                      eos_token_ids=self.eos_token_ids)

    def sync_weights(self) -> None:
        return None
