"""Scoring SAE latents against ground-truth token labels.

Given latent activations and boolean labels over the same token positions, say for each
label how well the single best latent detects it, and how much of it the group of
high-precision latents covers together (SAEs often split one category across contexts).

Chapters: intro/03, intro/06, deeper/01, deeper/02, deeper/03, training/04, training/05
"""

from __future__ import annotations

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from saebook.validate import check_tensor

__all__ = ["label_recovery"]


def label_recovery(
    latent_acts: Float[Tensor, "n d_sae"],
    labels: dict[str, Bool[Tensor, " n"]],
    min_count: int = 20,
    precision_threshold: float = 0.8,
    min_fires: int = 5,
) -> pd.DataFrame:
    """One row per label with at least ``min_count`` positive positions.

    Columns: ``count``; ``best_latent`` with its ``best_f1``, ``best_precision`` and
    ``best_recall`` (a latent "predicts" the label where its activation is > 0);
    ``n_precise`` latents (firing at least ``min_fires`` times) whose precision is at least
    ``precision_threshold``; and ``union_recall``, the share of labelled positions where at
    least one of them fires. Rows are sorted by ``best_f1``, best first.
    """
    if latent_acts.ndim != 2:
        raise ValueError(
            f"latent_acts must be 2-D (positions, latents), got {tuple(latent_acts.shape)}"
        )
    check_tensor("latent_acts", latent_acts, finite=True)
    n = latent_acts.shape[0]
    for name, lab in labels.items():
        if lab.shape != (n,):
            raise ValueError(f"labels[{name!r}] must have shape ({n},), got {tuple(lab.shape)}")
    fires = (latent_acts > 0).float()
    fire_counts = fires.sum(0)
    rows = []
    for name, lab in labels.items():
        count = int(lab.sum())
        if count < min_count:
            continue
        tp = lab.float() @ fires  # (d_sae,)
        precision = tp / fire_counts.clamp(min=1)
        recall = tp / count
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        best = int(f1.argmax())
        precise = (precision >= precision_threshold) & (fire_counts >= min_fires)
        covered = (fires[:, precise].sum(-1) > 0) & lab if precise.any() else torch.zeros_like(lab)
        rows.append(
            {
                "label": name,
                "count": count,
                "best_latent": best,
                "best_f1": float(f1[best]),
                "best_precision": float(precision[best]),
                "best_recall": float(recall[best]),
                "n_precise": int(precise.sum()),
                "union_recall": float(covered.sum()) / count,
            }
        )
    table = pd.DataFrame(rows)
    return table.sort_values("best_f1", ascending=False, ignore_index=True) if rows else table
