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


# --- Part 3, exercises added for issue 17 ---------------------------------------------------


def check_split_coverage(fn: Callable[[Tensor, Tensor], dict]) -> None:
    """Check ``fn(parent_fires, child_fires) -> dict`` against
    :func:`saebook.splitting.split_coverage`.

    ``parent_fires`` is ``(n,)`` bool, ``child_fires`` ``(n, k)`` bool; the result holds
    ``per_child`` (a list), ``best_single``, ``union`` and ``union_precision``. Cases include
    children that fire off the parent, a child that never fires and a single child.
    """
    from saebook import splitting

    g = _generator(34)
    parent = torch.rand(60, generator=g) < 0.4
    kids = (torch.rand(60, 3, generator=g) < 0.5) & parent[:, None]
    stray = kids | (torch.rand(60, 3, generator=g) < 0.2)
    cases: list[Case] = [
        ("children inside the parent", (parent, kids), {}),
        ("children also fire off the parent", (parent, stray), {}),
        ("a child that never fires", (parent, torch.cat([kids, ~parent[:, None] & False], 1)), {}),
        ("one child", (parent, stray[:, :1]), {}),
        ("children cover the parent exactly", (parent, torch.stack([parent, parent], 1)), {}),
        ("no child fires (precision 0)", (parent, torch.zeros(60, 2, dtype=torch.bool)), {}),
    ]  # fmt: skip
    check_function(fn, splitting.split_coverage, cases)


def check_leaf_counts(fn: Callable[[list[Tensor], float], Tensor]) -> None:
    """Check ``fn(decoders, threshold) -> (d_0,)`` leaf counts against
    :func:`saebook.splitting.leaf_counts`.

    ``decoders`` lists decoder matrices ``(d_i, d_in)`` from narrow to wide. Cases include a
    planted three-level family, two widths only, a high threshold that cuts links (a broken
    chain counts no leaf) and unnormalised rows.
    """
    from saebook import splitting

    g = _generator(35)
    d_in = 8
    narrow = torch.randn(4, d_in, generator=g)
    middle = torch.cat([narrow[[0, 0, 1, 3]] + 0.3 * torch.randn(4, d_in, generator=g),
                        torch.randn(2, d_in, generator=g)])  # fmt: skip
    wide = torch.cat([middle[[0, 0, 1, 2, 2, 2]] + 0.3 * torch.randn(6, d_in, generator=g),
                      torch.randn(3, d_in, generator=g)])  # fmt: skip
    scaled = [narrow * 5.0, middle * 0.1, wide * torch.rand(9, 1, generator=g).add(0.5)]
    cases: list[Case] = [
        ("three widths, threshold 0.5", ([narrow, middle, wide], 0.5), {}),
        ("two widths", ([narrow, middle], 0.5), {}),
        ("threshold 0 (every latent links)", ([narrow, middle, wide], 0.0), {}),
        ("high threshold cuts chains", ([narrow, middle, wide], 0.9), {}),
        ("unnormalised rows", (scaled, 0.5), {}),
    ]
    check_function(lambda d, t: fn(list(d), t), splitting.leaf_counts, cases)


def check_latent_labels(fn: Callable[..., list]) -> None:
    """Check ``fn(latent_acts, labels, min_f1=0.0) -> [(label or None, f1), ...]`` against
    :func:`saebook.geometry.latent_labels`.

    A latent predicts a label where its activation is > 0; its best label is the one with the
    highest F1 (ties: the first label), None when that F1 is 0 or below ``min_f1``. Cases
    include a dead latent, a latent that fires everywhere and a ``min_f1`` cut.
    """
    from saebook import geometry

    g = _generator(36)
    n = 80
    labels = {name: torch.rand(n, generator=g) < p for name, p in
              (("noun", 0.3), ("verb", 0.2), ("digit", 0.1))}  # fmt: skip
    acts = torch.relu(torch.randn(n, 6, generator=g))
    acts[:, 0] = labels["noun"].float() * 2.0  # a perfect noun detector
    acts[:, 1] = (labels["verb"] | (torch.rand(n, generator=g) < 0.1)).float()
    acts[:, 2] = 0.0  # dead
    acts[:, 3] = 1.0  # fires everywhere
    cases: list[Case] = [
        ("planted detectors", (acts, labels), {}),
        ("min_f1 = 0.5", (acts, labels), {"min_f1": 0.5}),
        ("one label", (acts, {"verb": labels["verb"]}), {}),
        ("negative activations do not fire", (acts - 0.5, labels), {}),
    ]
    check_function(fn, geometry.latent_labels, cases)


def check_cosine_neighbours(fn: Callable[[Tensor, int], tuple[Tensor, Tensor]]) -> None:
    """Check ``fn(directions, k) -> (similarities (n, k), indices (n, k))`` against
    :func:`saebook.geometry.cosine_neighbours` (each row's own index included, most similar
    first)."""
    from saebook import geometry

    g = _generator(37)
    dirs = torch.randn(15, 6, generator=g)
    cases: list[Case] = [
        ("k=4", (dirs, 4), {}),
        ("unnormalised rows", (dirs * torch.rand(15, 1, generator=g).add(0.1) * 10, 4), {}),
        ("k=1 (itself)", (dirs, 1), {}),
        ("k = n", (dirs, 15), {}),
        ("two dimensions", (torch.randn(7, 2, generator=g), 3), {}),
    ]
    check_function(lambda d, k: tuple(fn(d, k)), geometry.cosine_neighbours, cases)


def _random_topk_sae(seed: int, d_in: int, d_sae: int, k: int):
    """A sae_lens TopK SAE with random weights (for checkers; no training)."""
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k))
    g = _generator(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / d_in**0.5)
        sae.b_enc.copy_(torch.randn(d_sae, generator=g) * 0.1)
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=g) / d_in**0.5)
        sae.b_dec.copy_(torch.randn(d_in, generator=g) * 0.1)
    return sae


def check_span_reconstruction(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(sae, acts, latents) -> Tensor``: activations rebuilt from some latents only.

    The reference is :func:`saebook.circular.span_reconstruction`: ``encode(acts)`` kept at
    the columns ``latents``, times those rows of ``W_dec``; no decoder bias.
    """
    from saebook import circular

    sae = _random_topk_sae(41, d_in=6, d_sae=24, k=5)
    g = _generator(41)
    acts = torch.randn(9, 6, generator=g) * 2
    cases: list[Case] = [
        ("three latents", (sae, acts, torch.tensor([0, 5, 17])), {}),
        ("one latent", (sae, acts, torch.tensor([11])), {}),
        ("every latent", (sae, acts, torch.arange(24)), {}),
        ("no latent (zeros)", (sae, acts, torch.tensor([], dtype=torch.long)), {}),
        ("latents out of order", (sae, acts[:4], torch.tensor([20, 2, 9])), {}),
    ]
    check_function(fn, circular.span_reconstruction, cases)


def check_meta_groups(fn: Callable[..., dict]) -> None:
    """Check ``fn(meta_sae, directions, min_size=2) -> {meta-latent: [rows]}`` against
    :func:`saebook.meta_saes.meta_groups`.

    The meta-SAE encodes the unit-normalised rows of ``directions``; a meta-latent's group is
    the rows whose code uses it (> 0), strongest first, kept when it has at least
    ``min_size`` rows. Cases use random sae_lens TopK SAEs, unnormalised rows and several
    ``min_size`` values.
    """
    from saebook import meta_saes

    g = _generator(38)
    sae = _random_topk_sae(38, d_in=8, d_sae=10, k=2)
    dirs = torch.randn(30, 8, generator=g)
    cases: list[Case] = [
        ("k=2, min_size=2", (sae, dirs), {"min_size": 2}),
        ("unnormalised rows", (sae, dirs * torch.rand(30, 1, generator=g).add(0.1) * 20), {}),
        ("min_size=1", (sae, dirs[:8]), {"min_size": 1}),
        ("min_size=5", (sae, dirs), {"min_size": 5}),
        ("k=3", (_random_topk_sae(39, d_in=8, d_sae=6, k=3), dirs), {}),
    ]
    check_function(fn, meta_saes.meta_groups, cases)


def check_pair_agreement(fn: Callable[[list, list], float]) -> None:
    """Check ``fn(groups, labels) -> float`` against :func:`saebook.meta_saes.pair_agreement`:
    the share of within-group pairs of labelled latents that share a label (NaN when none)."""
    from saebook import meta_saes

    labels = ["a", "a", "b", None, "b", "a", None, "c"]
    cases: list[Case] = [
        ("two groups", ([[0, 1, 2], [2, 4, 5]], labels), {}),
        ("unlabelled latents are skipped", ([[0, 3, 1], [3, 6, 7, 2]], labels), {}),
        ("a pair in two groups counts twice", ([[0, 1], [0, 1], [1, 2]], labels), {}),
        ("a group of one", ([[0], [2, 4]], labels), {}),
        ("no labelled pair (NaN)", ([[3, 6], [0]], labels), {}),
    ]
    check_function(fn, meta_saes.pair_agreement, cases)


def check_latent_logit_weights(fn: Callable[..., Tensor], model, sae, latents) -> None:
    """Check ``fn(model, sae, latents) -> (len(latents), d_vocab)`` direct logit weights
    against :func:`saebook.logit_lens.latent_logit_weights` (with ``fold_ln=True``).

    Uses the reader's ``model`` and ``sae`` (any profile) on ``latents``, on a single latent
    and on the latents in reverse order. The scale matters: the comparison is elementwise,
    with a tolerance relative to the largest weight.
    """
    from saebook.logit_lens import latent_logit_weights

    ids = [int(i) for i in latents]
    if not ids:
        raise ValueError("latents must name at least one latent, got none")
    cases: list[Case] = [
        ("the given latents", (model, sae, ids), {}),
        ("one latent", (model, sae, ids[:1]), {}),
        ("reversed order", (model, sae, ids[::-1]), {}),
    ]
    scale = float(latent_logit_weights(model, sae, ids[:1]).abs().max())

    def reader(m, s, lat):
        return torch.as_tensor(fn(m, s, lat)).float().cpu()

    check_function(reader, latent_logit_weights, cases, atol=1e-4 * max(scale, 1.0), rtol=1e-3)


def check_skew_kurtosis(fn: Callable[[Tensor], tuple[Tensor, Tensor]]) -> None:
    """Check ``fn(x) -> (skewness, excess kurtosis)`` along the last axis against
    :func:`saebook.logit_lens.skew_kurtosis` (biased moments, as scipy's defaults)."""
    from saebook.logit_lens import skew_kurtosis

    g = _generator(39)
    x = torch.randn(5, 200, generator=g)
    cases: list[Case] = [
        ("normal rows", (x,), {}),
        ("right-skewed rows", (x.exp(),), {}),
        ("heavy tails", (x.pow(3),), {}),
        ("one row", (x[0],), {}),
        ("two values per row", (x[:, :2],), {}),
        ("shifted and scaled", (7.0 + 3.0 * x,), {}),
    ]
    check_function(lambda t: tuple(fn(t)), skew_kurtosis, cases, atol=1e-6, rtol=1e-5)


def check_patch_scope(
    fn: Callable[..., Tensor], model, tokens: Tensor, hook: str, position: int
) -> None:
    """Check ``fn(model, tokens, directions, scales, hook, position) -> (n, s, d_vocab)``
    against :func:`saebook.patch_scoping.patch_scope` (``mode="replace"``).

    Each unit-normalised direction times each scale replaces the activation at ``hook`` and
    ``position``; the output is the next-token log-probabilities at the last position. Cases
    use random directions of the model's width (unnormalised), one scale, several scales,
    the given position, the last two positions (where a patch always shows in the output),
    a negative position, and short directions at the last position. A direction left
    unnormalised may show only at the last position: from an earlier one the patch reaches
    the output through attention reading normalised activations, and when the hook is the
    last layer's input (the tiny model) that forgets its length entirely.
    """
    from saebook.patch_scoping import patch_scope

    g = _generator(40)
    d = model.cfg.d_model
    dirs = torch.randn(3, d, generator=g) * 5.0
    tokens = tokens.flatten().cpu()
    seq = tokens.numel()

    def reference(m, t, directions, scales, h, p):
        return patch_scope(m, t, directions, scales, h, p, mode="replace")

    def reader(*args):
        return torch.as_tensor(fn(*args)).float().cpu()

    cases: list[Case] = [
        ("three directions, one scale", (model, tokens, dirs, [10.0], hook, position), {}),
        ("the last position, three scales",
         (model, tokens, dirs[:1], [1.0, 10.0, 50.0], hook, seq - 1), {}),
        ("a negative position", (model, tokens, dirs[1:], [20.0, 5.0], hook, -1), {}),
        ("the position before the last", (model, tokens, dirs[:2], [30.0], hook, seq - 2), {}),
        ("short directions at the last position",
         (model, tokens, dirs[1:] * 1e-3, [8.0], hook, seq - 1), {}),
    ]  # fmt: skip
    check_function(reader, reference, cases, atol=2e-3, rtol=1e-3)


def check_entropy(fn: Callable[[Tensor], Tensor]) -> None:
    """Check ``fn(log_probs) -> (*batch,)`` entropies in nats against
    :func:`saebook.patch_scoping.entropy` (a zero probability contributes 0, not NaN)."""
    from saebook.patch_scoping import entropy

    g = _generator(41)
    lp = torch.randn(4, 20, generator=g).log_softmax(-1)
    one_hot = torch.full((2, 20), -torch.inf)
    one_hot[:, 3] = 0.0
    some_zero = lp.clone()
    some_zero[:, :5] = -torch.inf
    cases: list[Case] = [
        ("random", (lp,), {}),
        ("uniform", (torch.full((3, 20), 20.0).log_softmax(-1),), {}),
        ("one certain token (0 nats)", (one_hot,), {}),
        ("some zero probabilities", (some_zero.log_softmax(-1),), {}),
        ("extra batch axis", (torch.randn(2, 3, 20, generator=g).log_softmax(-1),), {}),
    ]
    check_function(fn, entropy, cases)


def _absorption_world(seed: int, n: int = 60, d: int = 6, d_sae: int = 10) -> tuple:
    """Latent and model activations where latent 0 is the main latent of a planted direction
    and latents 1-3 partly absorb it (for the absorption checkers)."""
    g = _generator(seed)
    u = torch.randn(d, generator=g)
    u = u / u.norm()
    decoder = torch.randn(d_sae, d, generator=g)
    decoder[0] = u + 0.1 * torch.randn(d, generator=g)
    for j, w in ((1, 0.8), (2, 0.5), (3, 0.2)):
        decoder[j] = w * u + (1 - w) * torch.randn(d, generator=g)
    # rows of unequal norms (0.5 to 2), as an SAE's may be: projections are not cosines
    norms = 0.5 + 1.5 * torch.rand(d_sae, 1, generator=g)
    decoder = torch.nn.functional.normalize(decoder, dim=-1) * norms
    label = torch.rand(n, generator=g) < 0.6
    acts = torch.relu(torch.randn(n, d_sae, generator=g)) * (
        torch.rand(n, d_sae, generator=g) < 0.3
    )
    acts[:, 0] = torch.where(label & (torch.rand(n, generator=g) < 0.5), 2.0, 0.0)
    model_acts = acts @ decoder + 0.05 * torch.randn(n, d, generator=g)
    return acts, model_acts, label, decoder, u


def check_full_absorption(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(latent_acts, model_acts, label, main_latents, decoder, reference,
    full_cosine, min_proportion) -> (n,) bool`` against the ``full`` mask of
    :func:`saebook.absorption.measure_absorption` (positions where ``label`` holds, every
    main latent is silent, and the latent with the largest probe projection points along the
    probe and carries at least ``min_proportion`` of the activation's non-negative, non-zero
    probe projection). Decoder rows have unequal norms, so a latent's probe projection
    (activation times its row's component along the probe) is not its activation times a
    cosine. Cases vary the thresholds, the main latents and the world's seed.
    """
    from saebook.absorption import measure_absorption

    def reference(acts, model_acts, label, main, decoder, u, full_cosine, min_proportion):
        thresholds = {"full_cosine": full_cosine, "min_proportion": min_proportion}
        result = measure_absorption(acts, model_acts, label, main, decoder, u, **thresholds)
        return result.full

    def reader(*args):
        return torch.as_tensor(fn(*args)).bool().cpu()

    w0, w1 = _absorption_world(47), _absorption_world(48, n=80)
    acts, model_acts, label, decoder, u = w0
    cases: list[Case] = [
        ("the thresholds of SAEBench", (*w0[:3], [0], *w0[3:], 0.025, 0.4), {}),
        ("a strict cosine", (*w0[:3], [0], *w0[3:], 0.6, 0.4), {}),
        ("a low proportion", (*w0[:3], [0], *w0[3:], 0.025, 0.1), {}),
        ("two main latents", (*w0[:3], [0, 1], *w0[3:], 0.025, 0.4), {}),
        ("another world", (*w1[:3], [0], *w1[3:], 0.025, 0.4), {}),
        ("negative probe projections", (acts, -model_acts, label, [0], decoder, u, 0.025, 0.4), {}),
    ]  # fmt: skip
    check_function(reader, reference, cases)


def check_sublabel_shares(fn: Callable[..., dict]) -> None:
    """Check ``fn(label, missed, sublabels) -> {name: (share of positives, share of misses)}``
    against :func:`saebook.absorption.sublabel_shares` (NaN where a denominator is 0)."""
    from saebook.absorption import sublabel_shares

    def reference(label, missed, sublabels):
        table = sublabel_shares(label, missed, sublabels)
        return {r["sublabel"]: (r["share of positives"], r["share of misses"])
                for r in table.to_dict("records")}  # fmt: skip

    def reader(*args):
        return {k: tuple(float(x) for x in v) for k, v in dict(fn(*args)).items()}

    g = _generator(49)
    label = torch.rand(50, generator=g) < 0.6
    missed = label & (torch.rand(50, generator=g) < 0.3)
    lily = label & (torch.rand(50, generator=g) < 0.4)
    subs = {
        "lily": lily,
        "other": label & ~lily,
        "outside": ~label & (torch.rand(50, generator=g) < 0.5),
    }
    cases: list[Case] = [
        ("three sublabels", (label, missed, subs), {}),
        ("misses all in one sublabel", (label, lily & missed, subs), {}),
        ("no misses (NaN)", (label, torch.zeros(50, dtype=torch.bool), subs), {}),
        ("one sublabel", (label, missed, {"lily": lily}), {}),
    ]
    check_function(reader, reference, cases)


def _autointerp_cases() -> list[tuple]:
    """Synthetic contexts, explanations and a keyword simulator for the autointerp checkers."""
    from saebook.autointerp import Context, Explanation, LatentContexts

    def ctx(text: str, acts: list[float], labels: list[set[str]] | None = None) -> Context:
        toks = tuple(text.split("|"))
        lab = None if labels is None else tuple(frozenset(x) for x in labels)
        return Context(tokens=toks, acts=tuple(acts), labels=lab)

    firing = [
        ctx("The| cat| sat", [0, 1.5, 0], [set(), {"animal"}, set()]),
        ctx("A| Dog| ran", [0, 0.7, 0], [set(), {"animal"}, set()]),
        ctx("Lily| saw| it", [0.2, 0, 0], [{"name"}, set(), set()]),
    ]
    silent = [
        ctx("The| sun| rose", [0, 0, 0], [set(), set(), set()]),
        ctx("a| CAT |toy", [0, 0, 0], [set(), {"animal"}, set()]),
    ]
    lc = LatentContexts(latent=3, top=firing[:1], held_out_firing=firing, held_out_silent=silent)
    no_labels = LatentContexts(latent=4, top=[], held_out_firing=[ctx("x| cat", [0, 1])],
                               held_out_silent=[ctx("y| dog", [0, 0])])  # fmt: skip
    by_tokens = Explanation(latent=3, text="cats", tokens=frozenset({"cat", "dog"}))
    by_label = Explanation(latent=3, text="animals", label="animal")
    nothing = Explanation(latent=3, text="nothing")
    return [("token explanation", by_tokens, lc), ("label explanation", by_label, lc),
            ("an empty explanation", nothing, lc), ("contexts without labels", by_label, no_labels),
            ("tokens, no labels", by_tokens, no_labels)]  # fmt: skip


def check_keyword_simulator(fn: Callable[..., list[bool]]) -> None:
    """Check ``fn(explanation, context) -> [bool per token]`` against
    :meth:`saebook.autointerp.KeywordSimulator.predict`: a token is predicted to fire when its
    stripped, lower-cased text is one of the explanation's tokens (and not empty), or when the
    explanation's label is among the token's labels."""
    from saebook.autointerp import KeywordSimulator

    sim = KeywordSimulator()
    cases: list[Case] = []
    for name, expl, lc in _autointerp_cases():
        for i, c in enumerate(lc.held_out_firing + lc.held_out_silent):
            cases.append((f"{name}, context {i}", (expl, c), {}))
    check_function(lambda e, c: [bool(x) for x in fn(e, c)], sim.predict, cases)


def check_detection_samples(fn: Callable[..., tuple]) -> None:
    """Check ``fn(explanation, contexts, simulator) -> (predicted, truth)`` against
    :func:`saebook.autointerp.detection_samples`: one pair per held-out context, firing
    contexts first; predicted when the simulator predicts any token, true when the context
    was drawn from the firing ones."""
    from saebook.autointerp import KeywordSimulator, detection_samples

    cases: list[Case] = [
        (name, (expl, lc, KeywordSimulator()), {}) for name, expl, lc in _autointerp_cases()
    ]

    def reader(*args):
        predicted, truth = fn(*args)
        return [bool(x) for x in predicted], [bool(x) for x in truth]

    check_function(reader, lambda *a: tuple(detection_samples(*a)), cases)
