"""Circular features (saebook.circular) against independent references."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sae_lens import SAE, StandardSAEConfig

from saebook import circular


def _pairwise_fisher_lee(a: np.ndarray, b: np.ndarray) -> float:
    """Fisher & Lee (1983) eq. (2): the double sum over pairs i < j, written out."""
    num = den_a = den_b = 0.0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            sa, sb = math.sin(a[i] - a[j]), math.sin(b[i] - b[j])
            num += sa * sb
            den_a += sa * sa
            den_b += sb * sb
    return num / math.sqrt(den_a * den_b)


def test_circular_correlation_matches_the_pairwise_formula(reference_row):
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for n in (5, 17, 60):
        a = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
        b = a + 0.8 * torch.randn(n, generator=g, dtype=torch.float64)
        ours = circular.circular_correlation(a, b)
        ref = _pairwise_fisher_lee(a.numpy(), b.numpy())
        worst = max(worst, abs(ours - ref))
    ok = worst < 1e-10
    reference_row(
        technique="circular features: circular correlation",
        reference="Fisher & Lee's pairwise double-sum formula, written out",
        quantity="max |difference| over 3 samples",
        measured=f"{worst:.1e}", tolerance="< 1e-10", ok=ok,
    )
    assert ok
    a = torch.linspace(0, 2 * math.pi, 13)[:-1]
    assert circular.circular_correlation(a, a + 1.0) == pytest.approx(1.0)
    assert circular.circular_correlation(a, -a) == pytest.approx(-1.0)


def _ring(n_values=7, per=20, d=12, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    value = torch.arange(n_values).repeat_interleave(per)
    theta = 2 * math.pi * value / n_values
    basis, _ = torch.linalg.qr(torch.randn(d, 2, generator=g))
    pts = torch.stack([theta.cos(), theta.sin()], 1) @ basis.T * 3
    return pts + noise * torch.randn(pts.shape, generator=g) + 5.0, value


def test_fit_circle_finds_a_planted_ring_and_matches_sklearn_pca(reference_row):
    from sklearn.decomposition import PCA

    pts, value = _ring()
    fit = circular.fit_circle(pts, value, 7, n_permutations=100)
    ref = PCA(n_components=2).fit(pts.double().numpy())
    gap = abs(fit.variance_2d - float(ref.explained_variance_ratio_.sum()))
    proj = ref.transform(pts.double().numpy())
    # same plane: each axis agrees up to sign
    axis_gap = max(
        min(np.abs(fit.xy[:, k] - proj[:, k]).max(), np.abs(fit.xy[:, k] + proj[:, k]).max())
        for k in range(2)
    )
    ok = gap < 1e-10 and axis_gap < 1e-8
    reference_row(
        technique="circular features: principal plane",
        reference="sklearn.decomposition.PCA(n_components=2)",
        quantity="explained variance share and coordinates (up to sign)",
        measured=f"{gap:.1e} / {axis_gap:.1e}", tolerance="< 1e-10 / < 1e-8", ok=ok,
    )
    assert ok
    assert fit.correlation > 0.99 and fit.order_agreement == 1.0
    assert fit.p_value < 0.02 and fit.baseline < 0.2


def test_fit_circle_sees_no_circle_where_values_are_shuffled():
    pts, value = _ring(seed=1)
    shuffled = value[torch.randperm(len(value), generator=torch.Generator().manual_seed(3))]
    fit = circular.fit_circle(pts, shuffled, 7, n_permutations=100)
    assert fit.correlation < 0.3 and fit.p_value > 0.05


def test_fit_circle_rejects_bad_input():
    pts, value = _ring()
    with pytest.raises(ValueError, match="n_values"):
        circular.fit_circle(pts, value, 2)
    with pytest.raises(ValueError, match="value must lie"):
        circular.fit_circle(pts, value + 7, 7)
    with pytest.raises(ValueError, match="points must be"):
        circular.fit_circle(pts[:5], value, 7)


def test_cycle_latents_keeps_latents_that_tell_the_words_apart():
    value = torch.arange(4).repeat(10)  # 40 rows, 4 words
    acts = torch.zeros(40, 5)
    acts[:, 0] = 1.0 + (value == 2).float() * 5  # fires always, strongly on word 2
    acts[:, 1] = 1.0  # fires alike on every word: says nothing about which
    acts[:, 2] = (value == 1).float() * 3 + 0.01 * torch.arange(40)  # mostly word 1
    acts[:1, 3] = 9.0  # one row only (2.5% of them)
    out = circular.cycle_latents(acts, value, 4, min_share=0.05, min_eta=0.5)
    assert out.tolist() == [0, 2]  # latent 0's eta^2 is exactly 1
    # eta^2 by its definition, for latent 2
    x = acts[:, 2].double()
    between = sum((value == v).sum() * (x[value == v].mean() - x.mean()) ** 2 for v in range(4))
    eta = float(between / ((x - x.mean()) ** 2).sum())
    assert 0.5 < eta < 1.0
    assert circular.cycle_latents(acts, value, 4, min_eta=min(eta + 1e-6, 1.0)).tolist() == [0]
    with pytest.raises(ValueError, match="min_share"):
        circular.cycle_latents(acts, value, 4, min_share=0.0)
    with pytest.raises(ValueError, match="value must lie"):
        circular.cycle_latents(acts, value + 1, 4)


def test_word_embeddings_are_the_rows_of_W_E(micro_model):
    model = micro_model[0]
    emb, value = circular.word_embeddings(model, ("the", "and", "Zzqxv"))
    ids = [model.tokenizer.encode(" " + w, add_special_tokens=False) for w in ("the", "and")]
    assert all(len(i) == 1 for i in ids)
    assert value.tolist() == [0, 1]  # the invented word is several tokens: left out
    assert torch.equal(emb, model.W_E[[i[0] for i in ids]].detach())
    with pytest.raises(ValueError, match="single-token"):
        circular.word_embeddings(model, ("Zzqxv",))


def test_span_reconstruction_equals_decoding_the_kept_latents(reference_row):
    cfg = StandardSAEConfig(d_in=8, d_sae=32)
    sae = SAE.from_dict(cfg.to_dict())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (sae.W_enc, sae.W_dec, sae.b_dec):
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(6, 8, generator=g)
    keep = torch.tensor([3, 7, 20])
    ours = circular.span_reconstruction(sae, x, keep)
    with torch.no_grad():
        f = sae.encode(x)
        mask = torch.zeros(32, dtype=torch.bool)
        mask[keep] = True
        ref = sae.decode(f * mask) - sae.b_dec  # SAELens' decoder, bias removed
    gap = float((ours - ref).abs().max())
    ok = gap < 1e-5
    reference_row(
        technique="circular features: span reconstruction",
        reference="SAELens SAE.decode of the masked latents, minus b_dec",
        quantity="max |difference|",
        measured=f"{gap:.1e}", tolerance="< 1e-5", ok=ok,
    )
    assert ok
    with pytest.raises(ValueError, match="latents must be"):
        circular.span_reconstruction(sae, x, torch.tensor([40]))
    with pytest.raises(ValueError, match="acts must have shape"):
        circular.span_reconstruction(sae, x[:, :4], keep)


def test_cycle_contexts_on_prompts_point_at_each_word(micro_model):
    model = micro_model[0]
    prof = SimpleNamespace(model=model, device="cpu", labeled_tokens=lambda *a, **k: None)
    ctx = circular.cycle_contexts(prof, "day")
    assert len(ctx.value) == 7 * 7 and ctx.value.tolist()[:7] == [0] * 7
    for i in (0, 10, 48):
        word = ctx.words[int(ctx.value[i])]
        upto = model.to_string(ctx.rows[ctx.row[i], 1 : ctx.pos[i] + 1])
        assert upto.endswith(word), (upto, word)
    acts = circular.cycle_activations(model, "blocks.0.hook_resid_post", ctx, batch_size=16)
    _, cache = model.run_with_cache(ctx.rows, names_filter="blocks.0.hook_resid_post")
    assert torch.allclose(acts, cache["blocks.0.hook_resid_post"][ctx.row, ctx.pos], atol=1e-5)
    with pytest.raises(ValueError, match="concept must be"):
        circular.cycle_contexts(prof, "hour")


def test_cycle_contexts_on_tiny_are_the_labelled_words():
    import saebook.profiles as profiles

    prof = profiles.load("tiny", device="cpu")
    for concept in ("day", "month"):
        ctx = circular.cycle_contexts(prof, concept, n_rows=32, seed=1)
        assert len(ctx.value) >= 20
        strs = [prof.model.to_string(ctx.rows[r, p : p + 1]).strip()
                for r, p in zip(ctx.row.tolist(), ctx.pos.tolist(), strict=True)]  # fmt: skip
        assert strs == [ctx.words[v] for v in ctx.value.tolist()]
