"""Pooled decoder maps, labels per latent, clustering and the permutation test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from saebook import geometry


def _clustered(n_groups=3, per_group=12, d=16, noise=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_groups, d, generator=g)
    rows = centres.repeat_interleave(per_group, 0) + noise * torch.randn(
        n_groups * per_group, d, generator=g
    )
    names = [f"g{i}" for i in range(n_groups) for _ in range(per_group)]
    return rows, names


def test_pooled_directions(micro_model):
    _, _, family = micro_model
    dirs, frame = geometry.pooled_directions(family)
    assert dirs.shape[0] == sum(s.cfg.d_sae for s in family) == len(frame)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(len(frame)), atol=1e-5)
    assert list(frame["width"].unique()) == [s.cfg.d_sae for s in family]
    assert frame.loc[len(frame) - 1, "latent"] == family[-1].cfg.d_sae - 1
    with pytest.raises(ValueError, match="at least one SAE"):
        geometry.pooled_directions([])


def test_latent_labels_best_f1():
    acts = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0]])
    labels = {"a": torch.tensor([1, 1, 0, 0]).bool(), "b": torch.tensor([0, 0, 1, 0]).bool()}
    out = geometry.latent_labels(acts, labels)
    assert out[0] == ("a", pytest.approx(1.0))
    assert out[1][0] == "b" and out[1][1] == pytest.approx(2 / 3)
    assert out[2] == (None, 0.0)  # never fires
    assert geometry.latent_labels(acts, labels, min_f1=0.9)[1][0] is None
    with pytest.raises(ValueError, match=r"labels\['a'\] must have shape"):
        geometry.latent_labels(acts, {"a": torch.ones(3).bool()})


def test_within_label_cosine():
    dirs = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert geometry.within_label_cosine(dirs, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.0)
    assert geometry.within_label_cosine(dirs, torch.tensor([0, 0, -1, -1])) == pytest.approx(1.0)
    assert np.isnan(geometry.within_label_cosine(dirs, torch.tensor([0, 1, 2, 3])))


def test_label_cosine_test_detects_structure_and_not_noise():
    rows, names = _clustered()
    real = geometry.label_cosine_test(rows, names, n_permutations=100)
    assert real["within"] > real["baseline"] + 0.3
    assert real["p_value"] < 0.05
    noise = torch.randn(36, 16, generator=torch.Generator().manual_seed(5))
    null = geometry.label_cosine_test(noise, names, n_permutations=100)
    assert null["p_value"] > 0.01
    with pytest.raises(ValueError, match="one entry per direction"):
        geometry.label_cosine_test(rows, names[:-1])
    with pytest.raises(ValueError, match="at least 2 labels"):
        geometry.label_cosine_test(rows, ["x"] * len(names))


def test_embed_and_cluster_separate_groups():
    rows, names = _clustered(noise=0.1)
    for method in ("umap", "tsne"):
        xy = geometry.embed_2d(rows, method=method, n_neighbors=8, n_epochs=50)
        assert xy.shape == (len(names), 2)
    clusters = geometry.cluster_directions(xy, min_cluster_size=5)
    truth = pd.Series(names)
    # each found cluster is pure: all its points come from one planted group
    for cid in set(clusters) - {-1}:
        assert truth[clusters == cid].nunique() == 1
    assert len(set(clusters) - {-1}) >= 2
    with pytest.raises(ValueError, match="method must be"):
        geometry.embed_2d(rows, method="pca")
    with pytest.raises(ValueError, match="min_cluster_size"):
        geometry.cluster_directions(xy, min_cluster_size=1)


def test_geometry_figure():
    frame = pd.DataFrame({"width": [4, 4, 8], "latent": [0, 1, 0], "tok": ["a", "b", "c"]})
    fig = geometry.geometry_figure(frame, np.zeros((3, 2)), color="width", hover="tok")
    assert sum(len(t.x) for t in fig.data) == 3
    with pytest.raises(ValueError, match="one row per frame row"):
        geometry.geometry_figure(frame, np.zeros((2, 2)), color="width")
    with pytest.raises(KeyError, match="color must be a column"):
        geometry.geometry_figure(frame, np.zeros((3, 2)), color="nope")


def test_checker_accepts_reference_and_rejects_self_pairs():
    from saebook import checks

    checks.check_within_label_cosine(geometry.within_label_cosine)

    def with_diagonal(directions, codes):
        unit = torch.nn.functional.normalize(directions.float(), dim=-1)
        same = (codes[:, None] == codes[None, :]) & (codes[:, None] >= 0)
        return float((unit @ unit.T)[same].mean())

    with pytest.raises(AssertionError, match="case 'random'"):
        checks.check_within_label_cosine(with_diagonal)


def test_cosine_neighbours_lists_each_row_first_and_ignores_norms() -> None:
    dirs = torch.tensor([[1.0, 0.0], [10.0, 1.0], [0.0, 3.0], [-1.0, 0.0]])
    sims, index = geometry.cosine_neighbours(dirs, 2)
    assert index[:, 0].tolist() == [0, 1, 2, 3]
    assert index[0, 1] == 1 and index[2, 1] == 1
    assert torch.allclose(sims[:, 0], torch.ones(4))
    with pytest.raises(ValueError, match="k must be an int in"):
        geometry.cosine_neighbours(dirs, 5)


def test_label_cosine_test_matches_loops_and_the_permutation_mean(reference_row):
    """label_cosine_test's within-label and all-pairs means against explicit loops over the
    pairs, and its shuffled baseline against the exact mean of the permutation distribution:
    shuffling labels keeps the number of same-label pairs, so every pair is a same-label
    pair equally often and the expected within-label mean is the all-pairs mean; the
    sampled baseline must sit within 5 standard errors of it. Unlabelled rows are left out."""
    rows, names = _clustered(n_groups=3, per_group=10, noise=0.8, seed=4)
    names = [None if i % 7 == 3 else n for i, n in enumerate(names)]
    n_perm = 400
    res = geometry.label_cosine_test(rows, names, n_permutations=n_perm, seed=2)
    keep = [i for i, n in enumerate(names) if n is not None]
    unit = [(rows[i] / rows[i].norm()).double() for i in keep]
    same, every = [], []
    for a in range(len(keep)):
        for b in range(len(keep)):
            if a != b:
                c = float(unit[a] @ unit[b])
                every.append(c)
                if names[keep[a]] == names[keep[b]]:
                    same.append(c)
    gaps = {
        "within": abs(res["within"] - float(np.mean(same))),
        "all pairs": abs(res["all_pairs"] - float(np.mean(every))),
    }
    # the shuffled values' spread, from the same number of shuffles drawn here
    g = np.random.default_rng(0)
    codes = np.array([names[i] for i in keep])
    sim = np.array([[float(u @ v) for v in unit] for u in unit])
    np.fill_diagonal(sim, np.nan)
    draws = []
    for _ in range(n_perm):
        c = g.permutation(codes)
        mask = c[:, None] == c[None, :]
        draws.append(np.nanmean(np.where(mask, sim, np.nan)))
    std_err = float(np.std(draws)) / np.sqrt(n_perm)
    z = abs(res["baseline"] - float(np.mean(every))) / std_err
    ok = max(gaps.values()) < 1e-5 and z < 5
    reference_row(
        technique="latent geometry: label cosine permutation test",
        reference="explicit loops over pairs; the permutation mean in closed form (the "
        "all-pairs mean)",
        quantity="abs difference (within, all pairs); baseline vs exact mean",
        measured=f"{max(gaps.values()):.1e}; baseline {z:.1f} standard errors from "
        f"{float(np.mean(every)):.3f}",
        tolerance="1e-5; 5 standard errors",
        ok=ok,
    )
    for name, value in gaps.items():
        assert value < 1e-5, name
    assert z < 5
    assert res["within"] > res["baseline"]  # clustered rows: a real effect is measured
