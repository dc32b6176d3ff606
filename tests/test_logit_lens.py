"""Logit lens of latents: logit weights, moments, token sets and enrichment tests."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy import stats as sps

from saebook import checks
from saebook.dashboards import latent_logits
from saebook.logit_lens import (
    enrichment_table,
    generic_token_sets,
    hypergeometric_enrichment,
    latent_logit_weights,
    logit_statistics,
    mannwhitney_enrichment,
    skew_kurtosis,
    token_set,
    vocab_strings,
    volcano_plot,
    word_token_sets,
)


def test_logit_weights_fold_and_match_dashboards(micro_model):
    model, saes, _ = micro_model
    sae = saes["resid"]
    raw = latent_logit_weights(model, sae, fold_ln=False)
    assert raw.shape == (sae.cfg.d_sae, model.cfg.d_vocab)
    assert torch.allclose(raw[3], (sae.W_dec[3] @ model.W_U).detach(), atol=1e-5)
    folded = latent_logit_weights(model, sae, [3, 4])
    assert torch.allclose(folded[0], latent_logits(model, sae, 3), atol=1e-5)
    d = sae.W_dec[[3, 4]].float()
    d = (d - d.mean(-1, keepdim=True)) * model.ln_final.w
    assert torch.allclose(folded, (d @ model.W_U).detach(), atol=1e-5)
    attn = latent_logit_weights(model, saes["attn"], [0])  # hook_z goes through W_O
    assert attn.shape == (1, model.cfg.d_vocab)


def test_skew_kurtosis_match_scipy():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 300, generator=gen).exp()  # skewed rows
    skew, kurt = skew_kurtosis(x)
    assert np.allclose(skew.numpy(), sps.skew(x.double().numpy(), axis=-1), rtol=1e-8)
    assert np.allclose(kurt.numpy(), sps.kurtosis(x.double().numpy(), axis=-1), rtol=1e-8)
    assert (skew > 1).all()
    s, k = skew_kurtosis(torch.ones(2, 10))
    assert s.isnan().all() and k.isnan().all()
    with pytest.raises(ValueError, match="at least 2 values"):
        skew_kurtosis(torch.ones(3, 1))
    table = logit_statistics(x, latents=[10, 11, 12, 13, 14])
    assert list(table["latent"]) == [10, 11, 12, 13, 14]
    assert np.allclose(table["skew"], skew.numpy())
    with pytest.raises(ValueError, match="latents must name"):
        logit_statistics(x, latents=[1])


def test_token_sets(micro_model):
    model, _, _ = micro_model
    vocab = vocab_strings(model)
    assert len(vocab) == model.cfg.d_vocab
    sets = generic_token_sets([" the", "12", " 7", "Lily", " Tom", ",", '!"', "ab", " "])
    assert sets["starts_with_space"].tolist() == [1, 0, 1, 0, 1, 0, 0, 0, 0]
    assert sets["all_digits"].tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert sets["capitalised"].tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert sets["punctuation"].tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 0]
    words = word_token_sets([" Lily", " Li", "lily", " red", "x"], {"name": ["Lily"], "c": ["red"]})
    assert words["name"].tolist() == [True, False, True, False, False]
    assert words["c"].tolist() == [False, False, False, True, False]
    assert "c" not in word_token_sets([" red"], {"c": ["red"]}, min_size=2)
    cased = word_token_sets([" Lily", "lily"], {"n": ["Lily"]}, case_sensitive=True)
    assert cased["n"].tolist() == [True, False]
    with pytest.raises(TypeError, match="list of words"):
        word_token_sets(["a"], {"n": "Lily"})
    assert token_set(["a", "bb"], lambda t: len(t) == 2).tolist() == [False, True]


def test_enrichment_tests_match_scipy():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 60, generator=gen)
    in_set = torch.zeros(60, dtype=torch.bool)
    in_set[:12] = True
    logits[0, in_set] += 3  # row 0 strongly enriched
    hits, p = hypergeometric_enrichment(logits, in_set, k=10)
    for row in range(4):
        top = logits[row].topk(10).indices
        x = int(in_set[top].sum())
        assert hits[row] == x
        assert np.isclose(p[row], sps.hypergeom.sf(x - 1, 60, 12, 10))
    assert p[0] < 1e-4 and p[0] < p[1:].min()
    auc, pu = mannwhitney_enrichment(logits, in_set)
    for row in range(4):
        ref = sps.mannwhitneyu(logits[row, in_set].numpy(), logits[row, ~in_set].numpy(),
                               alternative="greater", method="asymptotic")  # fmt: skip
        assert np.isclose(pu[row], ref.pvalue, rtol=1e-6)
        assert np.isclose(auc[row], ref.statistic / (12 * 48))
    tied = torch.tensor([[1.0, 1.0, 2.0, 2.0, 3.0, 0.0]])
    mask = torch.tensor([True, False, True, False, True, False])
    ref = sps.mannwhitneyu([1.0, 2.0, 3.0], [1.0, 2.0, 0.0], alternative="greater",
                           method="asymptotic")  # fmt: skip
    assert np.isclose(mannwhitney_enrichment(tied, mask)[1][0], ref.pvalue)
    assert mannwhitney_enrichment(logits, torch.zeros(60, dtype=torch.bool))[0].isnan().all()
    with pytest.raises(ValueError, match="k must be"):
        hypergeometric_enrichment(logits, in_set, k=61)
    with pytest.raises(ValueError, match=r"shape \(60,\)"):
        hypergeometric_enrichment(logits, in_set[:5], k=3)
    with pytest.raises(TypeError, match="bool tensor"):
        mannwhitney_enrichment(logits, in_set.float())


def test_enrichment_table_and_volcano():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(30, 80, generator=gen)
    a = torch.zeros(80, dtype=torch.bool)
    a[:10] = True
    b = torch.zeros(80, dtype=torch.bool)
    b[40:60] = True
    logits[:5, a] += 4
    table = enrichment_table(
        logits, {"a": a, "b": b}, k=10, latents=range(100, 130), chunk=7, progress=False
    )
    assert len(table) == 60 and set(table["latent"]) == set(range(100, 130))
    sig = table[table["significant"]]
    assert set(sig["token_set"]) == {"a"} and set(sig["latent"]) == set(range(100, 105))
    ref = sps.false_discovery_control(table["p_hypergeom"].to_numpy())
    assert np.allclose(table["q_hypergeom"], ref)
    assert (table["q_mannwhitney"] >= table["p_mannwhitney"] - 1e-12).all()
    assert np.isclose(
        table.loc[table["latent"] == 100].iloc[0]["fold"],
        table.loc[table["latent"] == 100].iloc[0]["in_top_k"] / (10 * 10 / 80),
    )
    fig = volcano_plot(table)
    assert len(fig.data) == 2
    with pytest.raises(KeyError, match="enrichment_table"):
        volcano_plot(table.drop(columns=["auc"]), effect="auc")
    with pytest.raises(ValueError, match="at least one"):
        enrichment_table(logits, {})


def test_hypergeometric_checker():
    def correct(logits, in_set, k):
        return hypergeometric_enrichment(logits, in_set, k)[1]

    def counts_instead(logits, in_set, k):  # p = P(X > x), off by one
        hits = in_set[logits.topk(k, dim=-1).indices].sum(-1).numpy()
        return torch.as_tensor(sps.hypergeom.sf(hits, logits.shape[1], int(in_set.sum()), k))

    checks.check_hypergeometric_p(correct)
    with pytest.raises(AssertionError, match="case"):
        checks.check_hypergeometric_p(counts_instead)


def _hypergeom_tail(x: int, n_vocab: int, n_set: int, k: int) -> float:
    """P(X >= x) for k draws from n_vocab tokens of which n_set are in the set, by counting."""
    total = math.comb(n_vocab, k)
    ways = sum(
        math.comb(n_set, i) * math.comb(n_vocab - n_set, k - i) for i in range(x, min(k, n_set) + 1)
    )
    return float(Fraction(ways, total))


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values: min over j >= i of p_(j) m / j, capped at 1."""
    order = np.argsort(p)
    m = len(p)
    q_sorted = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        running = min(running, p[order[rank - 1]] * m / rank)
        q_sorted[rank - 1] = running
    q = np.empty(m)
    q[order] = q_sorted
    return q


def test_enrichment_table_matches_scipy_and_exact_counts(micro_model, reference_row):
    """Every (latent, token set) of the micro resid SAE: top-k hits recounted with numpy, the
    hypergeometric tail summed exactly with binomial coefficients, AUC and p-value from
    scipy.stats.mannwhitneyu, and Benjamini-Hochberg q-values by hand."""
    model, saes, _ = micro_model
    logits = latent_logit_weights(model, saes["resid"])
    sets = {n: m for n, m in generic_token_sets(vocab_strings(model)).items() if 0 < m.sum()}
    assert len(sets) >= 2
    k = 20
    table = enrichment_table(logits, sets, k=k, chunk=50, progress=False)
    n_vocab = logits.shape[1]
    x = logits.double().numpy()
    rel = {"p_hypergeom": 0.0, "p_mannwhitney": 0.0, "auc": 0.0, "q": 0.0}
    hits_equal = True
    for row in table.itertuples():
        mask = sets[row.token_set].numpy()
        top = np.argsort(-x[row.latent], kind="stable")[:k]
        hits = int(mask[top].sum())
        hits_equal &= hits == row.in_top_k
        exact = _hypergeom_tail(hits, n_vocab, int(mask.sum()), k)
        rel["p_hypergeom"] = max(rel["p_hypergeom"], abs(row.p_hypergeom / exact - 1))
        ref = sps.mannwhitneyu(
            x[row.latent, mask], x[row.latent, ~mask], alternative="greater", method="asymptotic"
        )
        rel["p_mannwhitney"] = max(rel["p_mannwhitney"], abs(row.p_mannwhitney / ref.pvalue - 1))
        auc = ref.statistic / (mask.sum() * (~mask).sum())
        rel["auc"] = max(rel["auc"], abs(row.auc - auc))
    for test in ("hypergeom", "mannwhitney"):
        q = _bh(table[f"p_{test}"].to_numpy())
        rel["q"] = max(rel["q"], float(np.abs(table[f"q_{test}"].to_numpy() / q - 1).max()))
    worst = max(rel.values())
    ok = worst < 1e-6 and hits_equal
    reference_row(
        technique="logit lens: token-set enrichment (resid SAE)",
        reference="scipy.stats.mannwhitneyu; hypergeometric tail summed with math.comb; "
        "Benjamini-Hochberg by hand (micro world)",
        quantity="max relative difference (p-values, q-values), abs (AUC); top-k hits",
        measured=", ".join(f"{name} {value:.1e}" for name, value in rel.items())
        + f" over {len(table)} rows; hits equal: {hits_equal}",
        tolerance="1e-6, equal hits",
        ok=ok,
    )
    assert hits_equal
    for name, value in rel.items():
        assert value < 1e-6, name
    assert table["p_hypergeom"].min() < 0.05  # some row is enriched: not all p-values are 1
