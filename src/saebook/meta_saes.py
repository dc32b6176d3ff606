"""Meta-SAEs: sparse autoencoders trained on the decoder directions of another SAE.

If a latent of a wide SAE is really a composition (*Lily* = *name* + *female* + ...), its
decoder direction should be a sparse combination of a few more basic directions. A meta-SAE
tests this: its training data is the set of (unit-normalised) decoder rows of an SAE, one row
per latent, and each of its latents, a *meta-latent*, is a direction shared by the decoder
rows that use it. This module trains one with SAELens (via :func:`saebook.training.
train_topk_sae`), measures how well it reconstructs the directions, lists the latents each
meta-latent groups, and tests whether those groups share ground-truth labels more often than
random groups of the same sizes.

Chapters: deeper/04
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float
from sae_lens import SAE
from torch import Tensor

from saebook.training import train_topk_sae

__all__ = [
    "train_meta_sae",
    "explained_variance",
    "variance_explained",
    "pair_agreement",
    "meta_groups",
    "group_label_agreement",
]


def train_meta_sae(
    directions: Float[Tensor, "n d"],
    d_sae: int,
    k: int = 4,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 3e-3,
    seed: int = 0,
) -> SAE:
    """A TopK meta-SAE with ``d_sae`` latents trained on the unit-normalised ``directions``.

    Each row is one latent's decoder direction; training runs ``epochs`` passes over the rows
    (with SAELens' ``SAETrainer``) and returns an inference ``SAE`` whose metadata names its
    input ``decoder_directions``.
    """
    if directions.ndim != 2:
        raise ValueError(f"directions must be 2-D (latents, d), got {tuple(directions.shape)}")
    n = directions.shape[0]
    if batch_size > n:
        raise ValueError(
            f"batch_size must be at most the number of directions ({n}), got {batch_size}"
        )
    if not 0 < k < d_sae:
        raise ValueError(f"k must be in (0, d_sae={d_sae}), got {k}")
    if epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs}")
    x = torch.nn.functional.normalize(directions.detach().float().cpu(), dim=-1)
    return train_topk_sae(
        x,
        d_sae=d_sae,
        k=k,
        metadata={"hook_name": "decoder_directions", "model_name": "meta-sae"},
        total_samples=epochs * n,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
    )


def variance_explained(x: Float[Tensor, "n d"], x_hat: Float[Tensor, "n d"]) -> float:
    """``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` over the rows of ``x``.

    1 is a perfect reconstruction, 0 is no better than predicting the mean row; NaN when
    every row of ``x`` is the same.
    """
    if x.shape != x_hat.shape or x.ndim != 2:
        raise ValueError(
            f"x and x_hat must be 2-D of the same shape, got {tuple(x.shape)} and "
            f"{tuple(x_hat.shape)}"
        )
    total = float((x - x.mean(0)).pow(2).sum())
    if total == 0:
        return float("nan")
    return 1 - float((x - x_hat).pow(2).sum()) / total


@torch.no_grad()
def explained_variance(sae: SAE, x: Float[Tensor, "n d"]) -> float:
    """:func:`variance_explained` of ``sae``'s reconstruction of the rows of ``x``."""
    if x.ndim != 2 or x.shape[1] != sae.cfg.d_in:
        raise ValueError(f"x must be (n, d_in={sae.cfg.d_in}), got {tuple(x.shape)}")
    x = x.float().to(sae.W_dec.device)
    return variance_explained(x.cpu(), sae.decode(sae.encode(x)).cpu())


@torch.no_grad()
def meta_groups(
    meta_sae: SAE, directions: Float[Tensor, "n d"], min_size: int = 2
) -> dict[int, list[int]]:
    """meta-latent -> the rows of ``directions`` whose meta-code uses it, strongest first.

    ``directions`` are unit-normalised before encoding, as in :func:`train_meta_sae`. Only
    meta-latents used by at least ``min_size`` rows are returned.
    """
    x = torch.nn.functional.normalize(directions.detach().float(), dim=-1)
    codes = meta_sae.encode(x.to(meta_sae.W_dec.device)).cpu()
    out = {}
    for m in range(codes.shape[1]):
        rows = torch.nonzero(codes[:, m] > 0).flatten()
        if len(rows) >= min_size:
            order = codes[rows, m].argsort(descending=True)
            out[m] = rows[order].tolist()
    return out


def pair_agreement(groups: Sequence[Sequence[int]], labels: Sequence[str | None]) -> float:
    """Share of the pairs of labelled latents within a group that share a label.

    ``groups`` lists latent indices, ``labels[i]`` is latent ``i``'s label or None (left
    out). Pairs are counted in every group (a pair in two groups counts twice); NaN when no
    group holds two labelled latents.
    """
    same = total = 0
    for group in groups:
        named = [labels[i] for i in group if labels[i] is not None]
        for a in range(len(named)):
            for b in range(a + 1, len(named)):
                total += 1
                same += named[a] == named[b]
    return same / total if total else float("nan")


def group_label_agreement(
    groups: Sequence[Sequence[int]],
    labels: Sequence[str | None],
    n_random: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Do the latents in a group share a label more often than random groups do?

    ``groups`` lists latent indices (e.g. the values of :func:`meta_groups`), ``labels`` gives
    each latent's label or None. ``real`` is the share of within-group pairs of labelled
    latents that share a label. The baseline shuffles the labels over the latents
    ``n_random`` times, keeping the groups: ``baseline`` is the mean share and ``p_value`` the
    share of shuffles at least as high as ``real`` (with the +1 correction).
    """
    if not groups:
        raise ValueError("groups must hold at least one group, got none")
    if any(not 0 <= i < len(labels) for group in groups for i in group):
        raise ValueError(f"groups must index labels (0 .. {len(labels) - 1})")
    real = pair_agreement(groups, labels)
    if np.isnan(real):
        raise ValueError("groups must contain at least one pair of labelled latents, got none")
    rng = np.random.default_rng(seed)
    shuffled = []
    pool = list(labels)
    for _ in range(n_random):
        perm = rng.permutation(len(pool))
        shuffled.append(pair_agreement(groups, [pool[j] for j in perm]))
    higher = sum(s >= real for s in shuffled)
    return {
        "real": real,
        "baseline": float(np.mean(shuffled)),
        "p_value": (higher + 1) / (n_random + 1),
    }
