"""The learner half of a training step: one agent's rows -> batch -> mini-batches -> loss -> optimiser.

Read `Learner.learn` top to bottom: it is the whole update of one agent for one step. The pieces it calls are
named and tested on their own:

* `layout_minibatches`: fixed-size mini-batches in responses; own rows first, then peer rows (HACPO's reference
  order and GRAFT's peer-last), peers first, or a seeded shuffle; SGT's supervised rows ride with their prompt's
  mini-batch (docs/method.md §2);
* `gate_rows`: GRAFT's compatibility gate, once at the start of the step, from the learner's own no-grad
  log-probs of the transferred responses (rows it drops never reach a mini-batch);
* `live_rows`: the zero-advantage skip. Every policy objective multiplies a row's term by its advantage, so a row
  with A = 0 adds exactly zero gradient; skipping its forward and backward pass changes only the cost. The loss
  over the live rows is rescaled to the mini-batch's normaliser (its rows, or its completion tokens). Supervised
  rows (SGT) always carry gradient and are never skipped;
* `zero_gradient_step`: a mini-batch with no live row still takes an AdamW step on an all-zero gradient
  (momentum and weight decay move the weights), exactly as the full computation would;
* `_rollout_logps`: where the learner's own responses were sampled by another engine (vLLM), their old-policy
  log-probs are either recomputed by the trainer (`recompute`: one no-grad forward; a fresh self ratio is exactly
  1) or kept from the engine with a truncated importance-sampling weight min(pi_trainer / pi_engine, cap) folded
  into each response's advantage (`engine`: every objective is positively homogeneous in the advantage, so this
  scales the response's term); the engine-trainer gap is logged either way;
* `split_by_tokens`: with `training.max_tokens_per_microbatch`, a mini-batch's live rows are cut into micro-batches
  of at most that many tokens (prompt + completion per row); their losses, each scaled by its share of the
  mini-batch's normaliser (rows or completion tokens), add up to the mini-batch's loss, and their gradients are
  accumulated into one optimizer step.

Only the `Objective` (hacrl.algorithms.objective) knows what is optimised; nothing here looks at a preset name.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hacrl.algorithms import kl_penalty, sequence_logps
from hacrl.algorithms.objective import CompatibilityGate, LossInputs, Normaliser, Objective
from hacrl.algorithms.sharing import compatibility_weights
from hacrl.algorithms.stats import LossStats, UpdateStats
from hacrl.pool import LearnerBatch, RetokenizeStats, Trajectory, build_learner_batch
from hacrl.rollout.logprobs import completion_logps

logger = logging.getLogger(__name__)

__all__ = ["LearnRequest", "LearnResult", "Learner", "MicrobatchBudgetError", "MiniBatch", "NonFiniteUpdateError",
           "gate_rows", "layout_minibatches", "live_rows", "split_by_tokens", "zero_gradient_step"]


class NonFiniteUpdateError(RuntimeError):
    """Too many consecutive updates with NaN/inf loss or gradient: the run is diverging."""


class MicrobatchBudgetError(ValueError):
    """A single response is longer than `training.max_tokens_per_microbatch`: it cannot be split further."""


@dataclass(frozen=True)
class LearnRequest:
    """What the coordinator sends one learner for one step (built by `Objective.plan_rows`)."""

    step: int
    rows: list[Trajectory]
    advantages: list[float]
    weights: list[float]
    supervised: list[bool] = field(default_factory=list)
    """Per row: a supervised (NLL) row rather than a policy-gradient one (SGT); empty means none."""


@dataclass
class LearnResult:
    """What a learner reports back: its update statistics, the re-tokenisation counts and timings."""

    stats: UpdateStats
    retokenize: RetokenizeStats
    advantages: dict[str, float]
    train_seconds: float
    trained_rows: int = 0
    gate: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        return {**self.stats.metrics(), "train_seconds": self.train_seconds, **self.advantages, **self.gate,
                "trained_rows": float(self.trained_rows),
                **{f"retokenize/{k}": v for k, v in self.retokenize.as_dict().items()}}


@dataclass(frozen=True)
class MiniBatch:
    """Rows of one optimizer update (indices into the learner batch), the live ones, and the loss factor.

    `pieces` are the micro-batches the live rows are computed in (one piece: all of them).
    """

    rows: list[int]
    live: list[int] = field(default_factory=list)
    scale: float = 1.0
    pieces: list[list[int]] = field(default_factory=list)


def split_by_tokens(rows: list[int], tokens: Tensor, budget: int) -> list[list[int]]:
    """Consecutive runs of `rows` whose `tokens` (per batch row) add up to at most `budget` each."""
    pieces: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in rows:
        n = int(tokens[i])
        if n > budget:
            raise MicrobatchBudgetError(f"training.max_tokens_per_microbatch: a response needs {n} tokens (prompt + "
                                        f"completion) but the budget is {budget}; raise it to at least {n}")
        if current and used + n > budget:
            pieces.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        pieces.append(current)
    return pieces


def layout_minibatches(is_self: list[bool], *, order: str, size: int, seed: int,
                       groups: list[int] | None = None, supervised: list[bool] | None = None) -> list[list[int]]:
    """Row indices of each mini-batch of the step, in update order.

    Policy rows fill fixed-size chunks of `size` rows: `self_first` and `peer_last` put own rows first, then peer
    rows, each in batch order, and cut consecutive chunks (a chunk may hold both: a transferred group takes the
    place of the group it replaced in a batch of fixed size, so it lands in the last mini-batch(es)); `peer_first`
    puts peer rows first; `shuffle` is a permutation seeded with `seed`. Supervised rows (SGT's NLL rows) take no
    slot: each joins the mini-batch holding the first policy row of its prompt (`groups`), else the last one, so
    the NLL term is added to the policy loss of the same update rather than taking an update of its own.
    """
    sup = supervised or [False] * len(is_self)
    own = [i for i, s in enumerate(is_self) if s and not sup[i]]
    peer = [i for i, s in enumerate(is_self) if not s and not sup[i]]

    def chunks(rows: list[int]) -> list[list[int]]:
        return [rows[i:i + size] for i in range(0, len(rows), size)]

    if order == "shuffle":
        policy = set(own + peer)
        perm = torch.randperm(len(is_self), generator=torch.Generator().manual_seed(seed)).tolist()
        out = chunks([i for i in perm if i in policy])
    elif order in ("self_first", "peer_last"):
        out = chunks(own + peer)
    elif order == "peer_first":
        out = chunks(peer + own)
    else:
        raise ValueError(f"unknown mini-batch order {order!r}")
    extra = [i for i, s in enumerate(sup) if s]
    if not extra:
        return out
    if not out:
        return [extra]
    home: dict[int, int] = {}
    if groups is not None:
        for m, rows in enumerate(out):
            for i in rows:
                home.setdefault(groups[i], m)
    for i in extra:
        out[home.get(groups[i], len(out) - 1) if groups is not None else len(out) - 1].append(i)
    return out


def live_rows(rows: list[int], advantages: Tensor, lengths: Tensor, normaliser: Normaliser,
              supervised: Tensor | None = None) -> MiniBatch:
    """The rows of a mini-batch that carry gradient, and the factor that keeps the policy loss's normaliser.

    A policy row is live when its advantage is non-zero; a supervised row always is. The policy loss over the live
    policy rows is a mean over THEIR rows (or tokens); multiplying it by live/all policy rows (or live/all policy
    completion tokens) gives the mean over the whole mini-batch's policy rows, as if the zero rows had been computed.
    """
    sup = set() if supervised is None else {i for i in rows if bool(supervised[i])}
    policy = [i for i in rows if i not in sup]
    live_policy = [i for i in policy if float(advantages[i]) != 0.0]
    live = [i for i in rows if i in sup or i in set(live_policy)]
    if not live_policy or len(live_policy) == len(policy):
        return MiniBatch(rows, live, 1.0)
    if normaliser == "tokens":
        return MiniBatch(rows, live, float(lengths[live_policy].sum()) / float(lengths[policy].sum()))
    return MiniBatch(rows, live, len(live_policy) / len(policy))


def gate_rows(old_seq_logps: Tensor, source_logps: Tensor, gate: CompatibilityGate) -> tuple[Tensor, Tensor]:
    """(keep, weight) of each transferred row from the learner's old length-normalised log-probs of it."""
    return compatibility_weights(old_seq_logps, source_logps, delta=gate.delta, weighting=gate.weighting)


def _transfer_metrics(peer: list[int], keep: Tensor, weights: Tensor, tokens: Tensor,
                      tag: str = "") -> dict[str, float]:
    """GRAFT's gate diagnostics over the transferred rows `peer`: candidates, pass fraction, mean weight of the kept
    rows, and the responses and tokens transferred. `tag` ("from{source}/") names one direction; the trainer
    replaces the source index by its name, as for the planning diagnostics."""
    kept = [i for i in peer if bool(keep[i])]
    return {f"gate/{tag}candidates": float(len(peer)), f"gate/{tag}pass_frac": len(kept) / len(peer) if peer else 0.0,
            f"gate/{tag}weight_mean": float(weights[kept].mean()) if kept else 0.0,
            f"transfer/{tag}responses": float(len(kept)),
            f"transfer/{tag}tokens": float(tokens[kept].sum()) if kept else 0.0}


def zero_gradient_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """An optimizer step on an all-zero gradient (what a mini-batch of zero-advantage rows amounts to). Frozen
    parameters (a LoRA agent's base) get no gradient: it would cost their size in memory and change nothing."""
    for p in model.parameters():
        if p.requires_grad:
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
    max_tokens_per_microbatch: int | None = None
    old_logprobs: str = "engine"
    """`recompute` or `engine` (see the module docstring); `engine` without `compare_rollout` changes nothing."""
    importance_sampling_cap: float | None = None
    compare_rollout: bool = False
    """Recompute the own responses' log-probs with the trainer to log (and, per `old_logprobs`, use) the gap."""
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
        supervised = torch.tensor(request.supervised or [False] * len(request.rows), dtype=torch.bool)[rows].to(device)
        gate: dict[str, float] = {}
        if self.compare_rollout or self.old_logprobs == "recompute":
            batch, advantages, gate = self._rollout_logps(batch, advantages, supervised)
        if self.objective.gate is not None:
            batch, advantages, weights, supervised, gated = self._gate(batch, advantages, weights, supervised)
            gate |= gated
        minibatches = self._plan_minibatches(batch, advantages, supervised, request.step)
        old = self._old_token_logps(batch, minibatches)
        if self.gradient_checkpointing:
            # transformers only checkpoints activations in train mode; hacrl's models run without dropout
            # (set it to 0 in the model config), so train mode changes nothing else.
            self.model.train()
        stats = UpdateStats()
        try:
            for m, minibatch in enumerate(minibatches):
                self._update(m, minibatch, batch, advantages, weights, supervised, old[m], stats, request.step)
        finally:
            self.model.eval()
        live = sum(len(mb.live) for mb in minibatches)
        summary = {
            "adv/self_mean": _masked_mean(advantages, batch.is_self),
            "adv/cross_mean": _masked_mean(advantages, ~batch.is_self),
            "adv/abs_mean": float(advantages.abs().mean()) if len(advantages) else 0.0,
            "zero_advantage_frac": 1.0 - live / max(len(batch), 1),
        }
        return LearnResult(stats, retokenize, summary, time.perf_counter() - start, trained_rows=len(batch), gate=gate)

    # ---------------------------------------------------------------- the pieces of `learn`

    def _rollout_logps(self, batch: LearnerBatch, advantages: Tensor, supervised: Tensor) -> tuple[
            LearnerBatch, Tensor, dict[str, float]]:
        """The trainer's own no-grad log-probs of its sampled responses: the gap to the engine's (logged) and, per
        `old_logprobs`, the self-row denominators they replace or the truncated IS weights they give."""
        own = (batch.is_self & ~supervised).nonzero().flatten().tolist()
        if not own:
            return batch, advantages, {}
        with torch.no_grad():
            pieces = [batch.select(own[i:i + self.minibatch_size]) for i in range(0, len(own), self.minibatch_size)]
            trainer = [self._logps(mb) for mb in pieces]
        gaps = torch.cat([(t - mb.rollout_logps).abs()[mb.completion_mask] for t, mb in zip(trainer, pieces,
                                                                                          strict=True)])
        trainer_seq = torch.cat([sequence_logps(t, mb.completion_mask) for t, mb in zip(trainer, pieces,
                                                                                       strict=True)])
        index = torch.tensor(own, device=advantages.device)
        engine_seq = batch.source_logps[index]
        metrics = {"rollout/logp_gap_mean": float(gaps.mean()), "rollout/logp_gap_max": float(gaps.max()),
                   "rollout/seq_logp_gap_mean": float((trainer_seq - engine_seq).abs().mean())}
        if self.old_logprobs == "recompute":
            batch = dataclasses.replace(batch, source_logps=batch.source_logps.index_put((index,), trainer_seq.float()))
        elif self.importance_sampling_cap is not None:
            weight = torch.exp(trainer_seq - engine_seq.to(trainer_seq.dtype)).clamp(max=self.importance_sampling_cap)
            advantages = advantages.index_put((index,), advantages[index] * weight.to(advantages.dtype))
            capped = weight >= self.importance_sampling_cap
            metrics |= {"rollout/is_weight_mean": float(weight.mean()), "rollout/is_weight_min": float(weight.min()),
                        "rollout/is_weight_capped_frac": float(capped.double().mean())}
        return batch, advantages, metrics

    def _gate(self, batch: LearnerBatch, advantages: Tensor, weights: Tensor, supervised: Tensor) -> tuple[
            LearnerBatch, Tensor, Tensor, Tensor, dict[str, float]]:
        """Score every transferred row once with the learner's own old policy; drop those the gate refuses and
        weight the rest (GRAFT). Returns the kept rows' batch, advantages, weights, roles, and gate metrics."""
        assert self.objective.gate is not None
        peer = (~batch.is_self & ~supervised).nonzero().flatten().tolist()
        keep = torch.ones(len(batch), dtype=torch.bool, device=advantages.device)
        if peer:
            with torch.no_grad():
                old_seq = torch.cat([sequence_logps(self._logps(mb), mb.completion_mask)
                                     for mb in (batch.select(peer[i:i + self.minibatch_size])
                                                for i in range(0, len(peer), self.minibatch_size))])
            passed, w = gate_rows(old_seq, batch.source_logps[peer], self.objective.gate)
            index = torch.tensor(peer, device=advantages.device)
            keep[index] = passed.to(keep.device)
            weights = weights.clone()
            weights[index] = w.to(weights.dtype)
        tokens = batch.completion_lengths
        metrics = _transfer_metrics(peer, keep, weights, tokens)
        for source in sorted(set(batch.sources[peer].tolist())):  # per direction (source -> this learner)
            rows = [i for i in peer if int(batch.sources[i]) == source]
            metrics |= _transfer_metrics(rows, keep, weights, tokens, tag=f"from{source}/")
        if bool(keep.all()):
            return batch, advantages, weights, supervised, metrics
        kept = keep.nonzero().flatten()
        return batch.select(kept), advantages[kept], weights[kept], supervised[kept], metrics

    def _plan_minibatches(self, batch: LearnerBatch, advantages: Tensor, supervised: Tensor,
                          step: int) -> list[MiniBatch]:
        chunks = layout_minibatches(batch.is_self.tolist(), order=self.objective.minibatch_order,
                                    size=self.minibatch_size, seed=self.seed * 7919 + step * 31 + self.index,
                                    groups=batch.groups.tolist(), supervised=supervised.tolist())
        if self.reference is not None:  # with a KL penalty every row has a gradient: nothing is skipped
            planned = [MiniBatch(rows, rows, 1.0) for rows in chunks]
        else:
            lengths = batch.completion_lengths
            planned = [live_rows(rows, advantages, lengths, self.objective.loss.normaliser, supervised)
                       for rows in chunks]
        if self.max_tokens_per_microbatch is None:
            return [dataclasses.replace(mb, pieces=[mb.live] if mb.live else []) for mb in planned]
        tokens = batch.attention_mask.sum(dim=-1)
        return [dataclasses.replace(mb, pieces=split_by_tokens(mb.live, tokens, self.max_tokens_per_microbatch))
                for mb in planned]

    def _old_token_logps(self, batch: LearnerBatch, minibatches: list[MiniBatch]) -> list[list[Tensor | None]]:
        """The learner's own per-token log-probs of every piece of every mini-batch before any update of the step
        (no grad), for losses whose ratio is against the learner's old policy (GRPO, GRAFT)."""
        if not self.objective.loss.needs_old_token_logps:
            return [[None] * len(mb.pieces) for mb in minibatches]
        with torch.no_grad():
            return [[self._logps(batch.select(piece)) for piece in mb.pieces] for mb in minibatches]

    def _logps(self, mb: LearnerBatch) -> Tensor:
        return completion_logps(self.model, mb.input_ids, mb.attention_mask, mb.completion_mask,
                                temperature=self.temperature)

    def _update(self, m: int, minibatch: MiniBatch, batch: LearnerBatch, advantages: Tensor, weights: Tensor,
                supervised: Tensor, old: list[Tensor | None], stats: UpdateStats, step: int) -> None:
        """The `m`-th optimizer update of the step: the loss of every piece, gradients accumulated, one step."""
        if not minibatch.live:
            zero_gradient_step(self.model, self.optimizer)
            self.on_update()
            stats.updates += 1
            return
        shares = self._piece_shares(minibatch, batch, supervised)
        self.optimizer.zero_grad(set_to_none=True)
        total: LossStats | None = None
        kl_total: float | None = None
        loss_value = 0.0
        for piece, piece_old, (policy_scale, supervised_scale, row_share) in zip(minibatch.pieces, old, shares,
                                                                                   strict=True):
            mb = batch.select(piece)
            index = torch.as_tensor(piece, device=advantages.device)
            logps = self._logps(mb)
            if not bool(torch.isfinite(logps.detach()[mb.completion_mask]).all()):
                self.optimizer.zero_grad(set_to_none=True)
                stats.skipped += self._skip(step, m, "NaN/inf log-probs")
                return
            inputs = LossInputs(logps=logps, mask=mb.completion_mask, source_logps=mb.source_logps,
                                advantages=advantages[index], is_self=mb.is_self, weights=weights[index],
                                old_token_logps=piece_old)
            loss, piece_stats = self.objective.minibatch_loss(inputs, m, supervised=supervised[index],
                                                              policy_scale=policy_scale,
                                                              supervised_scale=supervised_scale)
            if self.reference is not None:
                with torch.no_grad():
                    ref = completion_logps(self.reference, mb.input_ids, mb.attention_mask, mb.completion_mask,
                                           temperature=self.temperature)
                kl_term = kl_penalty(logps=logps, ref_logps=ref, mask=mb.completion_mask).mean()
                if row_share != 1.0:
                    kl_term = kl_term * row_share
                loss = loss + self.objective.kl_beta * kl_term
                kl_total = (kl_total or 0.0) + float(kl_term.detach())
            loss.backward()
            loss_value += float(loss.detach())
            total = piece_stats if total is None else total.merged(piece_stats)
        assert total is not None
        grad_norm = float(torch.nn.utils.clip_grad_norm_(
            [p for p in self.model.parameters() if p.requires_grad], self.max_grad_norm))
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            stats.skipped += self._skip(step, m, f"loss {loss_value}, grad norm {grad_norm}")
            return
        self.optimizer.step()
        self.on_update()
        self.nonfinite_in_a_row = 0
        stats.updates += 1
        stats.add(total, grad_norm=grad_norm, kl=kl_total)

    def _piece_shares(self, minibatch: MiniBatch, batch: LearnerBatch, supervised: Tensor) -> list[
            tuple[float, float, float]]:
        """Per piece: the factor of its policy loss (its share of the mini-batch's policy normaliser, times nothing
        else: the zero-advantage skip is folded in), of its supervised loss (its share of the supervised tokens),
        and its share of the mini-batch's rows (for the KL mean). One piece: the mini-batch's own factors."""
        if len(minibatch.pieces) == 1:
            return [(minibatch.scale, 1.0, 1.0)]
        sup = supervised.tolist()
        tokens = batch.completion_lengths.tolist()

        def size(rows: list[int], supervised_rows: bool) -> float:
            chosen = [i for i in rows if bool(sup[i]) == supervised_rows]
            if supervised_rows or self.objective.loss.normaliser == "tokens":
                return float(sum(tokens[i] for i in chosen))
            return float(len(chosen))

        policy_total, supervised_total = size(minibatch.rows, False), size(minibatch.rows, True)
        rows_total = float(len(minibatch.live))
        return [(size(p, False) / policy_total if policy_total else 1.0,
                 size(p, True) / supervised_total if supervised_total else 1.0, len(p) / rows_total)
                for p in minibatch.pieces]

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
