"""saebook.groundtruth.label_recovery against sklearn.metrics on the micro world's labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support, recall_score

from saebook.groundtruth import label_recovery
from saebook.tinyworld.corpus import labeled_batch


def test_label_recovery_matches_sklearn(micro_model, reference_row):
    """Every label's best F1, the best latent's precision and recall, the precise latents and
    their union recall, recomputed latent by latent with sklearn.metrics on the same masks."""
    model, saes, _ = micro_model
    sae = saes["resid"]
    tokens, labels = labeled_batch(12, 32, seed=5, tokenizer=model.tokenizer)
    hook = sae.cfg.metadata.hook_name
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[hook])
        acts = sae.encode(cache[hook]).flatten(0, 1)
    flat = {name: lab.flatten() for name, lab in labels.items()}
    table = label_recovery(acts, flat, min_count=8, precision_threshold=0.6, min_fires=3)
    assert len(table) >= 3, "too few labels with enough positives to compare"
    fires = (acts > 0).numpy()
    worst, n_checked, same_sets = 0.0, 0, True
    for row in table.itertuples():
        y = flat[row.label].numpy()
        precision, recall, f1, _ = precision_recall_fscore_support(
            np.repeat(y[:, None], fires.shape[1], 1), fires, average=None, zero_division=0
        )
        best = row.best_latent
        worst = max(worst, abs(row.best_f1 - f1.max()), abs(row.best_f1 - f1[best]))
        worst = max(worst, abs(row.best_precision - precision[best]))
        worst = max(worst, abs(row.best_recall - recall[best]))
        precise = (precision >= 0.6) & (fires.sum(0) >= 3)
        same_sets &= int(precise.sum()) == row.n_precise
        union = fires[:, precise].any(1) if precise.any() else np.zeros_like(y)
        worst = max(worst, abs(row.union_recall - recall_score(y, union, zero_division=0)))
        n_checked += 1
    ok = worst < 1e-6 and same_sets
    reference_row(
        technique="ground-truth label recovery (resid SAE)",
        reference="sklearn.metrics precision_recall_fscore_support / recall_score per latent "
        "(micro world labels)",
        quantity="max abs difference (best F1, its precision and recall, union recall)",
        measured=f"{worst:.1e} over {n_checked} labels; precise-latent counts equal: {same_sets}",
        tolerance="1e-6, equal counts",
        ok=ok,
    )
    assert same_sets
    assert worst < 1e-6
    assert table["best_f1"].max() > 0  # the comparison is not between all-zero scores


def test_label_recovery_rejects_bad_shapes():
    acts = torch.zeros(10, 3)
    with pytest.raises(ValueError, match="2-D"):
        label_recovery(acts[0], {})
    with pytest.raises(ValueError, match=r"labels\['x'\]"):
        label_recovery(acts, {"x": torch.zeros(4, dtype=torch.bool)})
