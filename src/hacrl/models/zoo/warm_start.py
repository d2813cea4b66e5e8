"""Training a zoo agent from its recipe: tokenizer, seeded model, supervised warm start, and its measurement.

The warm start is cross-entropy on the arithmetic task's reference solutions, on one thread with a fixed data
order, so a recipe builds bitwise the same weights on one kind of CPU. The accuracy recorded afterwards is measured
by the one evaluator (`hacrl.evaluator`) exactly as training-time evaluation measures it (same decoder, problems
and token limit), so a zoo agent's recorded warm start is the step-0 accuracy of a run that starts from it.

Conventions every consumer of these agents must follow (they are how the warm start trained them):

* The prompt is ``prompt_template.format(prompt=problem.prompt)``; prompt and completion are tokenized
  **separately** with ``add_special_tokens=False`` (no BOS) and concatenated, and the completion ends with
  the tokenizer's EOS token. Generation therefore starts right after the prompt's own tokens.
* Dropout is 0 everywhere, so train-mode and eval-mode log-probabilities agree (RL ratios rely on it).
* The tokenizers pad on the left (for batched generation); ``pad_token_id != eos_token_id``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from hacrl.models.tokenizers import build_char_tokenizer, train_bpe_tokenizer
from hacrl.models.zoo.recipes import Recipe
from hacrl.tasks.arithmetic import ArithmeticTask, reference_solution
from hacrl.tasks.base import Problem

MEASURE_MAX_NEW_TOKENS = 48
"""Token limit of the warm-start measurement: `training.max_new_tokens`' default, so the recorded accuracy is a
run's step-0 accuracy."""


def build_tokenizer(recipe: Recipe, task: ArithmeticTask) -> PreTrainedTokenizerBase:
    """The recipe's tokenizer: characters, or a byte-level BPE trained on rendered training examples."""
    if recipe.tokenizer == "char":
        return build_char_tokenizer()
    corpus = [
        recipe.prompt_template.format(prompt=p.prompt) + reference_solution(p)
        for p in task.train_problems()[:4000]
    ]
    return train_bpe_tokenizer(corpus, vocab_size=recipe.bpe_vocab_size)


def build_model(recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A randomly initialised model from the recipe (seed the global torch RNG first for determinism)."""
    common = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    if recipe.architecture == "gpt2":
        config = GPT2Config(
            n_positions=recipe.max_length, n_embd=recipe.hidden, n_layer=recipe.n_layers, n_head=recipe.heads,
            n_inner=recipe.intermediate, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common,
        )
        return GPT2LMHeadModel(config)
    config = LlamaConfig(
        hidden_size=recipe.hidden, intermediate_size=recipe.intermediate, num_hidden_layers=recipe.n_layers,
        num_attention_heads=recipe.heads, num_key_value_heads=recipe.kv_heads or recipe.heads,
        max_position_embeddings=recipe.max_length, attention_dropout=0.0, **common,
    )
    return LlamaForCausalLM(config)


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def encode_example(
    tokenizer: PreTrainedTokenizerBase, template: str, problem: Problem, completion: str
) -> tuple[list[int], list[int]]:
    """Token ids of prompt and completion (+EOS), tokenized separately exactly as generation sees them."""
    prompt_ids = tokenizer.encode(template.format(prompt=problem.prompt), add_special_tokens=False)
    completion_ids = [*tokenizer.encode(completion, add_special_tokens=False), tokenizer.eos_token_id]
    return prompt_ids, completion_ids


def warm_start(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    recipe: Recipe,
    task: ArithmeticTask,
    *,
    progress: bool = True,
    callback: Callable[[int, PreTrainedModel], None] | None = None,
) -> list[float]:
    """Cross-entropy on reference solutions (completion tokens and EOS only); returns per-step losses.

    Each example's kind is drawn from the recipe's mix, then a training problem of that kind; the data
    order comes from ``random.Random(seed)`` so it is reproducible. AdamW with a linear warmup (the lr is high
    for such short runs) and cosine decay to 10% over `Recipe.schedule_steps` (default: all the steps, so the
    last steps settle instead of bouncing; longer: the warm start stops partway through the decay).
    `callback(steps_done, model)` runs after every step (calibration draws learning curves with it; it
    must leave the model in train mode).
    """
    from tqdm.auto import tqdm

    rng = random.Random(f"zoo:{recipe.seed}:data")
    by_kind: dict[str, list[Problem]] = {}
    for p in task.train_problems():
        by_kind.setdefault(p.kind, []).append(p)
    weights = recipe.mix_weights
    kinds = [k for k in weights if weights[k] > 0 and by_kind.get(k)]
    if not kinds:
        raise ValueError(f"recipe {recipe.name!r}: the task has no training problems of kinds {list(weights)}")
    cache: dict[str, tuple[list[int], list[int]]] = {}

    def example(p: Problem) -> tuple[list[int], list[int]]:
        if p.id not in cache:
            cache[p.id] = encode_example(tokenizer, recipe.prompt_template, p, reference_solution(p))
        return cache[p.id]

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "norm" in name or "ln_" in name else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr, betas=(0.9, 0.98),
    )

    schedule = recipe.schedule_steps or recipe.steps

    def lr_at(step: int) -> float:
        if step < recipe.warmup_steps:
            return recipe.lr * (step + 1) / recipe.warmup_steps
        frac = (step - recipe.warmup_steps) / max(schedule - recipe.warmup_steps, 1)
        return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    model.train()
    losses: list[float] = []
    bar = tqdm(range(recipe.steps), desc=f"warm start {recipe.name}", disable=not progress, leave=False)
    for step in bar:
        batch_kinds = rng.choices(kinds, weights=[weights[k] for k in kinds], k=recipe.batch_size)
        examples = [example(rng.choice(by_kind[k])) for k in batch_kinds]
        input_ids, labels, attention = _collate(examples, tokenizer.pad_token_id)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        logits = model(input_ids=input_ids, attention_mask=attention).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if callback is not None:
            callback(step + 1, model)
    bar.close()
    model.eval()
    return losses


def _collate(
    examples: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded batch; labels are -100 on prompt and padding so only the completion is learned."""
    width = max(len(p) + len(c) for p, c in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (p, c) in enumerate(examples):
        ids = p + c
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, len(p) : len(ids)] = torch.tensor(c)
        attention[i, : len(ids)] = 1
    return input_ids, labels, attention


def measure_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, recipe: Recipe,
                     problems: Sequence[Problem], task: ArithmeticTask) -> dict[str, float]:
    """Greedy accuracy overall and per kind (keys ``"overall"`` and each kind, 4 places) through the one evaluator:
    the in-process backend's decoder, prompts rendered with the recipe's template, the trainer's token limit."""
    from hacrl.evaluator import decode, score_completions
    from hacrl.rollout.backend import InProcessBackend
    from hacrl.rollout.sampler import SamplingParams

    prompts = [tokenizer.encode(recipe.prompt_template.format(prompt=p.prompt), add_special_tokens=False)
               for p in problems]
    backend = InProcessBackend(model, tokenizer, [tokenizer.eos_token_id])
    samples = decode(backend, prompts, SamplingParams(greedy=True, max_new_tokens=MEASURE_MAX_NEW_TOKENS))
    scored = score_completions(problems, samples, task.score)
    by_kind = scored.per_kind or {problems[0].kind: float(scored.accuracy or 0.0)} if problems else {}
    return {"overall": round(float(scored.accuracy or 0.0), 4), **{k: round(v, 4) for k, v in by_kind.items()}}
