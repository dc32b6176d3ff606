"""Sparse probing: how well k features of a representation predict a binary concept.

For each concept (a boolean label per token position) and each k, the k features whose mean
differs most between positive and negative positions are chosen on a training split, a
logistic regression is fitted on them, and its balanced accuracy is measured on held-out
positions. Comparing SAE latents with the raw dimensions they were trained on at small k
asks whether the SAE put each concept into few units. Pass SAE activations scaled by their
decoder rows' norms (:func:`saebook.latent_stats.decoder_scaled`), as SAEBench's sparse
probing sees them after it folds the norms into the SAE, so that a latent is ranked by the
length of what it writes.

Chapters: training/04
"""

from __future__ import annotations

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from torch import Tensor
from tqdm import tqdm

__all__ = ["top_k_by_mean_difference", "train_test_split", "sparse_probe", "sparse_probing"]


def _check_xy(X: Tensor, y: Tensor) -> None:
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (positions, features), got shape {tuple(X.shape)}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},), got {tuple(y.shape)}")


def top_k_by_mean_difference(
    X: Float[Tensor, "n d"], y: Bool[Tensor, " n"], k: int
) -> Int[Tensor, " k"]:
    """Indices of the ``k`` features with the largest ``|mean(X[y]) - mean(X[~y])|``.

    Ties are broken towards the lower index. Both classes must be present.
    """
    _check_xy(X, y)
    if not 1 <= k <= X.shape[1]:
        raise ValueError(f"k must be in [1, {X.shape[1]}], got {k}")
    y = y.bool()
    if y.all() or not y.any():
        raise ValueError("y must contain both positive and negative positions")
    gap = (X[y].float().mean(0) - X[~y].float().mean(0)).abs()
    order = torch.argsort(-gap, stable=True)
    return order[:k]


def train_test_split(
    y: Bool[Tensor, " n"], test_fraction: float = 0.3, seed: int = 0
) -> tuple[Int[Tensor, " n_train"], Int[Tensor, " n_test"]]:
    """A seeded split of positions, stratified so both parts hold the same share of positives."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for cls in (True, False):
        idx = torch.nonzero(y.bool() == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def sparse_probe(
    X: Float[Tensor, "n d"],
    y: Bool[Tensor, " n"],
    k: int,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> dict[str, float | list[int]]:
    """Fit a logistic regression on ``k`` features chosen on the training split.

    Returns ``balanced_accuracy`` on the held-out split (0.5 is chance whatever the class
    balance) and the chosen ``features``.
    """
    _check_xy(X, y)
    train, test = train_test_split(y, test_fraction, seed)
    X_train = X[train]
    features = top_k_by_mean_difference(X_train, y[train], k)
    score = _fit_and_score(X_train, X[test], y[train], y[test], features)
    return {"balanced_accuracy": score, "features": features.tolist()}


def _fit_and_score(
    X_train: Tensor, X_test: Tensor, y_train: Tensor, y_test: Tensor, features: Tensor
) -> float:
    """Balanced held-out accuracy of a logistic regression on columns ``features``."""
    Xtr = X_train[:, features].float()
    Xte = X_test[:, features].float()
    # standardise with training statistics: the solver converges in a few iterations
    mean, std = Xtr.mean(0), Xtr.std(0).clamp(min=1e-6)
    Xtr, Xte = ((Xtr - mean) / std).numpy(), ((Xte - mean) / std).numpy()
    probe = LogisticRegression(max_iter=200, class_weight="balanced")
    probe.fit(Xtr, y_train.numpy())
    return float(balanced_accuracy_score(y_test.numpy(), probe.predict(Xte)))


def sparse_probing(
    representations: dict[str, Float[Tensor, "n d"]],
    labels: dict[str, Bool[Tensor, " n"]],
    ks: list[int],
    min_count: int = 30,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Balanced accuracy of k-sparse probes for every representation, label and k.

    Labels with fewer than ``min_count`` positive (or negative) positions are skipped. Returns
    one row per (``representation``, ``label``, ``k``) with ``balanced_accuracy``.
    """
    if not representations or not labels or not ks:
        raise ValueError("representations, labels and ks must all be non-empty")
    if any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive ints, got {ks}")
    n = {X.shape[0] for X in representations.values()}
    if len(n) != 1:
        raise ValueError(f"representations must share their number of positions, got {n}")
    rows = []
    usable = {
        name: y for name, y in labels.items() if min_count <= int(y.sum()) <= len(y) - min_count
    }
    # what does not depend on k is computed once: the split (per label), the training and
    # held-out rows and the features ranked by mean difference (per representation and label;
    # the ranking is stable, so its first k are exactly top_k_by_mean_difference(..., k))
    splits = {lab: train_test_split(y, seed=seed) for lab, y in usable.items()}
    jobs = [(r, lab) for r in representations for lab in usable]
    for rep, lab in tqdm(jobs, desc="Sparse probes", disable=not progress):
        X, y = representations[rep], usable[lab]
        _check_xy(X, y)
        train, test = splits[lab]
        X_train, X_test = X[train], X[test]
        fitting = [k for k in ks if k <= X.shape[1]]
        if not fitting:
            continue
        ranked = top_k_by_mean_difference(X_train, y[train], max(fitting))
        for k in fitting:
            score = _fit_and_score(X_train, X_test, y[train], y[test], ranked[:k])
            rows.append({"representation": rep, "label": lab, "k": k, "balanced_accuracy": score})
    return pd.DataFrame(rows)
