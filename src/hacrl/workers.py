"""One agent's worker: its model, tokenizer, optimizer, rollout backend and RNG, and nothing of any other agent.

A worker samples (`generate`), decodes for evaluation (`complete`) and learns from its share of the shared pool
(`learn`, delegated to `hacrl.learner.Learner`). Only small, picklable things cross its boundary: prompt strings
in, `Sample`s out; a `LearnRequest` (rows with one advantage and one weight each) in, a `LearnResult` out. That is
what lets the same class run in-process (`SequentialExecutor`) or as a remote actor (`RayExecutor`): the
coordinator calls worker methods by reference (`executor.call(AgentWorker.learn, ...)`), never by name.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hacrl.algorithms.objective import Objective
from hacrl.checkpoint import OPTIMIZER_FILE, WORKER_STATE_FILE, CheckpointError, load_tensors
from hacrl.config import AgentConfig
from hacrl.learner import Learner, LearnRequest, LearnResult, NonFiniteUpdateError
from hacrl.models.loading import LoadedAgent, load_agent, stop_token_ids
from hacrl.models.lora import BaseModel, apply_lora, is_lora, load_adapter, save_adapter, trainable_parameters
from hacrl.rollout.backend import RolloutBackend, make_backend
from hacrl.rollout.sampler import Sample, SamplingParams

logger = logging.getLogger(__name__)

__all__ = ["AgentWorker", "NonFiniteUpdateError", "WorkerSettings"]


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker needs besides its AgentConfig (picklable, so remote workers get the same)."""

    index: int
    seed: int
    sampling: SamplingParams
    objective: Objective
    minibatch_size: int
    max_grad_norm: float
    max_completion_tokens: int
    max_nonfinite_updates: int
    max_tokens_per_microbatch: int | None = None
    eval_batch_size: int = 128
    threads: int | None = None
    progress: bool = True


class AgentWorker:
    """Owns one agent. Construct it where it will run (in-process or inside a remote actor)."""

    def __init__(self, agent: AgentConfig, settings: WorkerSettings) -> None:
        quiet_transformers()
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        self.config = agent
        self.settings = settings
        self.index = settings.index
        self.agent: LoadedAgent = load_agent(
            agent.name, agent.model, device=agent.device, dtype=agent.dtype,
            prompt_template=agent.prompt_template, use_chat_template=agent.use_chat_template,
            system_prompt=agent.system_prompt, trust_remote_code=agent.trust_remote_code,
            gradient_checkpointing=agent.gradient_checkpointing, progress=settings.progress,
        )
        if agent.lora is not None:
            self.agent.model = apply_lora(self.agent.model, agent.lora, seed=settings.seed * 1000 + settings.index,
                                          where=f"agents[{settings.index}].lora", agent_name=agent.name)
        self.model = self.agent.model
        self.backend: RolloutBackend = make_backend(
            agent, self.model, self.agent.tokenizer, self.agent.path, stop_token_ids(self.agent.tokenizer, self.model),
            settings.sampling, index=settings.index, context_limit=self.context_limit())
        self.device = torch.device(agent.device)
        self.optimizer = torch.optim.AdamW(trainable_parameters(self.model), lr=agent.lr,
                                           weight_decay=agent.weight_decay)
        self.generator = torch.Generator(device=self.device).manual_seed(settings.seed * 1000 + settings.index)
        objective = settings.objective
        reference = self._kl_reference() if objective.kl_beta > 0 else None
        self.learner = Learner(
            name=agent.name, index=settings.index, seed=settings.seed, model=self.model, optimizer=self.optimizer,
            objective=objective, minibatch_size=settings.minibatch_size, max_grad_norm=settings.max_grad_norm,
            max_completion_tokens=settings.max_completion_tokens,
            max_nonfinite_updates=settings.max_nonfinite_updates, temperature=settings.sampling.temperature,
            max_tokens_per_microbatch=settings.max_tokens_per_microbatch,
            old_logprobs=agent.rollout.old_logprobs or ("recompute" if agent.rollout.backend == "vllm" else "engine"),
            importance_sampling_cap=agent.rollout.importance_sampling_cap,
            compare_rollout=agent.rollout.backend != "inprocess" or agent.rollout.old_logprobs == "recompute",
            gradient_checkpointing=agent.gradient_checkpointing, on_update=self.backend.sync_weights,
            reference=reference)
        self._prompt_cache: dict[str, list[int]] = {}

    def _kl_reference(self) -> torch.nn.Module:
        """The frozen initial policy: a copy of a full agent; a LoRA agent's own base (adapters off), no copy."""
        if is_lora(self.model):
            return BaseModel(self.model)
        return copy.deepcopy(self.model).eval().requires_grad_(False)

    def rollout_info(self) -> dict[str, Any]:
        """Which backend samples for this agent, and (engine backends) how often and how long weights were pushed."""
        return {"backend": self.config.rollout.backend, "pushes": getattr(self.backend, "pushes", 0),
                "push_seconds": getattr(self.backend, "push_seconds", 0.0)}

    def encode_prompt(self, prompt: str) -> list[int]:
        ids = self._prompt_cache.get(prompt)
        if ids is None:
            ids = self._prompt_cache[prompt] = self.agent.encode_prompt(prompt)
        return ids

    # ---------------------------------------------------------------- sampling

    def generate(self, prompts: list[str], n: int) -> tuple[list[Sample], float]:
        """`n` samples per prompt, prompt-major; returns them with the seconds spent."""
        start = time.perf_counter()
        ids = [self.encode_prompt(p) for p in prompts for _ in range(n)]
        samples = self.backend.generate(ids, self.settings.sampling, generator=self.generator)
        return samples, time.perf_counter() - start

    def complete(self, prompts: list[str], params: SamplingParams, seed: int) -> list[Sample]:
        """One completion per prompt for evaluation (greedy, or sampled from a generator seeded with `seed`);
        leaves the training RNG untouched. See `hacrl.evaluator`."""
        from hacrl.evaluator import decode

        ids = [self.encode_prompt(p) for p in prompts]
        return decode(self.backend, ids, params, seed=seed, batch_size=self.settings.eval_batch_size,
                      device=self.device)

    def context_limit(self) -> int | None:
        """The model's position limit (None when the config has none, e.g. rotary models without a cap)."""
        from hacrl.evaluator import context_limit

        return context_limit(self.model.config)

    def prompts_that_fit(self, prompts: list[str], max_new_tokens: int) -> list[bool]:
        """Whether each rendered prompt plus `max_new_tokens` fits in this model's context."""
        limit = self.context_limit()
        fits = [True] * len(prompts) if limit is None else [
            len(self.encode_prompt(p)) + max_new_tokens <= limit for p in prompts]
        check = getattr(self.backend, "check_prompt_lengths", None)  # an engine's own limit is a config error
        if check is not None:
            check([len(self.encode_prompt(p)) for p, ok in zip(prompts, fits, strict=True) if ok], max_new_tokens)
        return fits

    def longest_prompt(self, prompts: list[str]) -> int:
        """Tokens of the longest rendered prompt (for the micro-batch budget check before training)."""
        return max(len(self.encode_prompt(p)) for p in prompts)

    # ---------------------------------------------------------------- learning

    def learn(self, request: LearnRequest) -> LearnResult:
        """One epoch over this learner's rows of the pool (see `hacrl.learner`)."""
        return self.learner.learn(request, self.agent.tokenizer, self.encode_prompt)

    # ---------------------------------------------------------------- state

    def save(self, directory: str) -> None:
        """Weights in HF format (safetensors; a LoRA agent: its adapters only, as a peft adapter directory) +
        tokenizer + optimizer + sampling RNG, into `directory`."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        if is_lora(self.model):
            save_adapter(self.model, out)
        else:
            self.model.save_pretrained(out, safe_serialization=True)
        self.agent.tokenizer.save_pretrained(out)
        if self.agent.meta:
            import json

            (out / "hacrl_agent.json").write_text(json.dumps(self.agent.meta, indent=2))
        torch.save(self.optimizer.state_dict(), out / OPTIMIZER_FILE)
        torch.save({"generator": self.generator.get_state(), "nonfinite_total": self.learner.nonfinite_total},
                   out / WORKER_STATE_FILE)

    def load(self, directory: str) -> None:
        """Restore weights, optimizer and RNG written by `save` (safetensors + weights_only loads only)."""
        from safetensors.torch import load_file

        src = Path(directory)
        shards = sorted(src.glob("*.safetensors"))
        state: dict[str, Tensor] = {}
        for shard in shards:
            try:
                state.update(load_file(str(shard), device=str(self.device)))
            except Exception as exc:  # SafetensorError and friends: a damaged file, named with what to do
                raise CheckpointError(f"cannot read weights {str(shard)!r}: {exc}; resume from another "
                                      "checkpoint") from exc
        if is_lora(self.model):
            missing, unexpected = load_adapter(self.model, state)
        else:
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            tied = set(getattr(self.model, "_tied_weights_keys", None) or [])
            missing = [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]
        if missing or unexpected:
            raise ValueError(f"checkpoint {str(src)!r} does not match agent {self.config.name!r}: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}")
        try:
            self.optimizer.load_state_dict(load_tensors(src / OPTIMIZER_FILE, map_location=self.device))
            worker_state = load_tensors(src / WORKER_STATE_FILE)
            self.generator.set_state(worker_state["generator"])
            self.learner.nonfinite_total = int(worker_state["nonfinite_total"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"checkpoint {str(src)!r} has optimizer/RNG state that does not fit agent "
                                  f"{self.config.name!r} ({type(exc).__name__}: {exc}); resume from another "
                                  "checkpoint") from exc
        self.backend.sync_weights()  # an engine backend samples from the restored weights from now on

    def close(self) -> None:
        """Release what the worker holds outside Python's reach (an engine backend's engine)."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    def state_tensors(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}


def quiet_transformers() -> None:
    """transformers prints a progress bar per save/load; a training loop does many, so silence them."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
