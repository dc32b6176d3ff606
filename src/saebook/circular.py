"""Circular features: cyclic concepts (days, months) on a circle in the span of SAE latents.

Engels et al. (2024, "Not all language model features are linear") found that language
models represent days of the week and months of the year on circles, and that an SAE cuts
such a circle into a handful of latents. This module follows their recipe:

* :func:`cycle_contexts` gathers token positions that hold a word of a cycle, with its place
  in the cycle: on the tiny profile, every day or month word of a corpus sample (their
  labels come with the tiny world); on hub profiles, the published arithmetic prompts
  ("Let's do some day of the week math. Two days from Monday is");
* :func:`cycle_activations` reads the activations there;
* :func:`cycle_latents` picks the latents that fire on those words and whose activation
  depends on which word it is;
* :func:`span_reconstruction` rebuilds each activation from those latents alone;
* :func:`fit_circle` projects onto the top two principal components and measures how well
  the angle around the origin follows the cycle (the Fisher-Lee circular correlation, with
  a permutation baseline); :func:`circle_figure` draws it.

Chapters: deeper/02
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from sae_lens import SAE
from torch import Tensor

from saebook.hooks import stop_layer
from saebook.tinyworld.labels import CYCLES
from saebook.validate import check_tensor

__all__ = [
    "CYCLE_WORDS",
    "CycleContexts",
    "CircleFit",
    "cycle_contexts",
    "cycle_activations",
    "word_embeddings",
    "cycle_latents",
    "span_reconstruction",
    "circular_correlation",
    "fit_circle",
    "circle_figure",
]

CYCLE_WORDS: dict[str, tuple[str, ...]] = CYCLES
"""Cyclic concepts in their order (the word after the last one is the first): the tiny world's
lexicon, whose day and month names are the English ones every profile reads."""

#: Engels et al.'s arithmetic prompts; the cycle word is the last token of ``{word}``.
HUB_PROMPTS: dict[str, str] = {
    "day": "Let's do some day of the week math. {k} days from {word} is",
    "month": "Let's do some calendar math. {k} months from {word} is",
}
_COUNT_WORDS = ("One", "Two", "Three", "Four", "Five", "Six", "Seven")


@dataclass
class CycleContexts:
    """Rows of tokens and the positions in them that hold a word of one cycle.

    ``rows[row[i], pos[i]]`` is a cycle word whose place in the cycle is ``value[i]``
    (0 for the first word, e.g. Monday).
    """

    concept: str
    words: tuple[str, ...]
    rows: Int[Tensor, "n_rows seq"]
    row: Int[Tensor, " n"]
    pos: Int[Tensor, " n"]
    value: Int[Tensor, " n"]


def _word_token_ids(tokenizer, words: tuple[str, ...]) -> list[tuple[int, int]]:
    """(token id, place in the cycle) of each form of each word, `` Monday`` then ``Monday``,
    that the tokenizer encodes as one token."""
    out = []
    for value, word in enumerate(words):
        for variant in (" " + word, word):
            ids = tokenizer.encode(variant, add_special_tokens=False)
            if len(ids) == 1:
                out.append((ids[0], value))
    return out


def _check_values(value: Tensor, n_values: int) -> Tensor:
    """``value`` as a CPU long tensor, after checking it lies in ``[0, n_values)``."""
    value = value.long().cpu()
    if int(value.min()) < 0 or int(value.max()) >= n_values:
        raise ValueError(f"value must lie in [0, {n_values}), got {value.min()}..{value.max()}")
    return value


def _check_concept(concept: object) -> tuple[str, ...]:
    if concept not in CYCLE_WORDS:
        raise ValueError(f"concept must be one of {sorted(CYCLE_WORDS)}, got {concept!r}")
    return CYCLE_WORDS[concept]  # type: ignore[index]


def cycle_contexts(profile, concept: str, n_rows: int = 128, seed: int = 0) -> CycleContexts:
    """Token positions holding a word of the cycle ``concept`` ("day" or "month").

    On a profile with ground-truth labels (the tiny world) the rows are ``n_rows`` corpus
    rows and the positions are every token labelled ``concept``. Otherwise the rows are
    Engels et al.'s prompts, one per (word, step of 1..7) pair, and the position is the
    word's token; ``n_rows`` and ``seed`` are then unused.
    """
    words = _check_concept(concept)
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 1:
        raise ValueError(f"n_rows must be a positive int, got {n_rows!r}")
    model = profile.model
    labels = profile.labeled_tokens(n_rows, seed=seed, device=profile.device)
    if labels is not None:
        rows = profile.tokens(n_rows, seed=seed)
        mask = labels[concept]
        row, pos = torch.nonzero(mask, as_tuple=True)
        lookup = dict(_word_token_ids(model.tokenizer, words))
        toks = rows[row, pos].tolist()
        keep = [i for i, t in enumerate(toks) if t in lookup]  # one-token words only
        row, pos = row[keep], pos[keep]
        value = torch.tensor([lookup[toks[i]] for i in keep], dtype=torch.long)
    else:
        template = HUB_PROMPTS[concept]
        prompts = [(template.format(k=k, word=w), w) for w in words for k in _COUNT_WORDS]
        values = [v for v in range(len(words)) for _ in _COUNT_WORDS]
        rows, pos = _prompt_rows(model, prompts)
        row = torch.arange(len(prompts))
        value = torch.tensor(values, dtype=torch.long)
    return CycleContexts(
        concept=concept,
        words=words,
        rows=rows.to(profile.device),
        row=row.to(profile.device),
        pos=pos.to(profile.device),
        value=value.to(profile.device),
    )


def _prompt_rows(model, prompts: list[tuple[str, str]]) -> tuple[Tensor, Tensor]:
    """Tokenize each (text, word) pair's text (BOS first, right-padded) and find the last
    token of its word."""
    rows = model.to_tokens([text for text, _ in prompts], prepend_bos=True, padding_side="right")
    pos = []
    for text, word in prompts:
        prefix = text[: text.index(word) + len(word)]
        pos.append(int(model.to_tokens(prefix, prepend_bos=True).shape[1]) - 1)
    return rows, torch.tensor(pos)


@torch.no_grad()
def cycle_activations(
    model, hook: str, ctx: CycleContexts, batch_size: int = 32
) -> Float[Tensor, "n d"]:
    """Activations at ``hook`` on the cycle's words of ``ctx``, one row per word occurrence.

    Runs ``ctx.rows`` through ``model`` in batches of ``batch_size`` rows, stopping after the
    hook's layer.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    words = []
    for start in range(0, ctx.rows.shape[0], batch_size):
        stop = start + batch_size
        _, cache = model.run_with_cache(
            ctx.rows[start:stop], names_filter=hook, stop_at_layer=stop_layer(hook)
        )
        sel = (ctx.row >= start) & (ctx.row < stop)
        words.append(cache[hook][ctx.row[sel] - start, ctx.pos[sel]])
    return torch.cat(words)


def word_embeddings(
    model, words: tuple[str, ...]
) -> tuple[Float[Tensor, "k d_model"], Int[Tensor, " k"]]:
    """The token-embedding rows (``W_E``) of the cycle's ``words`` and their places in it.

    A word is looked up as its own token after a space (`` Monday``), else without one;
    words that are several tokens for this tokenizer are left out.
    """
    rows, values = [], []
    for token, value in _word_token_ids(model.tokenizer, words):
        if value not in values:  # the spaced form comes first
            rows.append(token)
            values.append(value)
    if not rows:
        raise ValueError(f"words must include a single-token word for this model, got {words}")
    return model.W_E[torch.tensor(rows)].detach(), torch.tensor(values)


def cycle_latents(
    concept_acts: Float[Tensor, "n d_sae"],
    value: Int[Tensor, " n"],
    n_values: int,
    min_share: float = 0.05,
    min_eta: float = 0.5,
) -> Int[Tensor, " k"]:
    """Latents that fire on the cycle's words and whose activation says *which* word it is.

    A latent is kept when it fires (activation > 0) on at least ``min_share`` of the
    ``concept_acts`` rows and the word explains at least ``min_eta`` of its activation's
    variance over them (the correlation ratio eta squared: between-word over total sum of
    squares). A latent that fires alike on every day carries no position on the circle and is
    left out. Returns the indices, strongest eta squared first.
    """
    check_tensor("concept_acts", concept_acts, finite=True)
    if concept_acts.ndim != 2 or value.shape != (concept_acts.shape[0],):
        raise ValueError(
            "concept_acts must be 2-D (positions, latents) with one value per row, got "
            f"{tuple(concept_acts.shape)} and {tuple(value.shape)}"
        )
    if not 0 < min_share <= 1 or not 0 < min_eta <= 1:
        raise ValueError(f"min_share and min_eta must be in (0, 1], got {min_share} and {min_eta}")
    acts = concept_acts.detach().double().cpu()
    value = _check_values(value, n_values)
    grand = acts.mean(0)
    counts = torch.bincount(value, minlength=n_values).double()
    sums = torch.zeros(n_values, acts.shape[1], dtype=torch.double).index_add_(0, value, acts)
    means = sums / counts.clamp(min=1)[:, None]
    between = (counts[:, None] * (means - grand) ** 2).sum(0)
    total = ((acts - grand) ** 2).sum(0)
    eta = torch.where(total > 0, between / total.clamp(min=1e-30), torch.zeros_like(total))
    share = (acts > 0).double().mean(0)
    keep = torch.nonzero((share >= min_share) & (eta >= min_eta)).flatten()
    return keep[eta[keep].argsort(descending=True)]


def span_reconstruction(
    sae: SAE, acts: Float[Tensor, "n d_in"], latents: Int[Tensor, " k"]
) -> Float[Tensor, "n d_in"]:
    """Each activation rebuilt from the chosen ``latents`` only: ``f(x)[:, S] @ W_dec[S]``.

    ``f`` is the SAE's encoder; the decoder bias and every other latent are left out, so
    the result lies in the span of those latents' decoder directions.
    """
    check_tensor("acts", acts, finite=True)
    if acts.ndim != 2 or acts.shape[1] != sae.cfg.d_in:
        raise ValueError(f"acts must have shape (n, {sae.cfg.d_in}), got {tuple(acts.shape)}")
    latents = torch.as_tensor(latents, dtype=torch.long, device=sae.W_dec.device)
    in_range = latents.numel() == 0 or (
        0 <= int(latents.min()) and int(latents.max()) < sae.cfg.d_sae
    )
    if latents.ndim != 1 or not in_range:
        raise ValueError(
            f"latents must be a 1-D tensor of indices in [0, {sae.cfg.d_sae}), "
            f"got {latents.tolist()}"
        )
    with torch.no_grad():
        feats = sae.encode(acts.to(sae.W_dec.dtype))
        return feats[:, latents] @ sae.W_dec[latents]


def circular_correlation(alpha: Float[Tensor, " n"], beta: Float[Tensor, " n"]) -> float:
    """Fisher and Lee's (1983) circular correlation of two sets of angles (radians).

    Computed as ``det(C_ab) / sqrt(det(C_aa) det(C_bb))`` where ``C_ab`` is the mean of
    ``u_a u_b^T`` over the sample and ``u = (cos, sin)``: +1 when ``beta`` is ``alpha``
    turned by a constant, -1 when it is ``alpha`` reflected, near 0 for unrelated angles.
    """
    if alpha.shape != beta.shape or alpha.ndim != 1 or alpha.numel() < 3:
        raise ValueError(
            "alpha and beta must be 1-D with the same length >= 3, got "
            f"{tuple(alpha.shape)} and {tuple(beta.shape)}"
        )
    a = torch.stack([alpha.cos(), alpha.sin()], 1).double()
    b = torch.stack([beta.cos(), beta.sin()], 1).double()
    n = a.shape[0]
    cross = torch.linalg.det(a.T @ b / n)
    scale = torch.sqrt(torch.linalg.det(a.T @ a / n) * torch.linalg.det(b.T @ b / n))
    return float(cross / scale) if float(scale) > 0 else float("nan")


@dataclass
class CircleFit:
    """Activations of a cycle's words in the plane of their top two principal components.

    ``xy`` holds the points, ``value`` their place in the cycle and ``n_values`` the cycle's
    length. ``variance_2d`` is the share of variance those two components explain;
    ``correlation`` the absolute circular correlation between each point's angle around the
    centre and its place in the cycle (``2 pi value / n_values``); ``baseline`` the mean and
    ``p_value`` the tail share (with +1) of that statistic under shuffled values;
    ``order_agreement`` the share of the cycle's steps (value -> value + 1) whose centroids
    are neighbours going round the circle.
    """

    xy: np.ndarray
    value: np.ndarray
    n_values: int
    variance_2d: float
    correlation: float
    baseline: float
    p_value: float
    order_agreement: float


def fit_circle(
    points: Float[Tensor, "n d"],
    value: Int[Tensor, " n"],
    n_values: int,
    n_permutations: int = 200,
    seed: int = 0,
) -> CircleFit:
    """Project ``points`` to their top two principal components and test for a circle.

    ``value[i]`` in ``[0, n_values)`` is point ``i``'s place in the cycle. See
    :class:`CircleFit` for what is measured.
    """
    check_tensor("points", points, finite=True)
    if points.ndim != 2 or points.shape[0] != value.shape[0] or points.shape[0] < 3:
        raise ValueError(
            f"points must be (n >= 3, d) with one row per value, got {tuple(points.shape)} "
            f"and {tuple(value.shape)} values"
        )
    if isinstance(n_values, bool) or not isinstance(n_values, int) or n_values < 3:
        raise ValueError(f"n_values must be an int >= 3, got {n_values!r}")
    value = _check_values(value, n_values)
    x = points.detach().double().cpu()
    x = x - x.mean(0)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    xy = x @ vh[:2].T
    total = float((s**2).sum())
    variance_2d = float((s[:2] ** 2).sum()) / total if total > 0 else float("nan")
    angle = torch.atan2(xy[:, 1], xy[:, 0])
    truth = 2 * math.pi * value.double() / n_values
    corr = abs(circular_correlation(angle, truth))
    g = torch.Generator().manual_seed(seed)
    shuffled = [
        abs(circular_correlation(angle, truth[torch.randperm(len(truth), generator=g)]))
        for _ in range(n_permutations)
    ]
    higher = sum(s >= corr for s in shuffled)
    return CircleFit(
        xy=xy.numpy(),
        value=value.numpy(),
        n_values=n_values,
        variance_2d=variance_2d,
        correlation=corr,
        baseline=float(np.mean(shuffled)) if shuffled else float("nan"),
        p_value=(higher + 1) / (n_permutations + 1),
        order_agreement=_order_agreement(xy, value, n_values),
    )


def _order_agreement(xy: Tensor, value: Tensor, n_values: int) -> float:
    """Share of steps v -> v+1 (mod n) whose centroids are adjacent in angular order."""
    present = [v for v in range(n_values) if bool((value == v).any())]
    if len(present) < 3:
        return float("nan")
    centroids = torch.stack([xy[value == v].mean(0) for v in present])
    order = torch.atan2(centroids[:, 1], centroids[:, 0]).argsort().tolist()
    ring = [present[i] for i in order]
    neighbours = {frozenset((ring[i], ring[(i + 1) % len(ring)])) for i in range(len(ring))}
    steps = [v for v in present if (v + 1) % n_values in present]
    hits = sum(frozenset((v, (v + 1) % n_values)) in neighbours for v in steps)
    return hits / len(steps) if steps else float("nan")


def circle_figure(fit: CircleFit, words: tuple[str, ...], title: str | None = None) -> go.Figure:
    """Scatter of ``fit.xy`` coloured by cycle word, with the word centroids joined in order.

    The closed line visits the centroids in the cycle's order (Monday, Tuesday, ...,
    Sunday, Monday): on a circle it goes round once without crossing itself.
    """
    if len(words) != fit.n_values:
        raise ValueError(
            f"words must name the {fit.n_values} values of the cycle, got {len(words)}"
        )
    fig = go.Figure()
    hues = [f"hsl({int(360 * v / fit.n_values)},70%,45%)" for v in range(fit.n_values)]
    centres = []
    for v, word in enumerate(words):
        pts = fit.xy[fit.value == v]
        if len(pts) == 0:
            continue
        fig.add_scatter(
            x=np.round(pts[:, 0], 3), y=np.round(pts[:, 1], 3), mode="markers", name=word,
            marker={"size": 5, "color": hues[v], "opacity": 0.6},
        )  # fmt: skip
        centres.append((word, pts.mean(0)))
    if centres:
        loop = centres + centres[:1]
        fig.add_scatter(
            x=[c[1][0] for c in loop], y=[c[1][1] for c in loop], mode="lines+text",
            text=[c[0] for c in loop[:-1]] + [""], textposition="top center",
            line={"color": "black", "width": 1}, name="centroids in order", showlegend=True,
        )  # fmt: skip
    fig.update_layout(
        title=title, xaxis={"title": "PC 1"}, yaxis={"title": "PC 2", "scaleanchor": "x"},
    )  # fmt: skip
    return fig
