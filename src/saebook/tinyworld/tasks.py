"""Logit-difference tasks the tiny model solves (it does not learn IOI).

Code recall: a story states a secret code, then someone types it; the model must copy the
code's last digit from the earlier mention. The corrupted prompt states a different last
digit, so the right answer flips. Solving it takes an induction-style copy.
"""

from __future__ import annotations

import random

from transformer_lens import HookedTransformer

from saebook.tasks import LogitDiffTask, make_task, token_strings
from saebook.tinyworld.labels import FEMALE_NAMES, MALE_NAMES

__all__ = ["code_recall_task"]

_TEMPLATE = "The box had a secret lock. The code was {code}. {name} typed {prefix}"


def code_recall_task(model: HookedTransformer, n: int = 16, seed: int = 0) -> LogitDiffTask:
    """``n`` code-recall prompts: "... The code was 4 7 2. Lily typed 4 7" -> " 2"."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    names = [
        name
        for name in FEMALE_NAMES + MALE_NAMES
        if len(token_strings(model, " " + name, prepend_bos=False)) == 1
    ]
    if not names:
        raise ValueError("the model's tokenizer has no single-token character name")
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        digits = [str(rng.randint(0, 9)) for _ in range(3)]
        other = rng.choice([d for d in "0123456789" if d != digits[-1]])
        name = rng.choice(names)
        prefix = " ".join(digits[:-1])
        clean = _TEMPLATE.format(code=" ".join(digits), name=name, prefix=prefix)
        corrupted = _TEMPLATE.format(code=" ".join(digits[:-1] + [other]), name=name, prefix=prefix)
        items.append((clean, corrupted, " " + digits[-1], " " + other))
    return make_task(
        model, "code_recall", "recall the last digit of a secret code", items,
        setup="code recall: a story states a secret code and someone types it again, so the "
        "model must copy the code's last digit",
        carried="the digit to copy",
        corruption="states a different last digit",
    )  # fmt: skip
