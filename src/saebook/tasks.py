"""Logit-difference tasks: clean and corrupted prompts whose answers differ.

A task is what attribution, patching and circuit chapters measure: the logit difference
between the right answer and a wrong one at the last position. Profiles choose a task their
model solves (IOI on gpt2/gemma; code recall on the tiny model, which does not learn IOI).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

__all__ = ["LogitDiffTask", "make_task", "ioi_task", "token_strings"]


@dataclass
class LogitDiffTask:
    """Aligned clean/corrupted prompts (same length) with answer and wrong-answer token ids.

    On the clean prompt ``answer`` is right and ``wrong`` is the distractor; the corrupted
    prompt changes the context so that ``wrong`` becomes the right answer. ``setup``,
    ``carried`` and ``corruption`` are the words a chapter uses for the task in prose
    (what the prompt asks, what the answer token is, what the corrupted prompt changes), so
    no chapter has to know which task its profile runs.
    """

    name: str
    description: str
    clean: Int[Tensor, "batch seq"]
    corrupted: Int[Tensor, "batch seq"]
    answer: Int[Tensor, " batch"]
    wrong: Int[Tensor, " batch"]
    prompts: list[str]
    setup: str = ""  # a sentence: what the prompt asks of the model
    carried: str = "the answer"  # a noun phrase: what the answer token is
    corruption: str = ""  # a verb phrase: what the corrupted prompt changes

    def logit_diff(
        self, logits: Float[Tensor, "rows seq vocab"], repeat: int = 1
    ) -> Float[Tensor, " rows"]:
        """Logit of ``answer`` minus logit of ``wrong`` at the last position, per row.

        ``repeat``: the rows are the task's prompts stacked ``repeat`` times (batched edits).
        """
        if logits.shape[0] != repeat * self.answer.shape[0]:
            raise ValueError(
                f"logits must have {repeat} x {self.answer.shape[0]} rows, got {logits.shape[0]}"
            )
        last = logits[:, -1]
        rows = torch.arange(last.shape[0], device=last.device)
        return last[rows, self.answer.repeat(repeat)] - last[rows, self.wrong.repeat(repeat)]

    def to(self, device: str | torch.device) -> LogitDiffTask:
        """The same task with its tensors on ``device``."""
        return replace(
            self,
            clean=self.clean.to(device),
            corrupted=self.corrupted.to(device),
            answer=self.answer.to(device),
            wrong=self.wrong.to(device),
        )


def token_strings(model: HookedTransformer, text: str, prepend_bos: bool = True) -> list[str]:
    """The tokens ``model`` splits ``text`` into, as strings (BOS first if ``prepend_bos``).

    Computed with ``to_tokens`` and decoded token by token: ``model.to_str_tokens(text)``
    itself fails (``int()`` of a list) whenever the tokenizer's ``name_or_path`` contains
    "gemma" (TransformerLens 3.x reshapes a string's tokens to a column for gemma), which is
    gemma-2-2b's and also any local tokenizer under a folder named like it.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return model.to_str_tokens(model.to_tokens(text, prepend_bos=prepend_bos)[0])


def _single_token(model: HookedTransformer, text: str, arg: str) -> int:
    pieces = token_strings(model, text, prepend_bos=False)
    if len(pieces) != 1:
        raise ValueError(
            f"each {arg} must be a single token for the model, got {text!r} "
            f"({len(pieces)} tokens: {pieces})"
        )
    return model.to_single_token(text)


def make_task(
    model: HookedTransformer,
    name: str,
    description: str,
    items: list[tuple[str, str, str, str]],
    *,
    setup: str = "",
    carried: str = "the answer",
    corruption: str = "",
) -> LogitDiffTask:
    """Tokenise ``(clean, corrupted, answer, wrong)`` string tuples into a task.

    Answers are single tokens (e.g. ``" Mary"``); every clean prompt must tokenise to the same
    length as its corrupted twin, and all prompts to one length, so positions align.
    ``setup``, ``carried`` and ``corruption`` are the task's words for prose (see
    :class:`LogitDiffTask`).
    """
    if not items:
        raise ValueError(
            f"items must hold at least one (clean, corrupted, answer, wrong) tuple, got {items!r}"
        )
    for i, item in enumerate(items):
        if not (
            isinstance(item, tuple) and len(item) == 4 and all(isinstance(s, str) for s in item)
        ):
            raise ValueError(
                f"items[{i}] must be a (clean, corrupted, answer, wrong) tuple of str, got {item!r}"
            )
        if not item[0].strip() or not item[1].strip():
            raise ValueError(f"items[{i}] prompts must be non-empty text, got {item[:2]!r}")
    clean = model.to_tokens([c for c, _, _, _ in items])
    corrupted = model.to_tokens([x for _, x, _, _ in items])
    lengths = {len(token_strings(model, c)) for c, _, _, _ in items}
    lengths |= {len(token_strings(model, x)) for _, x, _, _ in items}
    if len(lengths) != 1:
        raise ValueError(
            f"all prompts must have the same token length, got lengths {sorted(lengths)}"
        )
    answer = torch.tensor([_single_token(model, a, "answer") for _, _, a, _ in items])
    wrong = torch.tensor([_single_token(model, w, "wrong") for _, _, _, w in items])
    return LogitDiffTask(
        name, description, clean, corrupted, answer, wrong, [c for c, *_ in items],
        setup=setup, carried=carried, corruption=corruption,
    )  # fmt: skip


_IOI_NAMES = ["Mary", "John", "Tom", "James", "Anna", "Paul", "Sarah", "David", "Laura", "Mark"]
_IOI_TEMPLATE = "When {a} and {b} went to the store, {b} gave a drink to"


def ioi_task(model: HookedTransformer, n: int = 16, seed: int = 0) -> LogitDiffTask:
    """Indirect-object identification: "When Mary and John ..., John gave a drink to" -> Mary.

    The corrupted prompt swaps which name repeats, so the other name becomes the answer.
    Names are kept only if they are single tokens with a leading space for ``model``.
    """
    rng = random.Random(seed)
    names = [n_ for n_ in _IOI_NAMES if len(token_strings(model, " " + n_, prepend_bos=False)) == 1]
    if len(names) < 2:
        raise ValueError("the model's tokenizer has fewer than two single-token IOI names")
    items = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        clean, corrupted = _IOI_TEMPLATE.format(a=a, b=b), _IOI_TEMPLATE.format(a=b, b=a)
        items.append((clean, corrupted, " " + a, " " + b))
    return make_task(
        model, "ioi", "indirect-object identification (name mover)", items,
        setup="indirect-object identification: two people are named, one of them is named "
        "again as the giver, and the model must complete with the other one, the recipient",
        carried="the recipient's name",
        corruption="swaps which name is repeated, so the other name becomes the answer",
    )  # fmt: skip
