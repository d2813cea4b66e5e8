"""The interface between the trainer and whatever produces responses with their per-token log-probs.

A worker asks its backend for `Sample`s (token ids, per-token log-probs under the sampling policy, text,
finish reason) and tells it when the weights changed. The in-process backend runs `hacrl.rollout.sampler`
on the training model itself, so there is nothing to synchronise. A backend on a separate inference engine
(`hacrl.rollout.vllm_backend`) implements the same two methods: `generate` must return log-probs of the
untruncated, temperature-scaled distribution (what the trainer recomputes), and after `sync_weights` its next
`generate` must sample from the learner's current weights. `make_backend` picks one from the agent's
`rollout` config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from hacrl.config import AgentConfig
from hacrl.rollout.sampler import Sample, SamplingParams, sample


class RolloutBackend(Protocol):
    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                 generator: torch.Generator | None = None, batch_size: int | None = None) -> list[Sample]:
        """One `Sample` per prompt (repeat a prompt for several samples), in order."""
        ...

    def sync_weights(self) -> None:
        """Called after every optimizer update (and after weights are restored from a checkpoint): the next
        `generate` must use the learner's current weights. An engine backend may push them lazily, then."""
        ...


class InProcessBackend:
    """Samples with the training model itself (KV cache, batched); weights are always in sync."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, eos_token_ids: Sequence[int] | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = list(eos_token_ids) if eos_token_ids is not None else None  # []: never stop

    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                 generator: torch.Generator | None = None, batch_size: int | None = None) -> list[Sample]:
        return sample(self.model, self.tokenizer, prompt_ids, params, generator=generator, batch_size=batch_size,
                      eos_token_ids=self.eos_token_ids)

    def sync_weights(self) -> None:
        return None


def make_backend(agent: AgentConfig, model: torch.nn.Module, tokenizer: Any, model_dir: Any,
                 eos_token_ids: Sequence[int], sampling: SamplingParams, *, index: int,
                 context_limit: int | None) -> RolloutBackend:
    """The backend `agent.rollout.backend` names, for a worker that owns `model` (vLLM is imported only here)."""
    if agent.rollout.backend == "vllm":
        from hacrl.rollout.vllm_backend import VLLMBackend

        return VLLMBackend(model, tokenizer, model_dir, eos_token_ids, agent.rollout, sampling, device=agent.device,
                           trust_remote_code=agent.trust_remote_code, context_limit=context_limit,
                           where=f"agents[{index}].rollout", agent_name=agent.name)
    return InProcessBackend(model, tokenizer, eos_token_ids)
