"""Checkers for the exercises of part 3, "Understanding latents: a deeper dive"."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from saebook.checks.core import Case, _generator, check_function

# --- Part 3 (deeper), chapters 1-4: splitting, geometry, absorption, meta-SAEs ---------------


def check_max_cosine_matches(fn: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]) -> None:
    """Check ``fn(narrow_decoder, wide_decoder) -> (values, indices)`` per wide row.

    The reference is :func:`saebook.splitting.max_cosine_matches`: for every row of
    ``wide_decoder`` the largest cosine with a row of ``narrow_decoder`` and that row's index.
    Cases include unnormalised rows, exact copies, a zero wide row (cosine 0, index 0) and a
    single narrow latent.
    """
    from saebook import splitting

    g = _generator(30)
    narrow = torch.randn(6, 5, generator=g)
    wide = torch.randn(11, 5, generator=g)
    children = torch.cat([narrow[[2]] + 0.1 * torch.randn(3, 5, generator=g), narrow[[4]]])
    with_zero = wide.clone()
    with_zero[3] = 0
    cases: list[Case] = [
        ("random", (narrow, wide), {}),
        ("unnormalised rows", (narrow * 4.0, wide * 0.2), {}),
        ("children of narrow latents 2 and 4", (narrow, children), {}),
        ("wide is a copy of narrow", (narrow, narrow.clone()), {}),
        ("a zero wide row", (narrow, with_zero), {}),
        ("one narrow latent", (narrow[:1], wide), {}),
    ]
    check_function(lambda a, b: tuple(fn(a, b)), splitting.max_cosine_matches, cases)


def check_within_label_cosine(fn: Callable[[Tensor, Tensor], float]) -> None:
    """Check ``fn(directions, codes) -> float``: mean cosine of same-label pairs.

    The reference is :func:`saebook.geometry.within_label_cosine`: pairs ``i != j`` with
    ``codes[i] == codes[j] >= 0``; negative codes are unlabelled; NaN when there is no pair.
    """
    from saebook import geometry

    g = _generator(31)
    dirs = torch.randn(10, 4, generator=g)
    codes = torch.tensor([0, 1, 0, 2, 1, 0, -1, 2, -1, 1])
    cases: list[Case] = [
        ("random", (dirs, codes), {}),
        ("unnormalised rows", (dirs * torch.arange(1, 11)[:, None], codes), {}),
        ("one label for all", (dirs, torch.zeros(10, dtype=torch.long)), {}),
        ("unlabelled rows are ignored", (dirs, torch.tensor([0, 0] + [-1] * 6 + [1, 1])), {}),
        ("no pair shares a label (NaN)", (dirs[:3], torch.tensor([0, 1, 2])), {}),
        (
            "identical pair",
            (torch.stack([dirs[0], 3 * dirs[0], dirs[1]]), torch.tensor([5, 5, 6])),
            {},
        ),
    ]
    check_function(fn, geometry.within_label_cosine, cases)


def check_absorption_rate(fn: Callable[[Tensor, Tensor, Tensor], float]) -> None:
    """Check ``fn(main_fires, label, absorber_fires) -> float``.

    The reference is :func:`saebook.absorption.absorption_rate`: the share of the ``label``
    positions where the main latent is silent and at least one absorber fires (NaN when the
    label never holds).
    """
    from saebook import absorption

    g = _generator(32)
    label = torch.rand(40, generator=g) < 0.5
    main = torch.rand(40, generator=g) < 0.5
    absorbers = torch.rand(40, 3, generator=g) < 0.3
    cases: list[Case] = [
        ("random", (main, label, absorbers), {}),
        ("main latent always fires", (torch.ones(40, dtype=torch.bool), label, absorbers), {}),
        ("main latent never fires", (torch.zeros(40, dtype=torch.bool), label, absorbers), {}),
        ("absorbers fire only off the label", (main, label, absorbers & ~label[:, None]), {}),
        ("no absorber candidates (k = 0)", (main, label, absorbers[:, :0]), {}),
        ("label never holds (NaN)", (main, torch.zeros(40, dtype=torch.bool), absorbers), {}),
    ]
    check_function(fn, absorption.absorption_rate, cases)


def check_variance_explained(fn: Callable[[Tensor, Tensor], float]) -> None:
    """Check ``fn(x, x_hat) -> float``: ``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``.

    The reference is :func:`saebook.meta_saes.variance_explained` (NaN when all rows of ``x``
    are equal).
    """
    from saebook import meta_saes

    g = _generator(33)
    x = torch.randn(12, 5, generator=g)
    noisy = x + 0.3 * torch.randn(12, 5, generator=g)
    cases: list[Case] = [
        ("noisy reconstruction", (x, noisy), {}),
        ("perfect reconstruction", (x, x.clone()), {}),
        ("predicting the mean row", (x, x.mean(0, keepdim=True).expand(12, 5).clone()), {}),
        ("predicting zeros (can go below 0)", (x + 3.0, torch.zeros(12, 5)), {}),
        ("a single feature column", (x[:, :1], noisy[:, :1]), {}),
        ("all rows equal (NaN)", (torch.ones(4, 3), torch.zeros(4, 3)), {}),
    ]
    check_function(fn, meta_saes.variance_explained, cases)


# --- Part 2, chapters 5-7: logit lens, autointerp, patch scoping ----------------------------


def reference_hypergeometric_p(logits: Tensor, in_set: Tensor, k: int) -> Tensor:
    """One-sided hypergeometric p-value of the set tokens among each row's ``k`` top logits."""
    from saebook.logit_lens import hypergeometric_enrichment

    return hypergeometric_enrichment(logits, in_set, k)[1]


def check_hypergeometric_p(fn: Callable[[Tensor, Tensor, int], Tensor]) -> None:
    """Check ``fn(logits, in_set, k) -> (n,)`` p-values ``P(X >= hits)`` (hypergeometric).

    ``logits`` is ``(n, d_vocab)``, ``in_set`` a ``(d_vocab,)`` bool mask; ``hits`` counts the
    set tokens among each row's ``k`` largest logits. Cases include an empty set (p = 1), a
    set that is the whole vocabulary, ``k = 1`` and ``k = d_vocab``.
    """
    g = _generator(6)
    logits = torch.randn(6, 50, generator=g)
    in_set = torch.rand(50, generator=g) < 0.2
    planted = logits.clone()
    planted[:3, in_set] += 3.0  # three rows strongly enriched
    cases: list[Case] = [
        ("random, k=10", (logits, in_set, 10), {}),
        ("three enriched rows, k=10", (planted, in_set, 10), {}),
        ("k=1", (planted, in_set, 1), {}),
        ("k = d_vocab", (logits, in_set, 50), {}),
        ("empty set", (logits, torch.zeros(50, dtype=torch.bool), 5), {}),
        ("whole vocabulary", (logits, torch.ones(50, dtype=torch.bool), 5), {}),
        ("one row", (planted[:1], in_set, 7), {}),
    ]
    check_function(fn, reference_hypergeometric_p, cases, atol=1e-9, rtol=1e-6)


def reference_detection_scores(predicted: list[bool], truth: list[bool]) -> dict[str, float]:
    """Balanced accuracy, precision and recall of boolean predictions (NaN where undefined)."""
    from saebook.autointerp import binary_scores

    out = binary_scores(predicted, truth)
    return {k: out[k] for k in ("balanced_accuracy", "precision", "recall")}


def check_detection_scores(fn: Callable[[list[bool], list[bool]], dict[str, float]]) -> None:
    """Check ``fn(predicted, truth) -> {"balanced_accuracy", "precision", "recall"}``.

    Balanced accuracy is the mean of recall and specificity (of the defined ones when a class
    is missing); a ratio with a zero denominator is NaN. Cases include perfect, inverted and
    all-negative predictions and truths of a single class.
    """
    g = _generator(7)
    truth = (torch.rand(30, generator=g) < 0.5).tolist()
    noisy = [t if torch.rand(1, generator=g).item() < 0.8 else not t for t in truth]
    cases: list[Case] = [
        ("noisy", (noisy, truth), {}),
        ("perfect", (truth, truth), {}),
        ("inverted", ([not t for t in truth], truth), {}),
        ("predicts nothing", ([False] * 30, truth), {}),
        ("predicts everything", ([True] * 30, truth), {}),
        ("only positive contexts", ([True, False, True], [True, True, True]), {}),
        ("only negative contexts", ([True, False, False], [False, False, False]), {}),
    ]
    check_function(fn, reference_detection_scores, cases)


def check_set_probability(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(log_probs, in_set) -> (*batch,)``: the probability mass on the set's tokens.

    ``log_probs`` is ``(*batch, d_vocab)`` log-probabilities, ``in_set`` a ``(d_vocab,)`` bool
    mask. Cases include an empty set (0), the whole vocabulary (1), one token and extra batch
    axes.
    """
    from saebook.patch_scoping import set_probability

    g = _generator(8)
    log_probs = torch.randn(4, 30, generator=g).log_softmax(-1)
    in_set = torch.rand(30, generator=g) < 0.3
    one = torch.zeros(30, dtype=torch.bool)
    one[7] = True
    cases: list[Case] = [
        ("random set", (log_probs, in_set), {}),
        ("empty set", (log_probs, torch.zeros(30, dtype=torch.bool)), {}),
        ("whole vocabulary", (log_probs, torch.ones(30, dtype=torch.bool)), {}),
        ("one token", (log_probs, one), {}),
        ("one distribution", (log_probs[0], in_set), {}),
        ("two batch axes", (torch.randn(2, 3, 30, generator=g).log_softmax(-1), in_set), {}),
    ]
    check_function(fn, set_probability, cases)
