"""Policy-gradient objectives: GRPO (token ratio), GSPO (sequence ratio) and HACPO (docs/method.md §1, §3.4-3.6).

All three take tensors by keyword: the learner's per-token log-probs `logps [B, T]` (with grad), a `mask [B, T]`
of response tokens and per-response inputs; they return `(loss, stats)` where `loss` is the scalar to minimise
and `stats` a `LossStats` explaining it (ratios and clip counts next to the loss, as in CleanRL).

Sequence-level ratios are length-normalised in each tokenizer's own space (docs/method.md §1):

    s_i = exp( mean_t logp_k(y_t | q, y_<t)  -  logp_src_i )                 (paper eq. 11, GSPO)

which makes a response re-tokenised by another agent comparable to one the learner sampled itself.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from hacrl.algorithms._checks import as_1d, finite, float_1d, non_negative
from hacrl.algorithms.names import GRPO_LOSS_TYPES
from hacrl.algorithms.stats import LossStats, RatioStats

GRPOLossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]


def _check_token_inputs(logps: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(logps, Tensor) or logps.dim() != 2:
        raise ValueError(f"logps must be a [B, T] tensor, got {getattr(logps, 'shape', type(logps))}")
    if not isinstance(mask, Tensor) or mask.shape != logps.shape:
        raise ValueError(f"mask must have the shape of logps {tuple(logps.shape)}, "
                         f"got {tuple(getattr(mask, 'shape', ()))}")
    if logps.shape[0] == 0:
        raise ValueError("logps is empty: a loss needs at least one response")
    mask = mask.bool()
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"mask has no response token in row(s) {empty[:10]}: every response needs >= 1 token")
    if not bool(torch.isfinite(logps.detach()[mask]).all()):
        raise ValueError("logps contains NaN/inf at response positions")
    return logps, mask


def sequence_logps(logps: Tensor, mask: Tensor) -> Tensor:
    """Length-normalised log-prob per response: mean of `logps` over the masked tokens."""
    logps, mask = _check_token_inputs(logps, mask)
    masked = torch.where(mask, logps, torch.zeros_like(logps))
    return masked.sum(dim=1) / mask.sum(dim=1).to(logps.dtype)


def _clipped_surrogate(ratio: Tensor, advantages: Tensor, low: float, high: float) -> tuple[Tensor, Tensor]:
    """min(ratio * A, clip(ratio, low, high) * A) and the mask of entries whose gradient the clip removed."""
    unclipped = ratio * advantages
    clipped = ratio.clamp(low, high) * advantages
    zero_grad = ((ratio > high) & (advantages > 0)) | ((ratio < low) & (advantages < 0))
    return torch.minimum(unclipped, clipped), zero_grad


def cross_lower_bound(update_index: int, delta: float = 0.2, delta_step: float = 0.025) -> float:
    """lower_m = min(1, 1 - delta + m * delta_step)   (stepwise clipping, docs/method.md §3.5; paper eq. 12)."""
    if isinstance(update_index, bool) or not isinstance(update_index, int) or update_index < 0:
        raise ValueError(f"update_index must be a non-negative integer, got {update_index!r}")
    if not 0.0 <= delta <= 1.0:
        raise ValueError(f"delta must be in [0, 1] (the cross lower bound at m=0 is 1 - delta), got {delta}")
    non_negative("delta_step", delta_step)
    return min(1.0, 1.0 - delta + update_index * delta_step)


def hacpo_loss(
    *,
    logps: Tensor,
    mask: Tensor,
    source_logps: Tensor,
    advantages: Tensor,
    is_self: Tensor,
    omegas: Tensor,
    update_index: int,
    eps_low: float = 3e-4,
    eps_high: float = 4e-4,
    alpha: float = 1.0,
    delta: float = 0.2,
    delta_step: float = 0.025,
    clip_cross: bool = True,
) -> tuple[Tensor, LossStats]:
    """HACPO objective of one mini-batch for one learner (docs/method.md §3.6; paper eq. 10-13).

        s_i        = exp(seq_logp_i - source_logps_i)
        self:  J_i = min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i)                  (GSPO)
        cross: c_i = clip(s_i, lower_m, 1),  lower_m = min(1, 1 - delta + m * delta_step)     (eq. 12)
               J_i = c_i * stopgrad(c_i)^alpha * omega_i * A_i                                (eq. 10-11)
        loss       = -mean_i J_i   over self and cross responses together

    `omegas` is Phat[source] / Phat[learner] per response (1 for self). A cross response whose ratio
    falls outside [lower_m, 1] has a constant objective term and so exactly zero gradient ("discarded").
    `clip_cross=False` is the `hacpo-no-clip` ablation (c_i = s_i).
    """
    seq = sequence_logps(logps, mask)
    b = seq.shape[0]
    source_logps = float_1d("source_logps", source_logps, length=b)
    advantages = float_1d("advantages", advantages, length=b)
    omegas = float_1d("omegas", omegas, length=b)
    if bool((omegas <= 0).any()):
        raise ValueError("omegas must be > 0 (capability ratios)")
    is_self = as_1d("is_self", is_self, length=b)
    if is_self.dtype != torch.bool:
        raise ValueError(f"is_self must be a bool tensor, got dtype {is_self.dtype}")
    if not 0.0 <= eps_low < 1.0:
        raise ValueError(f"eps_low must be in [0, 1), got {eps_low}")
    non_negative("eps_high", eps_high)
    non_negative("alpha", alpha)
    lower = cross_lower_bound(update_index, delta, delta_step)

    dtype = seq.dtype
    ratio = torch.exp(seq - source_logps.to(dtype))
    adv = advantages.to(dtype)
    self_obj, self_zero = _clipped_surrogate(ratio, adv, 1.0 - eps_low, 1.0 + eps_high)

    c = ratio.clamp(lower, 1.0) if clip_cross else ratio
    cross_obj = c * c.detach().pow(alpha) * omegas.to(dtype) * adv

    objective = torch.where(is_self, self_obj, cross_obj)
    loss = -objective.mean()

    cross = ~is_self
    r = ratio.detach()
    cross_ratio = r[cross]
    # without the cross clip nothing is clipped: an interval of (-inf, inf) counts nothing outside it
    low, high = (lower, 1.0) if clip_cross else (-math.inf, math.inf)
    stats = LossStats(
        loss=float(loss.detach()), lower_bound=lower,
        self=RatioStats.of(r[is_self], low=1.0 - eps_low, high=1.0 + eps_high, zero_grad=self_zero[is_self]),
        cross=RatioStats.of(cross_ratio, low=low, high=high, zero_grad=(cross_ratio < low) | (cross_ratio > high),
                            weights=omegas[cross]),
    )
    return loss, stats


def _old_sequence_logps(old_logps: Tensor, mask: Tensor, b: int) -> Tensor:
    """Accept old log-probs per response [B] (length-normalised) or per token [B, T] (normalised here)."""
    if isinstance(old_logps, Tensor) and old_logps.dim() == 2:
        return sequence_logps(old_logps.detach(), mask)
    return float_1d("old_logps", old_logps, length=b)


def gspo_loss(
    *,
    logps: Tensor,
    mask: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    eps_low: float = 3e-4,
    eps_high: float = 4e-4,
    weights: Tensor | None = None,
) -> tuple[Tensor, LossStats]:
    """GSPO: sequence-level, length-normalised ratio with PPO clipping (docs/method.md §1; GSPO paper eq. 5-7).

        s_i = exp(seq_logp_i - old_seq_logp_i);  loss = -mean_i w_i min(s_i A_i, clip(s_i, 1-eps_low, 1+eps_high) A_i)

    `old_logps` is [B] (length-normalised) or [B, T] per-token; for the Naive baseline it is the source's
    rollout log-prob of every pooled response (cross responses treated exactly like self ones). `weights`
    (default 1): GRAFT's sequence-level ablation weights transferred responses by their compatibility.
    """
    seq = sequence_logps(logps, mask)
    b = seq.shape[0]
    old = _old_sequence_logps(old_logps, mask, b).to(seq.dtype)
    advantages = float_1d("advantages", advantages, length=b).to(seq.dtype)
    if not 0.0 <= eps_low < 1.0:
        raise ValueError(f"eps_low must be in [0, 1), got {eps_low}")
    non_negative("eps_high", eps_high)
    ratio = torch.exp(seq - old)
    objective, zero_grad = _clipped_surrogate(ratio, advantages, 1.0 - eps_low, 1.0 + eps_high)
    if weights is not None:
        objective = objective * float_1d("weights", weights, length=b).to(seq.dtype)
    loss = -objective.mean()
    return loss, LossStats(loss=float(loss.detach()), self=RatioStats.of(
        ratio, low=1.0 - eps_low, high=1.0 + eps_high, zero_grad=zero_grad, weights=weights))


def grpo_loss(
    *,
    logps: Tensor,
    mask: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    loss_type: GRPOLossType = "dapo",
    max_completion_length: int | None = None,
    weights: Tensor | None = None,
    is_self: Tensor | None = None,
) -> tuple[Tensor, LossStats]:
    """GRPO with DAPO clip-higher: token-level ratio r_t = exp(logp_t - old_logp_t) (docs/method.md §1).

        J_t = w_i * min(r_t A_i, clip(r_t, 1 - eps_low, 1 + eps_high) A_i)

    Aggregation (`loss_type`, names as in TRL):
      * "grpo":    mean over each response's tokens, then mean over responses;
      * "bnpo" / "dapo": mean over all response tokens of the batch (token-mean; identical here because
        hacrl normalises per learner mini-batch, with no cross-process token count);
      * "dr_grpo": sum over tokens / (B * max_completion_length).

    `weights` (per response, default 1) scale each response's terms: GRAFT's compatibility weight on transferred
    responses (docs/method.md §4.1, whose objective is exactly this with loss_type "dapo"). `is_self` (per response)
    only splits the ratio statistics into the learner's own tokens and transferred ones.
    """
    logps, mask = _check_token_inputs(logps, mask)
    if not isinstance(old_logps, Tensor) or old_logps.shape != logps.shape:
        raise ValueError(f"old_logps must have the shape of logps {tuple(logps.shape)} (per-token), "
                         f"got {tuple(getattr(old_logps, 'shape', ()))}")
    b = logps.shape[0]
    advantages = float_1d("advantages", advantages, length=b).to(logps.dtype)
    if loss_type not in GRPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {GRPO_LOSS_TYPES}, got {loss_type!r}")
    if loss_type == "dr_grpo" and (max_completion_length is None or max_completion_length < 1):
        raise ValueError("loss_type='dr_grpo' needs max_completion_length >= 1")
    if not 0.0 <= eps_low < 1.0:
        raise ValueError(f"eps_low must be in [0, 1), got {eps_low}")
    non_negative("eps_high", eps_high)
    if weights is not None:
        weights = float_1d("weights", weights, length=b)
        if bool((weights < 0).any()):
            raise ValueError("weights must be >= 0")
    old = torch.where(mask, old_logps.detach(), torch.zeros_like(logps))
    finite("old_logps", old)
    new = torch.where(mask, logps, torch.zeros_like(logps))
    ratio = torch.exp(new - old)
    objective, zero_grad = _clipped_surrogate(ratio, advantages[:, None].expand_as(ratio),
                                              1.0 - eps_low, 1.0 + eps_high)
    fmask = mask.to(logps.dtype)
    per_token = objective * fmask
    if weights is not None:
        per_token = per_token * weights.to(logps.dtype)[:, None]
    if loss_type == "grpo":
        loss = -(per_token.sum(1) / fmask.sum(1)).mean()
    elif loss_type == "dr_grpo":
        loss = -per_token.sum() / (b * float(max_completion_length or 1))
    else:
        loss = -per_token.sum() / fmask.sum()
    own = mask if is_self is None else mask & as_1d("is_self", is_self, length=b).bool()[:, None]
    peer = mask & ~own
    token_weights = None if weights is None else weights[:, None].expand_as(ratio)
    low, high = 1.0 - eps_low, 1.0 + eps_high
    return loss, LossStats(
        loss=float(loss.detach()),
        self=RatioStats.of(ratio[own], low=low, high=high, zero_grad=zero_grad[own],
                           weights=None if token_weights is None else token_weights[own]),
        cross=RatioStats.of(ratio[peer], low=low, high=high, zero_grad=zero_grad[peer],
                            weights=None if token_weights is None else token_weights[peer]))


def nll_loss(*, logps: Tensor, mask: Tensor) -> Tensor:
    """Token-mean negative log-likelihood of the masked tokens: SGT's supervised term (docs/method.md §4.2)."""
    logps, mask = _check_token_inputs(logps, mask)
    fmask = mask.to(logps.dtype)
    return -(torch.where(mask, logps, torch.zeros_like(logps)) * fmask).sum() / fmask.sum()


def kl_penalty(*, logps: Tensor, ref_logps: Tensor, mask: Tensor) -> Tensor:
    """Per-response mean of the k3 estimator exp(ref - logp) - (ref - logp) - 1 >= 0 (as in TRL/verl).

    Optional KL to a frozen reference (`beta`, default 0 as in the paper); returns [B].
    """
    logps, mask = _check_token_inputs(logps, mask)
    if not isinstance(ref_logps, Tensor) or ref_logps.shape != logps.shape:
        raise ValueError(f"ref_logps must have the shape of logps {tuple(logps.shape)}")
    diff = torch.where(mask, ref_logps.detach() - logps, torch.zeros_like(logps))
    k3 = torch.exp(diff) - diff - 1.0
    fmask = mask.to(logps.dtype)
    return (k3 * fmask).sum(1) / fmask.sum(1)
