"""The shared rollout pool and each learner's view of it (docs/method.md §1-§2).

A `Trajectory` is tokenizer-neutral: the response is stored as TEXT (what every agent can read) plus the
source agent's own token ids and its rollout-time log-prob (valid only for the source). `build_learner_batch`
turns the whole pool into one learner's training batch:

* self rows (source == learner) reuse the stored prompt and completion ids exactly, so the learner's
  recomputed log-prob is of the very tokens it sampled and the self importance ratio starts at 1;
* cross rows render the bare question with the learner's own prompt template (`encode_prompt`) and
  re-tokenise the completion text with the learner's tokenizer. Prompt and completion are tokenised
  separately, as the learner would have produced them (prompt tokens, then generated tokens), and special
  tokens are never parsed out of the completion text (a response that literally contains "<eos>" stays
  text). The learner's EOS is appended iff the source stopped with its EOS, so "the response ended here"
  is learned from cross responses too; a truncated source response stays open-ended.

Batches are left padded with the learner's pad id, the layout `hacrl.rollout.logprobs` expects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from hacrl.rollout.sampler import Sample

__all__ = ["LearnerBatch", "RetokenizeStats", "Trajectory", "build_learner_batch"]


@dataclass(frozen=True)
class Trajectory:
    """One verified response in the shared pool.

    `prompt_index` is the group id (position of the prompt in this step's prompt batch); all responses of
    all agents to that prompt form its joint group. `prompt` is the bare question before any template.
    `source_logp` is the length-normalised rollout-time log-prob under the source agent, in the source's
    tokenisation. `prompt_ids` / `completion_ids` are the SOURCE's token ids (meaningless to other agents).
    `truncated` means the source hit its token limit without EOS.
    """

    prompt_index: int
    problem_id: str
    prompt: str
    completion: str
    source: int
    source_logp: float
    reward: float
    truncated: bool
    completion_ids: tuple[int, ...]
    prompt_ids: tuple[int, ...]
    kind: str = "default"

    def __post_init__(self) -> None:
        # Accept lists for convenience but store tuples: the pool is shared by every learner and must not be
        # mutated by one of them.
        object.__setattr__(self, "completion_ids", tuple(int(i) for i in self.completion_ids))
        object.__setattr__(self, "prompt_ids", tuple(int(i) for i in self.prompt_ids))

    @classmethod
    def from_sample(
        cls,
        sample: Sample,
        *,
        prompt_index: int,
        problem_id: str,
        prompt: str,
        source: int,
        reward: float,
        kind: str = "default",
    ) -> Trajectory:
        """The pool entry for a `hacrl.rollout.sampler.Sample` once it has been scored."""
        return cls(
            prompt_index=prompt_index,
            problem_id=problem_id,
            prompt=prompt,
            completion=sample.text,
            source=source,
            source_logp=sample.mean_logp,
            reward=float(reward),
            truncated=sample.finish_reason == "length",
            completion_ids=tuple(sample.completion_ids),
            prompt_ids=tuple(sample.prompt_ids),
            kind=kind,
        )


@dataclass
class RetokenizeStats:
    """What happened while building one learner's batch, so no row is changed or lost silently.

    `truncated`: cross rows cut to `max_completion_tokens` (their EOS, if any, is cut too).
    `dropped`: rows left out because they had no completion token to score (see `build_learner_batch`).
    `lossy`: untruncated cross rows whose re-tokenised completion does not decode back to the source text
    (e.g. characters outside the learner's vocabulary became <unk>); they are kept.
    Token means count completion tokens including EOS, over the rows kept.
    """

    self_rows: int = 0
    cross_rows: int = 0
    truncated: int = 0
    dropped: int = 0
    lossy: int = 0
    mean_tokens_self: float = 0.0
    mean_tokens_cross: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


@dataclass
class LearnerBatch:
    """One learner's padded training batch over (part of) the pool.

    Shapes: `input_ids`, `attention_mask` `[B, L]` (left padded); `completion_mask` `[B, L-1]` bool, True
    where the TARGET token at column t+1 is a completion token — aligned with the output of
    `hacrl.rollout.logprobs.token_logps` / `completion_logps`; per-row `[B]`: `source_logps` (float32),
    `is_self` (bool), `sources` / `groups` (long), `rewards` (float32), `truncated` (bool, the source hit its
    token limit). `rows[i]` is the pool index of row i.
    """

    input_ids: Tensor
    attention_mask: Tensor
    completion_mask: Tensor
    source_logps: Tensor
    is_self: Tensor
    sources: Tensor
    groups: Tensor
    rewards: Tensor
    truncated: Tensor
    rows: list[int] = field(default_factory=list)

    _ROW_TENSORS = ("source_logps", "is_self", "sources", "groups", "rewards", "truncated")

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def completion_lengths(self) -> Tensor:
        """Completion tokens per row (including EOS), `[B]` long."""
        return self.completion_mask.sum(dim=-1)

    def select(self, indices: Sequence[int] | Tensor) -> LearnerBatch:
        """Sub-batch of the given rows (e.g. one mini-batch), dropping leading columns that became
        all padding, so a mini-batch of short rows does not pay for the pool's longest row."""
        index = torch.as_tensor(indices, dtype=torch.long, device=self.input_ids.device).reshape(-1)
        input_ids = self.input_ids.index_select(0, index)
        attention_mask = self.attention_mask.index_select(0, index)
        completion_mask = self.completion_mask.index_select(0, index)
        if len(index) and input_ids.shape[1] > 2:
            used = attention_mask.any(dim=0).nonzero()
            # Keep at least two columns so `completion_mask` stays [B, L-1] with L >= 2.
            start = min(int(used[0]) if used.numel() else 0, input_ids.shape[1] - 2)
            if start > 0:
                input_ids = input_ids[:, start:]
                attention_mask = attention_mask[:, start:]
                completion_mask = completion_mask[:, start:]
        per_row = {name: getattr(self, name).index_select(0, index) for name in self._ROW_TENSORS}
        return LearnerBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            completion_mask=completion_mask,
            rows=[self.rows[i] for i in index.tolist()],
            **per_row,
        )

    def to(self, device: torch.device | str) -> LearnerBatch:
        """A copy with every tensor on `device`."""
        moved = {
            f.name: getattr(self, f.name).to(device) for f in fields(self) if isinstance(getattr(self, f.name), Tensor)
        }
        return LearnerBatch(rows=list(self.rows), **moved)


def _token_id(tokenizer: Any, name: str) -> int | None:
    value = getattr(tokenizer, name, None)
    if value is None:
        return None
    if isinstance(value, int):
        return value
    return int(next(iter(value)))


def build_learner_batch(
    pool: Sequence[Trajectory],
    learner: int,
    tokenizer: Any,
    encode_prompt: Callable[[str], list[int]],
    *,
    max_completion_tokens: int | None = None,
) -> tuple[LearnerBatch, RetokenizeStats]:
    """Learner `learner`'s batch over the whole pool, in pool order (`rows` maps back to the pool).

    Self rows keep their stored ids exactly (their length is bounded by the sampler's `max_new_tokens`;
    `max_completion_tokens` does not touch them). Cross rows are re-tokenised (see the module docstring);
    one longer than `max_completion_tokens` (EOS included) is cut to that length and counted in
    `stats.truncated`. A row with no completion token at all — a cross response whose text is empty and that
    did not end with EOS (the source produced only special tokens, or nothing, before its limit), or an empty
    self row — is left out and counted in `stats.dropped`: it has nothing to score, and its length-normalised
    log-prob would be undefined. An empty response that DID stop is kept as the single learner EOS token.
    """
    if max_completion_tokens is not None and max_completion_tokens < 1:
        raise ValueError(f"max_completion_tokens must be >= 1 or None, got {max_completion_tokens}")
    eos_id = _token_id(tokenizer, "eos_token_id")
    pad_id = _token_id(tokenizer, "pad_token_id")
    if pad_id is None:
        pad_id = eos_id if eos_id is not None else 0

    stats = RetokenizeStats()
    sequences: list[tuple[list[int], list[int]]] = []
    kept: list[int] = []
    check_lossy: list[tuple[list[int], str]] = []  # (re-tokenised text, source text) of uncut cross rows

    cross_texts = [t.completion for t in pool if t.source != learner]
    encoded = (
        tokenizer(cross_texts, add_special_tokens=False, split_special_tokens=True)["input_ids"] if cross_texts else []
    )
    prompt_cache: dict[str, list[int]] = {}
    cross_iter = iter(encoded)

    for row, traj in enumerate(pool):
        if traj.source == learner:
            prompt_ids, completion_ids = list(traj.prompt_ids), list(traj.completion_ids)
            if not prompt_ids:
                raise ValueError(f"pool row {row}: self trajectory has no prompt_ids")
        else:
            completion_ids = list(next(cross_iter))
            text_ids = list(completion_ids)
            if not traj.truncated:
                if eos_id is None:
                    raise ValueError(
                        "the learner's tokenizer has no eos_token_id, so a finished cross response cannot be "
                        "marked as finished"
                    )
                completion_ids.append(eos_id)
            if max_completion_tokens is not None and len(completion_ids) > max_completion_tokens:
                completion_ids = completion_ids[:max_completion_tokens]
                stats.truncated += 1
            elif text_ids:
                check_lossy.append((text_ids, traj.completion))
            elif traj.completion:
                stats.lossy += 1  # non-empty text that the learner's tokenizer turned into nothing
            if traj.prompt not in prompt_cache:
                prompt_cache[traj.prompt] = list(encode_prompt(traj.prompt))
                if not prompt_cache[traj.prompt]:
                    raise ValueError(f"encode_prompt returned no tokens for prompt {traj.prompt!r}")
            prompt_ids = prompt_cache[traj.prompt]
        if not completion_ids:
            stats.dropped += 1
            continue
        sequences.append((prompt_ids, completion_ids))
        kept.append(row)

    if check_lossy:
        decoded = tokenizer.batch_decode([ids for ids, _ in check_lossy], skip_special_tokens=True)
        stats.lossy += sum(d != text for d, (_, text) in zip(decoded, check_lossy, strict=True))

    is_self = [pool[r].source == learner for r in kept]
    self_lengths = [len(c) for (_, c), s in zip(sequences, is_self, strict=True) if s]
    cross_lengths = [len(c) for (_, c), s in zip(sequences, is_self, strict=True) if not s]
    stats.self_rows, stats.cross_rows = len(self_lengths), len(cross_lengths)
    stats.mean_tokens_self = sum(self_lengths) / len(self_lengths) if self_lengths else 0.0
    stats.mean_tokens_cross = sum(cross_lengths) / len(cross_lengths) if cross_lengths else 0.0

    width = max((len(p) + len(c) for p, c in sequences), default=0)
    n = len(sequences)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    completion_mask = torch.zeros((n, max(width - 1, 0)), dtype=torch.bool)
    for i, (p, c) in enumerate(sequences):
        total = len(p) + len(c)
        input_ids[i, width - total :] = torch.tensor(p + c, dtype=torch.long)
        attention_mask[i, width - total :] = 1
        completion_mask[i, width - 1 - len(c) :] = True  # targets at columns width-len(c) .. width-1

    chosen = [pool[r] for r in kept]
    batch = LearnerBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        completion_mask=completion_mask,
        source_logps=torch.tensor([t.source_logp for t in chosen], dtype=torch.float32),
        is_self=torch.tensor(is_self, dtype=torch.bool),
        sources=torch.tensor([t.source for t in chosen], dtype=torch.long),
        groups=torch.tensor([t.prompt_index for t in chosen], dtype=torch.long),
        rewards=torch.tensor([t.reward for t in chosen], dtype=torch.float32),
        truncated=torch.tensor([t.truncated for t in chosen], dtype=torch.bool),
        rows=kept,
    )
    return batch, stats
