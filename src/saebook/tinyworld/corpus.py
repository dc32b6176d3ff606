"""Packing the world's stories into fixed-length token rows, with or without labels.

Every row starts with ``<|endoftext|>`` (the BOS token, id 0), followed by
the tokens of one story after another, separated by ``<|endoftext|>``.  A row
is filled to exactly ``seq_len`` tokens; the story that overflows it is cut
and the next row starts with a fresh story.  Rows depend only on
``(seed, seq_len)`` and the tokenizer, and the first ``n`` rows of a larger
request are the rows of a smaller one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch
from transformers import PreTrainedTokenizerBase

from saebook.validate import check_int

from .grammar import generate_story
from .labels import LABELS, label_tokens
from .tokenizer import load_tokenizer

_STORY_CHUNK = 64
"""Stories tokenized per batch call of the tokenizer."""


def _resolve_tokenizer(tokenizer: PreTrainedTokenizerBase | None) -> PreTrainedTokenizerBase:
    """Return ``tokenizer``, or the shipped tokenizer when it is ``None``."""
    tok = load_tokenizer() if tokenizer is None else tokenizer
    if getattr(tok, "bos_token_id", None) is None:
        raise ValueError(
            f"tokenizer must define a bos_token (<|endoftext|>), got {type(tok).__name__} "
            "with bos_token_id=None"
        )
    return tok


def _story_ids(seed: int, tokenizer: PreTrainedTokenizerBase) -> Iterator[list[int]]:
    """Yield the token ids of the stories of ``seed``, one story after another, forever."""
    rng = random.Random(seed)
    while True:
        stories = [generate_story(rng) for _ in range(_STORY_CHUNK)]
        yield from tokenizer(stories, add_special_tokens=False)["input_ids"]


def corpus_rows(
    n_seqs: int,
    seq_len: int,
    seed: int = 0,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> torch.Tensor:
    """Return ``n_seqs`` rows of ``seq_len`` token ids packed from the stories of ``seed``.

    Each row is ``BOS story [EOT story ...]`` cut to exactly ``seq_len``
    tokens (BOS and EOT are both ``<|endoftext|>``).  ``tokenizer`` defaults
    to the shipped one.  Returns an int64 tensor of shape ``(n_seqs, seq_len)``.
    """
    check_int("n_seqs", n_seqs, 1)
    check_int("seq_len", seq_len, 2)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    tok = _resolve_tokenizer(tokenizer)
    bos = int(tok.bos_token_id)
    stream = _story_ids(seed, tok)
    rows: list[list[int]] = []
    for _ in range(n_seqs):
        row = [bos]
        while True:
            row.extend(next(stream))
            if len(row) >= seq_len:
                break
            row.append(bos)
            if len(row) >= seq_len:
                break
        rows.append(row[:seq_len])
    return torch.tensor(rows, dtype=torch.int64)


def token_strings(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Return the decoded string of every token id of ``tokenizer`` (index = id)."""
    return [
        tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in range(len(tokenizer))
    ]


def labeled_batch(
    n_seqs: int,
    seq_len: int,
    seed: int = 0,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return the rows of :func:`corpus_rows` and their ground-truth labels.

    The labels come from :func:`~.labels.label_tokens` applied to each row's
    decoded token strings: a dict mapping every name in :data:`~.labels.LABELS`
    to a bool tensor of the tokens' shape.  BOS/EOT tokens have every label
    False.
    """
    check_int("n_seqs", n_seqs, 1)
    check_int("seq_len", seq_len, 2)
    tok = _resolve_tokenizer(tokenizer)
    tokens = corpus_rows(n_seqs, seq_len, seed=seed, tokenizer=tok)
    strings = token_strings(tok)
    flags: dict[str, list[list[bool]]] = {name: [] for name in LABELS}
    for row in tokens.tolist():
        row_labels = label_tokens([strings[i] for i in row])
        for name in LABELS:
            flags[name].append(row_labels[name])
    labels = {name: torch.tensor(rows, dtype=torch.bool) for name, rows in flags.items()}
    return tokens, labels
