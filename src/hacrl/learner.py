"""The learner half of a training step: one agent's rows -> batch -> mini-batches -> loss -> optimiser.

Read `Learner.learn` top to bottom: it is the whole update of one agent for one step. The pieces it calls are
named and tested on their own:

* `minibatch_order` / `split_minibatches`: fixed-size mini-batches in responses, self rows first (the
  reference implementation's order; docs/method.md §2) or a seeded shuffle;
* `live_rows`: the zero-advantage skip. Every objective multiplies a row's term by its advantage, so a row with
  A = 0 adds exactly zero gradient; skipping its forward and backward pass changes only the cost. The loss over
  the live rows is rescaled to the mini-batch's normaliser (its rows, or its completion tokens);
* `zero_gradient_step`: a mini-batch with no live row still takes an AdamW step on an all-zero gradient
  (momentum and weight decay move the weights), exactly as the full computation would.

Only the `Objective` (hacrl.algorithms.objective) knows what is optimised; nothing here looks at a preset name.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hacrl.algorithms import kl_penalty
from hacrl.algorithms.objective import LossInputs, Normaliser, Objective
from hacrl.algorithms.stats import UpdateStats
from hacrl.pool import LearnerBatch, RetokenizeStats, Trajectory, build_learner_batch
from hacrl.rollout.logprobs import completion_logps

logger = logging.getLogger(__name__)

__all__ = ["LearnRequest", "LearnResult", "Learner", "MiniBatch", "NonFiniteUpdateError", "live_rows",
           "minibatch_order", "split_minibatches", "zero_gradient_step"]


class NonFiniteUpdateError(RuntimeError):
    """Too many consecutive updates with NaN/inf loss or gradient: the run is diverging."""


@dataclass(frozen=True)
class LearnRequest:
    """What the coordinator sends one learner for one step (built by `Objective.plan_rows`)."""

    step: int
    rows: list[Trajectory]
    advantages: list[float]
    weights: list[float]


@dataclass
class LearnResult:
    """What a learner reports back: its update statistics, the re-tokenisation counts and timings."""

    stats: UpdateStats
    retokenize: RetokenizeStats
    advantages: dict[str, float]
    train_seconds: float

    def metrics(self) -> dict[str, float]:
        return {**self.stats.metrics(), "train_seconds": self.train_seconds, **self.advantages,
                **{f"retokenize/{k}": v for k, v in self.retokenize.as_dict().items()}}


@dataclass(frozen=True)
class MiniBatch:
    """Rows of one optimizer update (indices into the learner batch), the live ones, and the loss factor."""

    rows: list[int]
    live: list[int] = field(default_factory=list)
    scale: float = 1.0


def minibatch_order(is_self: list[bool], *, shuffle: bool, seed: int) -> list[int]:
    """Row order of the step: self rows first, then cross rows, each in batch order; or a seeded shuffle."""
    if shuffle:
        return torch.randperm(len(is_self), generator=torch.Generator().manual_seed(seed)).tolist()
    return [i for i, s in enumerate(is_self) if s] + [i for i, s in enumerate(is_self) if not s]


def split_minibatches(order: list[int], size: int) -> list[list[int]]:
    """Consecutive chunks of `size` rows (the last may be smaller)."""
    return [order[i:i + size] for i in range(0, len(order), size)]


def live_rows(rows: list[int], advantages: Tensor, lengths: Tensor, normaliser: Normaliser) -> MiniBatch:
    """The rows of a mini-batch whose advantage is non-zero, and the factor that keeps the loss's normaliser.

    The loss over the live rows is a mean over THEIR rows (or tokens); multiplying it by live/all rows (or
    live/all completion tokens) gives the mean over the whole mini-batch, as if the zero rows had been computed.
    """
    live = [i for i in rows if float(advantages[i]) != 0.0]
    if not live or len(live) == len(rows):
        return MiniBatch(rows, live, 1.0)
    if normaliser == "tokens":
        return MiniBatch(rows, live, float(lengths[live].sum()) / float(lengths[rows].sum()))
    return MiniBatch(rows, live, len(live) / len(rows))


def zero_gradient_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """An optimizer step on an all-zero gradient (what a mini-batch of zero-advantage rows amounts to)."""
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()


def _masked_mean(values: Tensor, mask: Tensor) -> float:
    return float(values[mask].mean()) if bool(mask.any()) else 0.0


@dataclass
class Learner:
    """One agent's optimisation state and the loop that updates it.

    `on_update` is called after every optimizer step (the rollout backend marks its weights stale there).
    """

    name: str
    index: int
    seed: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    objective: Objective
    minibatch_size: int
    max_grad_norm: float
    max_completion_tokens: int
    max_nonfinite_updates: int
    temperature: float
    gradient_checkpointing: bool = False
    on_update: Callable[[], None] = lambda: None
    reference: torch.nn.Module | None = None
    nonfinite_in_a_row: int = 0
    nonfinite_total: int = 0

    def learn(self, request: LearnRequest, tokenizer: Any, encode_prompt: Callable[[str], list[int]]) -> LearnResult:
        """One epoch over this learner's rows of the pool (docs/method.md §2, step 5)."""
        start = time.perf_counter()
        batch, retokenize = build_learner_batch(request.rows, self.index, tokenizer, encode_prompt,
                                                max_completion_tokens=self.max_completion_tokens)
        device = next(self.model.parameters()).device
        batch = batch.to(device)
        rows = torch.tensor(batch.rows, dtype=torch.long)
        advantages = torch.tensor(request.advantages, dtype=torch.float32)[rows].to(device)
        weights = torch.tensor(request.weights, dtype=torch.float32)[rows].to(device)
        minibatches = self._plan_minibatches(batch, advantages, request.step)
        old = self._old_token_logps(batch, minibatches)
        if self.gradient_checkpointing:
            # transformers only checkpoints activations in train mode; hacrl's models run without dropout
            # (set it to 0 in the model config), so train mode changes nothing else.
            self.model.train()
        stats = UpdateStats()
        try:
            for m, minibatch in enumerate(minibatches):
                self._update(m, minibatch, batch, advantages, weights, old[m], stats, request.step)
        finally:
            self.model.eval()
        live = sum(len(mb.live) for mb in minibatches)
        summary = {
            "adv/self_mean": _masked_mean(advantages, batch.is_self),
            "adv/cross_mean": _masked_mean(advantages, ~batch.is_self),
            "adv/abs_mean": float(advantages.abs().mean()) if len(advantages) else 0.0,
            "zero_advantage_frac": 1.0 - live / max(len(batch), 1),
        }
        return LearnResult(stats, retokenize, summary, time.perf_counter() - start)

    # ---------------------------------------------------------------- the pieces of `learn`

    def _plan_minibatches(self, batch: LearnerBatch, advantages: Tensor, step: int) -> list[MiniBatch]:
        order = minibatch_order(batch.is_self.tolist(), shuffle=self.objective.minibatch_order == "shuffle",
                                seed=self.seed * 7919 + step * 31 + self.index)
        chunks = split_minibatches(order, self.minibatch_size)
        if self.reference is not None:  # with a KL penalty every row has a gradient: nothing is skipped
            return [MiniBatch(rows, rows, 1.0) for rows in chunks]
        lengths = batch.completion_lengths
        return [live_rows(rows, advantages, lengths, self.objective.loss.normaliser) for rows in chunks]

    def _old_token_logps(self, batch: LearnerBatch, minibatches: list[MiniBatch]) -> list[Tensor | None]:
        """The learner's own per-token log-probs of each mini-batch's live rows before any update of the step
        (no grad), for losses whose ratio is against the learner's old policy (GRPO)."""
        if not self.objective.loss.needs_old_token_logps:
            return [None] * len(minibatches)
        with torch.no_grad():
            return [self._logps(batch.select(mb.live)) if mb.live else None for mb in minibatches]

    def _logps(self, mb: LearnerBatch) -> Tensor:
        return completion_logps(self.model, mb.input_ids, mb.attention_mask, mb.completion_mask,
                                temperature=self.temperature)

    def _update(self, m: int, minibatch: MiniBatch, batch: LearnerBatch, advantages: Tensor, weights: Tensor,
                old: Tensor | None, stats: UpdateStats, step: int) -> None:
        """The `m`-th optimizer update of the step."""
        if not minibatch.live:
            zero_gradient_step(self.model, self.optimizer)
            self.on_update()
            stats.updates += 1
            return
        mb = batch.select(minibatch.live)
        index = torch.as_tensor(minibatch.live, device=advantages.device)
        logps = self._logps(mb)
        if not bool(torch.isfinite(logps.detach()[mb.completion_mask]).all()):
            stats.skipped += self._skip(step, m, "NaN/inf log-probs")
            return
        inputs = LossInputs(logps=logps, mask=mb.completion_mask, source_logps=mb.source_logps,
                            advantages=advantages[index], is_self=mb.is_self, weights=weights[index],
                            old_token_logps=old)
        loss, loss_stats = self.objective.loss(inputs, m)
        if minibatch.scale != 1.0:
            loss = loss * minibatch.scale
            loss_stats.loss = float(loss.detach())
        kl = None
        if self.reference is not None:
            with torch.no_grad():
                ref = completion_logps(self.reference, mb.input_ids, mb.attention_mask, mb.completion_mask,
                                       temperature=self.temperature)
            kl_term = kl_penalty(logps=logps, ref_logps=ref, mask=mb.completion_mask).mean()
            loss = loss + self.objective.kl_beta * kl_term
            kl = float(kl_term.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm))
        if not (math.isfinite(float(loss.detach())) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            stats.skipped += self._skip(step, m, f"loss {float(loss.detach())}, grad norm {grad_norm}")
            return
        self.optimizer.step()
        self.on_update()
        self.nonfinite_in_a_row = 0
        stats.updates += 1
        stats.add(loss_stats, grad_norm=grad_norm, kl=kl)

    def _skip(self, step: int, m: int, why: str) -> int:
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        logger.warning("agent %s step %d update %d skipped: %s (%d in a row)", self.name, step, m, why,
                       self.nonfinite_in_a_row)
        if self.nonfinite_in_a_row >= self.max_nonfinite_updates:
            raise NonFiniteUpdateError(
                f"agent {self.name!r}: {self.nonfinite_in_a_row} consecutive updates had NaN/inf loss or "
                f"gradients (last: {why}); lower the learning rate or check the rewards. Stopping."
            )
        return 1
