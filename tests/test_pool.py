"""Per-learner batches over the shared pool: self rows verbatim, cross rows re-tokenised from text.

Two agents with different tokenizers and templates: agent 0 uses the character tokenizer and template
"Q: {prompt}\\nA: "; agent 1 a byte-level BPE trained on arithmetic text, template "<bos>{prompt}\\n".
"""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from hacrl.models.tokenizers import build_char_tokenizer, train_bpe_tokenizer
from hacrl.pool import LearnerBatch, RetokenizeStats, Trajectory, build_learner_batch
from hacrl.rollout.logprobs import completion_logps, masked_mean
from hacrl.rollout.sampler import SamplingParams, sample

torch.set_num_threads(1)

CHAR = build_char_tokenizer()
_CORPUS = [f"Q: What is {a} + {b}?\nA: {a + b}. The answer is {a + b}.\n" for a in range(40) for b in range(0, 90, 7)]
BPE = train_bpe_tokenizer(_CORPUS, vocab_size=300)
TOKENIZERS = [CHAR, BPE]


def encode_a(prompt: str) -> list[int]:
    return CHAR(f"Q: {prompt}\nA: ", add_special_tokens=False).input_ids


def encode_b(prompt: str) -> list[int]:
    return [BPE.bos_token_id, *BPE(f"{prompt}\n", add_special_tokens=False).input_ids]


ENCODERS = [encode_a, encode_b]


def _traj(
    prompt_index: int,
    prompt: str,
    text: str,
    source: int,
    *,
    truncated: bool = False,
    reward: float = 0.0,
    logp: float = -1.0,
    ids: list[int] | None = None,
) -> Trajectory:
    """A trajectory as agent `source` would have produced it (its own template and tokenizer)."""
    tok = TOKENIZERS[source]
    completion_ids = ids if ids is not None else tok(text, add_special_tokens=False).input_ids
    if not truncated:
        completion_ids = [*completion_ids, tok.eos_token_id]
    return Trajectory(
        prompt_index=prompt_index,
        problem_id=f"p{prompt_index}",
        prompt=prompt,
        completion=text,
        source=source,
        source_logp=logp,
        reward=reward,
        truncated=truncated,
        completion_ids=tuple(completion_ids),
        prompt_ids=tuple(ENCODERS[source](prompt)),
    )


POOL = [
    _traj(0, "What is 12 + 30?", "12 + 30 = 42. The answer is 42.", 0, reward=1.0, logp=-0.5),
    _traj(0, "What is 12 + 30?", " 41 ", 1, reward=0.0, logp=-1.5),
    _traj(1, "What is 7 + 8?", "7 + 8\n= 15\tso: 15", 1, reward=1.0, logp=-0.25),
    _traj(1, "What is 7 + 8?", "The answer is 1", 0, truncated=True, reward=0.0, logp=-2.0),
    _traj(1, "What is 7 + 8?", "The answer is 15 and 16 and 17", 1, truncated=True, logp=-3.0),
]


def _completion(batch: LearnerBatch, i: int) -> list[int]:
    return batch.input_ids[i, 1:][batch.completion_mask[i]].tolist()


def _prompt(batch: LearnerBatch, i: int) -> list[int]:
    real = batch.input_ids[i][batch.attention_mask[i].bool()].tolist()
    return real[: len(real) - int(batch.completion_mask[i].sum())]


@pytest.mark.parametrize("learner", [0, 1])
def test_cross_rows_round_trip_text_and_use_the_learners_template(learner: int) -> None:
    tok, encode = TOKENIZERS[learner], ENCODERS[learner]
    batch, stats = build_learner_batch(POOL, learner, tok, encode)
    assert batch.rows == list(range(len(POOL)))
    assert stats.cross_rows == sum(t.source != learner for t in POOL)
    assert stats.self_rows == sum(t.source == learner for t in POOL)
    assert stats.truncated == stats.dropped == stats.lossy == 0
    for i, traj in enumerate(POOL):
        if traj.source == learner:
            continue
        ids = _completion(batch, i)
        if traj.truncated:
            assert tok.eos_token_id not in ids
        else:
            assert ids[-1] == tok.eos_token_id
            ids = ids[:-1]
        assert tok.decode(ids) == traj.completion  # exact text, in the learner's own tokens
        assert ids == tok(traj.completion, add_special_tokens=False).input_ids
        assert _prompt(batch, i) == encode(traj.prompt)
    assert tok.decode(_prompt(batch, 1 - learner), skip_special_tokens=True) == (
        "Q: What is 12 + 30?\nA: " if learner == 0 else "What is 12 + 30?\n"
    )


def test_self_rows_keep_their_ids_exactly() -> None:
    # Agent 1 sampled "answer" one byte at a time: not the canonical BPE split, but the ids it actually drew.
    odd_ids = BPE.convert_tokens_to_ids(list("answer"))
    assert odd_ids != BPE("answer", add_special_tokens=False).input_ids and BPE.decode(odd_ids) == "answer"
    pool = [*POOL, _traj(2, "What is 40 + 2?", "answer", 1, ids=odd_ids)]
    batch, _ = build_learner_batch(pool, 1, BPE, encode_b)
    for i, traj in enumerate(pool):
        if traj.source == 1:
            assert _completion(batch, i) == list(traj.completion_ids)
            assert _prompt(batch, i) == list(traj.prompt_ids)
    assert batch.is_self.tolist() == [t.source == 1 for t in pool]


def test_completion_mask_and_padding_layout() -> None:
    batch, _ = build_learner_batch(POOL, 0, CHAR, encode_a)
    n, width = batch.input_ids.shape
    assert batch.attention_mask.shape == (n, width) and batch.completion_mask.shape == (n, width - 1)
    assert batch.completion_mask.dtype == torch.bool
    for i in range(n):
        real = int(batch.attention_mask[i].sum())
        assert batch.attention_mask[i, width - real :].all() and not batch.attention_mask[i, : width - real].any()
        assert (batch.input_ids[i, : width - real] == CHAR.pad_token_id).all()
        c = int(batch.completion_mask[i].sum())
        # Completion targets are exactly the trailing c columns; everything before is prompt or padding.
        assert batch.completion_mask[i, width - 1 - c :].all() and not batch.completion_mask[i, : width - 1 - c].any()
    assert batch.completion_lengths.tolist() == [len(_completion(batch, i)) for i in range(n)]


def test_per_row_metadata() -> None:
    batch, _ = build_learner_batch(POOL, 1, BPE, encode_b)
    assert batch.groups.tolist() == [t.prompt_index for t in POOL]
    assert batch.sources.tolist() == [t.source for t in POOL]
    assert batch.rewards.tolist() == [t.reward for t in POOL]
    assert batch.truncated.tolist() == [t.truncated for t in POOL]
    torch.testing.assert_close(batch.source_logps, torch.tensor([t.source_logp for t in POOL]))
    assert batch.groups.dtype == batch.sources.dtype == torch.long


def test_eos_appended_only_for_rows_that_stopped() -> None:
    batch, _ = build_learner_batch(POOL, 1, BPE, encode_b)
    for i, traj in enumerate(POOL):
        ends_with_eos = _completion(batch, i)[-1] == BPE.eos_token_id
        assert ends_with_eos == (not traj.truncated)


def test_truncation_is_counted_not_silent() -> None:
    pool = [
        _traj(0, "What is 1 + 1?", "2" * 30, 0),
        _traj(0, "What is 1 + 1?", "2" * 30, 0, truncated=True),
        _traj(0, "What is 1 + 1?", "22", 0),
    ]
    free = len(BPE("2" * 30, add_special_tokens=False).input_ids)
    assert free > 4
    batch, stats = build_learner_batch(pool, 1, BPE, encode_b, max_completion_tokens=4)
    assert stats.truncated == 2
    assert [len(_completion(batch, i)) for i in range(2)] == [4, 4]
    assert len(_completion(batch, 2)) <= 4
    assert BPE.eos_token_id not in _completion(batch, 0)  # the cut removed the end of the response
    assert _completion(batch, 2)[-1] == BPE.eos_token_id
    with pytest.raises(ValueError, match="max_completion_tokens"):
        build_learner_batch(pool, 1, BPE, encode_b, max_completion_tokens=0)


def test_empty_cross_completion_dropped_unless_it_stopped() -> None:
    pool = [
        _traj(0, "What is 1 + 1?", "", 0, truncated=True, ids=[CHAR.bos_token_id] * 3),  # only specials, cut
        _traj(0, "What is 1 + 1?", "", 0),  # stopped immediately: an empty answer
        _traj(0, "What is 1 + 1?", "2", 1),
    ]
    batch, stats = build_learner_batch(pool, 1, BPE, encode_b)
    assert stats.dropped == 1 and batch.rows == [1, 2] and len(batch) == 2
    assert _completion(batch, 0) == [BPE.eos_token_id]
    assert stats.cross_rows == 1 and stats.self_rows == 1


def test_special_token_text_is_not_parsed_as_a_special_token() -> None:
    text = "it is 2<eos> really <pad>"
    pool = [_traj(0, "What is 1 + 1?", text, 1, ids=[5])]
    batch, stats = build_learner_batch(pool, 0, CHAR, encode_a)
    ids = _completion(batch, 0)
    assert ids.count(CHAR.eos_token_id) == 1 and ids[-1] == CHAR.eos_token_id
    assert CHAR.pad_token_id not in ids
    assert CHAR.decode(ids[:-1]) == text and stats.lossy == 0


def test_lossy_retokenisation_is_counted() -> None:
    pool = [_traj(0, "What is 1 + 1?", "deux: 2 — é", 1)]  # byte-level BPE has it; the char vocab does not
    _, stats = build_learner_batch(pool, 0, CHAR, encode_a)
    assert stats.lossy == 1
    _, stats = build_learner_batch(pool, 1, BPE, encode_b)
    assert stats.lossy == 0


def test_stats_means() -> None:
    _, stats = build_learner_batch(POOL, 0, CHAR, encode_a)
    self_lengths = [len(t.completion_ids) for t in POOL if t.source == 0]
    assert stats.mean_tokens_self == pytest.approx(sum(self_lengths) / len(self_lengths))
    cross = [len(t.completion) + (not t.truncated) for t in POOL if t.source == 1]  # one char = one token
    assert stats.mean_tokens_cross == pytest.approx(sum(cross) / len(cross))
    assert set(stats.as_dict()) >= {"self_rows", "cross_rows", "truncated", "dropped"}
    assert isinstance(stats, RetokenizeStats)


def test_select_gives_trimmed_sub_batches() -> None:
    batch, _ = build_learner_batch(POOL, 0, CHAR, encode_a)
    longest = int(batch.attention_mask.sum(1).argmax())
    short = [i for i in range(len(batch)) if i != longest][:2]
    sub = batch.select(short)
    assert sub.rows == [batch.rows[i] for i in short]
    assert sub.input_ids.shape[1] < batch.input_ids.shape[1]
    assert sub.attention_mask[:, 0].any()  # no all-padding leading column left
    assert sub.completion_mask.shape == (2, sub.input_ids.shape[1] - 1)
    for j, i in enumerate(short):
        assert _completion(sub, j) == _completion(batch, i)
        assert _prompt(sub, j) == _prompt(batch, i)
    for name in ("source_logps", "is_self", "sources", "groups", "rewards", "truncated"):
        assert torch.equal(getattr(sub, name), getattr(batch, name)[short])
    same = batch.select(torch.arange(len(batch)))
    assert torch.equal(same.input_ids, batch.input_ids) and same.rows == batch.rows


def test_empty_pool() -> None:
    batch, stats = build_learner_batch([], 0, CHAR, encode_a)
    assert len(batch) == 0 and batch.rows == [] and stats.self_rows == stats.cross_rows == 0


def test_trajectory_stores_tuples() -> None:
    t = Trajectory(0, "p", "q", "a", 0, -1.0, 1.0, False, [1, 2], [3])  # type: ignore[arg-type]
    assert t.completion_ids == (1, 2) and t.prompt_ids == (3,)


def test_end_to_end_self_ratio_is_one_and_cross_rows_score() -> None:
    """Sample with two different models, pool, rebuild each learner's batch: the learner's recomputed
    length-normalised log-prob of its own responses equals the rollout-time one (ratio exp(0) = 1)."""
    torch.manual_seed(0)
    models = [
        GPT2LMHeadModel(GPT2Config(vocab_size=len(CHAR), n_positions=128, n_embd=32, n_layer=2, n_head=2)),
        LlamaForCausalLM(
            LlamaConfig(
                vocab_size=len(BPE),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=128,
            )
        ),
    ]
    problems = ["What is 3 + 4?", "What is 10 + 25?", "What is 8 + 1?"]
    gen = torch.Generator().manual_seed(0)
    pool: list[Trajectory] = []
    for agent, (model, tok, encode) in enumerate(zip(models, TOKENIZERS, ENCODERS, strict=True)):
        prompts = [encode(p) for p in problems for _ in range(2)]
        samples = sample(model, tok, prompts, SamplingParams(temperature=2.0, max_new_tokens=12), generator=gen)
        for k, s in enumerate(samples):
            pool.append(
                Trajectory.from_sample(
                    s,
                    prompt_index=k // 2,
                    problem_id=str(k // 2),
                    prompt=problems[k // 2],
                    source=agent,
                    reward=float(k % 2),
                )
            )
    for learner, (model, tok, encode) in enumerate(zip(models, TOKENIZERS, ENCODERS, strict=True)):
        batch, stats = build_learner_batch(pool, learner, tok, encode)
        assert stats.self_rows == stats.cross_rows == 6 and stats.dropped == 0
        model.eval()
        with torch.no_grad():
            for part in (batch, batch.select([0, 7, 11])):
                logps = completion_logps(
                    model, part.input_ids, part.attention_mask, part.completion_mask, temperature=2.0
                )
                mean = masked_mean(logps, part.completion_mask)
                assert torch.isfinite(mean).all()
                torch.testing.assert_close(mean[part.is_self], part.source_logps[part.is_self], atol=1e-5, rtol=0)
