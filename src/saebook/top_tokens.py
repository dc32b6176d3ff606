"""Short text summaries of latents from their top examples, for tables and hover text.

:class:`~saebook.latent_stats.LatentStats` keeps, per latent, the positions where it fired
hardest. Chapters that show many latents at once (split trees, maps of the dictionary,
meta-latent groups) need one short string per latent: the most frequent tokens among those
top examples (:func:`top_tokens`), or one example in context (:func:`context_snippet`).

Chapters: deeper/01, deeper/02, deeper/03, deeper/04
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from jaxtyping import Int
from sae_lens import HookedSAETransformer
from torch import Tensor

from saebook.latent_stats import Example, LatentStats

__all__ = ["top_tokens", "context_snippet"]


def _token_text(model: HookedSAETransformer, token: int) -> str:
    return model.tokenizer.decode([int(token)]).replace("\n", "↵")


def top_tokens(
    model: HookedSAETransformer,
    tokens: Int[Tensor, "rows seq"],
    stats: LatentStats,
    latents: Iterable[int],
    n_examples: int = 20,
    n_tokens: int = 4,
) -> dict[int, str]:
    """latent -> its ``n_tokens`` most frequent tokens among its ``n_examples`` top examples.

    Tokens are written ``'tok'×count``, most frequent first, joined by spaces; a latent that
    never fired maps to ``"(dead)"``. ``stats`` must come from ``latent_stats`` on ``tokens``.
    """
    if stats.n_rows != tokens.shape[0]:
        raise ValueError(
            f"stats must be computed on tokens ({tokens.shape[0]} rows), got stats over "
            f"{stats.n_rows} rows"
        )
    rows = tokens.cpu()
    out: dict[int, str] = {}
    for latent in latents:
        latent = int(latent)
        examples = stats.top_examples(latent, n_examples)
        if not examples:
            out[latent] = "(dead)"
            continue
        counts = Counter(int(rows[e.row, e.pos]) for e in examples)
        out[latent] = " ".join(
            f"{_token_text(model, t)!r}×{c}" for t, c in counts.most_common(n_tokens)
        )
    return out


def context_snippet(
    model: HookedSAETransformer,
    tokens: Int[Tensor, "rows seq"],
    example: Example,
    before: int = 8,
    after: int = 2,
) -> str:
    """The text around ``example`` with its own token in ``[[ ]]``: ``before`` tokens before it
    and ``after`` tokens after it, in the same row."""
    if not 0 <= example.row < tokens.shape[0] or not 0 <= example.pos < tokens.shape[1]:
        raise IndexError(
            f"example must lie inside tokens {tuple(tokens.shape)}, got row {example.row}, "
            f"pos {example.pos}"
        )
    row = tokens[example.row].cpu().tolist()
    left = "".join(_token_text(model, t) for t in row[max(0, example.pos - before) : example.pos])
    right = "".join(_token_text(model, t) for t in row[example.pos + 1 : example.pos + 1 + after])
    return f"{left}[[{_token_text(model, row[example.pos])}]]{right}"
