"""Meta-SAE training, variance explained, groups and the label-agreement test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saebook import meta_saes


def _composed(seed=0, n_parts=8, n=256, d=16):
    """Directions that are sums of two of ``n_parts`` shared parts; labels = the first part."""
    g = torch.Generator().manual_seed(seed)
    parts = torch.nn.functional.normalize(torch.randn(n_parts, d, generator=g), dim=-1)
    first = torch.randint(0, n_parts, (n,), generator=g)
    second = (first + torch.randint(1, n_parts, (n,), generator=g)) % n_parts
    dirs = 1.5 * parts[first] + 0.7 * parts[second]
    return dirs, [f"p{int(i)}" for i in first]


def test_variance_explained():
    x = torch.randn(10, 4)
    assert meta_saes.variance_explained(x, x) == pytest.approx(1.0)
    assert meta_saes.variance_explained(x, x.mean(0).expand(10, 4)) == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(meta_saes.variance_explained(torch.ones(3, 2), torch.zeros(3, 2)))
    with pytest.raises(ValueError, match="same shape"):
        meta_saes.variance_explained(x, x[:3])


@pytest.fixture(scope="module")
def trained():
    dirs, labels = _composed()
    meta = meta_saes.train_meta_sae(dirs, d_sae=16, k=2, epochs=150, batch_size=64, lr=3e-3)
    return dirs, labels, meta


def test_meta_sae_reconstructs_composed_directions(trained):
    dirs, _, meta = trained
    unit = torch.nn.functional.normalize(dirs, dim=-1)
    ev = meta_saes.explained_variance(meta, unit)
    assert ev > 0.7, ev
    noise = torch.nn.functional.normalize(torch.randn(256, 16), dim=-1)
    assert meta_saes.explained_variance(meta, noise) < ev - 0.3


def test_meta_groups_share_labels(trained):
    dirs, labels, meta = trained
    groups = meta_saes.meta_groups(meta, dirs)
    assert groups and all(len(g) >= 2 for g in groups.values())
    agreement = meta_saes.group_label_agreement(list(groups.values()), labels, n_random=50)
    assert agreement["real"] > agreement["baseline"] + 0.1
    assert agreement["p_value"] < 0.05


def test_group_label_agreement_edge_cases():
    labels = ["a", "a", "b", "b", None]
    res = meta_saes.group_label_agreement([[0, 1], [2, 3]], labels, n_random=20)
    assert res["real"] == 1.0
    with pytest.raises(ValueError, match="labelled latents"):
        meta_saes.group_label_agreement([[0, 4]], ["a", None, None, None, None])
    with pytest.raises(ValueError, match="groups must index labels"):
        meta_saes.group_label_agreement([[0, 9]], labels)


def test_train_meta_sae_rejects_bad_arguments():
    dirs, _ = _composed(n=32)
    with pytest.raises(ValueError, match="k must be in"):
        meta_saes.train_meta_sae(dirs, d_sae=4, k=4, batch_size=16)
    with pytest.raises(ValueError, match="batch_size must be at most"):
        meta_saes.train_meta_sae(dirs, d_sae=8, k=2, batch_size=64)
    with pytest.raises(ValueError, match="directions must be 2-D"):
        meta_saes.train_meta_sae(dirs[0], d_sae=8, k=2)


def test_checker_accepts_reference_and_rejects_uncentred():
    from saebook import checks

    checks.check_variance_explained(meta_saes.variance_explained)

    def uncentred(x, x_hat):
        return 1 - float((x - x_hat).pow(2).sum()) / float(x.pow(2).sum())

    with pytest.raises(AssertionError, match="case 'noisy reconstruction'"):
        checks.check_variance_explained(uncentred)


def test_pair_agreement_counts_labelled_pairs_within_groups() -> None:
    labels = ["a", "a", "b", None]
    # group 1: pairs (0,1) same, (0,2) and (1,2) differ; group 2: one labelled latent only
    assert meta_saes.pair_agreement([[0, 1, 2], [2, 3]], labels) == pytest.approx(1 / 3)
    assert np.isnan(meta_saes.pair_agreement([[3], [0, 3]], labels))


def test_meta_sae_numbers_match_sklearn_and_a_plain_recount(trained, reference_row):
    """The meta-SAE's variance explained against sklearn's pooled R^2 (``r2_score`` with
    ``multioutput="variance_weighted"``: 1 - SSE / SST over all coordinates) of SAELens'
    own forward pass, and its groups and pair agreement against a recount with numpy and
    itertools.combinations over the codes."""
    from itertools import combinations

    from sklearn.metrics import r2_score

    dirs, labels, meta = trained
    unit = torch.nn.functional.normalize(dirs, dim=-1)
    ev = meta_saes.explained_variance(meta, unit)
    with torch.no_grad():
        recon = meta(unit)  # SAELens' forward: encode then decode
    ev_ref = r2_score(unit.numpy(), recon.numpy(), multioutput="variance_weighted")
    groups = meta_saes.meta_groups(meta, dirs)
    with torch.no_grad():
        codes = meta.encode(unit).numpy()
    expected = {}
    for m in range(codes.shape[1]):
        rows = np.flatnonzero(codes[:, m] > 0)
        if len(rows) >= 2:
            expected[m] = rows[np.argsort(-codes[rows, m], kind="stable")].tolist()
    # duplicate directions tie (the same two parts): compare members and strengths in order
    same_groups = groups.keys() == expected.keys() and all(
        sorted(groups[m]) == sorted(expected[m])
        and np.array_equal(codes[groups[m], m], codes[expected[m], m])
        for m in expected
    )
    agreement = meta_saes.pair_agreement(list(groups.values()), labels)
    pairs = [(a, b) for g in expected.values() for a, b in combinations(g, 2)]
    agreement_ref = sum(labels[a] == labels[b] for a, b in pairs) / len(pairs)
    gaps = {"EV": abs(ev - ev_ref), "pair agreement": abs(agreement - agreement_ref)}
    ok = max(gaps.values()) < 1e-5 and same_groups
    reference_row(
        technique="meta-SAEs: variance explained, groups, pair agreement",
        reference="sklearn r2_score (variance_weighted) of SAELens' forward; groups and pairs "
        "recounted with numpy / itertools",
        quantity="abs difference (EV, pair agreement); groups identical up to tie order",
        measured=f"EV {gaps['EV']:.1e} (EV {ev:.3f}), pairs {gaps['pair agreement']:.1e}; "
        f"{len(groups)} groups identical: {same_groups}",
        tolerance="1e-5; identical groups",
        ok=ok,
    )
    assert same_groups
    for name, value in gaps.items():
        assert value < 1e-5, name
