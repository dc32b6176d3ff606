"""k-sparse probing on synthetic data where the answer is known."""

from __future__ import annotations

import pytest
import torch

from saebook.probing import sparse_probe, sparse_probing, top_k_by_mean_difference, train_test_split


def _data(n: int = 400, d: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = torch.rand(n, generator=g) < 0.3
    X[y, 2] += 3.0  # feature 2 carries the label
    return X, y


def test_top_k_by_mean_difference_finds_the_signal():
    X, y = _data()
    assert top_k_by_mean_difference(X, y, 1).tolist() == [2]
    X[~y, 5] += 5.0  # a larger gap, negative direction
    assert top_k_by_mean_difference(X, y, 2).tolist() == [5, 2]
    with pytest.raises(ValueError, match="k must be"):
        top_k_by_mean_difference(X, y, 0)
    with pytest.raises(ValueError, match="both"):
        top_k_by_mean_difference(X, torch.ones_like(y), 1)
    with pytest.raises(ValueError, match="y must have shape"):
        top_k_by_mean_difference(X, y[:-1], 1)


def test_split_is_stratified_and_disjoint():
    _, y = _data()
    train, test = train_test_split(y, 0.25, seed=1)
    assert len(set(train.tolist()) & set(test.tolist())) == 0
    assert len(train) + len(test) == len(y)
    assert abs(y[test].float().mean() - y[train].float().mean()) < 0.02


def test_sparse_probe_accuracy_reflects_signal():
    X, y = _data()
    good = sparse_probe(X, y, k=1)
    assert good["features"] == [2] and good["balanced_accuracy"] > 0.9
    noise = sparse_probe(X[:, [0, 1, 3]], y, k=1)
    assert noise["balanced_accuracy"] < 0.65


def test_sparse_probing_table():
    X, y = _data()
    table = sparse_probing(
        {"raw": X, "noise": X[:, [0, 1]]},
        {"lab": y, "rare": y & (X[:, 0] > 3)},
        ks=[1, 2, 4],
        progress=False,
    )
    assert set(table["representation"]) == {"raw", "noise"}
    assert set(table["label"]) == {"lab"}  # "rare" has too few positives
    assert len(table) == 3 + 2  # k=4 is skipped for the 2-column representation
    best = table.groupby("representation")["balanced_accuracy"].max()
    assert best["raw"] > best["noise"] + 0.2
    with pytest.raises(ValueError, match="share"):
        sparse_probing({"a": X, "b": X[:10]}, {"lab": y}, ks=[1], progress=False)


def test_top_k_checker():
    from saebook import checks

    checks.check_top_k_by_mean_difference(lambda X, y, k: top_k_by_mean_difference(X, y, k))
    with pytest.raises(AssertionError, match="k=1"):
        checks.check_top_k_by_mean_difference(
            lambda X, y, k: (X[y].mean(0) - X[~y].mean(0)).topk(k).indices
        )


def test_decoder_scaled_is_saelens_fold_where_it_folds():
    """For an SAE that SAELens can fold (a standard SAE), decoder_scaled(encode(x)) equals
    the activations of the SAE after SAELens' own fold_W_dec_norm."""
    import copy

    from sae_lens import StandardSAE, StandardSAEConfig

    from saebook.latent_stats import decoder_scaled

    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=8, d_sae=16))
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(16, 1) * 2 + 0.3)
        sae.b_enc.normal_()
    folded = copy.deepcopy(sae)
    folded.fold_W_dec_norm()
    x = torch.randn(32, 8)
    with torch.no_grad():
        ours = decoder_scaled(sae, sae.encode(x))
        theirs = folded.encode(x)
    assert theirs.abs().max() > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="d_sae=16"):
        decoder_scaled(sae, torch.zeros(3, 5))
