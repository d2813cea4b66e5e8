"""Tokenizers for the built-in tiny agents, built locally (no hub).

Two deliberately different tokenizers so the zoo exercises HACPO's "heterogeneous model" case
(docs/method.md §1): a character tokenizer (one token per printable ASCII character) and a byte-level BPE
tokenizer trained on the task's own text. Both are real `tokenizers` objects wrapped in
`PreTrainedTokenizerFast`, saved and loaded in Hugging Face format like any hub tokenizer, so the code
path that serves them also serves real models.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]

# Printable ASCII without the vertical tab / form feed, so any ASCII text round-trips exactly.
_CHARACTERS = [c for c in string.printable if c not in "\x0b\x0c\r"]


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        padding_side="left", clean_up_tokenization_spaces=False,
    )


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of printable ASCII (plus specials): decode(encode(text)) == text."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + _CHARACTERS)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return _wrap(tokenizer)


def train_bpe_tokenizer(corpus: Iterable[str], vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2/Llama-3 style) trained on `corpus`; every byte is in the base alphabet,
    so any text round-trips, and merges make frequent strings (numbers, "Answer:") single tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return _wrap(tokenizer)
