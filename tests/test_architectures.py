"""Tests for saebook.architectures on the micro tiny-world build and small synthetic SAEs."""

from __future__ import annotations

import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig

from saebook import checks
from saebook.architectures import (
    encode_from_formula,
    firing_agreement,
    jumprelu_from_topk,
    pre_activations,
    train_standard_sae,
)
from saebook.metrics import explained_variance


@pytest.fixture(scope="module")
def parts(micro_model):
    model, saes, _ = micro_model
    return model, saes


@pytest.fixture(scope="module")
def resid_x(parts):
    model, saes = parts
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.cfg.d_vocab, (16, model.cfg.n_ctx), generator=g)
    _, cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_pre")
    return cache["blocks.1.hook_resid_pre"].flatten(0, 1)


def _randomised(sae, seed: int):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return sae


def test_formula_matches_sae_lens_topk_and_transcoder(parts, resid_x):
    model, saes = parts
    topk = saes["resid"]
    torch.testing.assert_close(encode_from_formula(topk, resid_x), topk.encode(resid_x).detach())
    tc = saes["transcoder"]
    x = torch.randn(50, tc.cfg.d_in, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(encode_from_formula(tc, x), tc.encode(x).detach())


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_formula_matches_sae_lens_standard_and_jumprelu(apply_b_dec):
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(2))
    std = _randomised(StandardSAE(StandardSAEConfig(6, 20, apply_b_dec_to_input=apply_b_dec)), 3)
    torch.testing.assert_close(encode_from_formula(std, x), std.encode(x).detach())
    jr = _randomised(JumpReLUSAE(JumpReLUSAEConfig(6, 20, apply_b_dec_to_input=apply_b_dec)), 4)
    with torch.no_grad():
        jr.threshold.copy_(torch.linspace(-0.5, 1.5, 20))
    got = encode_from_formula(jr, x)
    torch.testing.assert_close(got, jr.encode(x).detach())
    # thresholds matter: some positive pre-activations are cut
    assert ((pre_activations(jr, x) > 0) & (got == 0)).any()


def test_pre_activations_use_b_dec_only_when_configured():
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(5))
    on = _randomised(StandardSAE(StandardSAEConfig(6, 8, apply_b_dec_to_input=True)), 6)
    off = _randomised(StandardSAE(StandardSAEConfig(6, 8, apply_b_dec_to_input=False)), 6)
    with torch.no_grad():
        torch.testing.assert_close(pre_activations(on, x), (x - on.b_dec) @ on.W_enc + on.b_enc)
        torch.testing.assert_close(pre_activations(off, x), x @ off.W_enc + off.b_enc)


def test_formula_rejects_bad_input(parts):
    _, saes = parts
    with pytest.raises(ValueError, match="d_in"):
        encode_from_formula(saes["resid"], torch.zeros(3, saes["resid"].cfg.d_in + 1))


def test_jumprelu_from_topk_matches_firing_counts(parts, resid_x):
    _, saes = parts
    topk = saes["resid"]
    jr = jumprelu_from_topk(topk, resid_x)
    assert isinstance(jr, JumpReLUSAE)
    assert jr.cfg.metadata.hook_name == topk.cfg.metadata.hook_name
    topk_acts, jr_acts = topk.encode(resid_x).detach(), jr.encode(resid_x).detach()
    # on its own sample, every latent fires exactly as often as under TopK
    diff = ((jr_acts > 0).sum(0) - (topk_acts > 0).sum(0)).abs()
    assert diff.max() == 0, diff.nonzero()
    # where both fire, the values are the TopK values (same weights)
    both = (jr_acts > 0) & (topk_acts > 0)
    torch.testing.assert_close(jr_acts[both], topk_acts[both])
    agree = firing_agreement(topk_acts, jr_acts)
    assert agree["recall"] > 0.5 and agree["precision"] > 0.5, agree


def test_jumprelu_from_topk_rejects_non_topk(parts, resid_x):
    _, saes = parts
    with pytest.raises(ValueError, match="TopK"):
        jumprelu_from_topk(saes["transcoder"], resid_x)
    with pytest.raises(ValueError, match="x_sample"):
        jumprelu_from_topk(saes["resid"], resid_x[0])


def test_firing_agreement_extremes():
    a = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])
    same = firing_agreement(a, a)
    assert same["recall"] == 1.0 and same["precision"] == 1.0
    assert same["value_corr"] == pytest.approx(1.0)
    disjoint = firing_agreement(a, (a == 0).float())
    assert disjoint["recall"] == 0.0 and disjoint["precision"] == 0.0
    half = firing_agreement(a, a * torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))
    assert half["recall"] == pytest.approx(2 / 3) and half["precision"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        firing_agreement(a, a[:1])


def test_train_standard_sae_learns_sparse_data():
    g = torch.Generator().manual_seed(7)
    features = torch.nn.functional.normalize(torch.randn(12, 8, generator=g), dim=-1)
    coeffs = torch.rand(4096, 12, generator=g) * (torch.rand(4096, 12, generator=g) < 0.15)
    x = coeffs @ features
    meta = {"hook_name": "synthetic"}
    sae = train_standard_sae(x, 24, 0.01, meta, 80_000, batch_size=256, lr=5e-3)
    assert isinstance(sae, StandardSAE)
    assert sae.cfg.metadata.hook_name == "synthetic"
    with torch.no_grad():
        recon = sae.decode(sae.encode(x))
    assert explained_variance(x, recon) > 0.8
    with pytest.raises(ValueError, match="l1_coefficient"):
        train_standard_sae(x, 24, -1.0, {"hook_name": "synthetic"}, 1000)
    with pytest.raises(ValueError, match="activations"):
        train_standard_sae(x[:10], 24, 1.0, {"hook_name": "synthetic"}, 1000)


def test_check_jumprelu_encode_accepts_formula_and_rejects_non_strict_threshold():
    def good(x, W_enc, b_enc, b_dec, threshold, apply_b_dec):
        pre = (x - b_dec if apply_b_dec else x) @ W_enc + b_enc
        return pre.relu() * (pre > threshold)

    def non_strict(x, W_enc, b_enc, b_dec, threshold, apply_b_dec):
        pre = (x - b_dec if apply_b_dec else x) @ W_enc + b_enc
        return pre.relu() * (pre >= threshold)

    def ignores_b_dec(x, W_enc, b_enc, b_dec, threshold, apply_b_dec):
        pre = x @ W_enc + b_enc
        return pre.relu() * (pre > threshold)

    checks.check_jumprelu_encode(good)
    with pytest.raises(AssertionError, match="equal to the threshold"):
        checks.check_jumprelu_encode(non_strict)
    with pytest.raises(AssertionError, match="b_dec subtracted"):
        checks.check_jumprelu_encode(ignores_b_dec)


def test_formulas_and_topk_to_jumprelu_match_sae_lens(parts, resid_x, reference_row):
    """The written-out formulas against SAELens' own ``encode`` on every architecture the
    book shows (the micro TopK SAE and transcoder, random standard and JumpReLU SAEs with and
    without the b_dec subtraction), and the TopK -> JumpReLU conversion's thresholds, judged by
    SAELens: its JumpReLUSAE fires each latent as often as its TopKSAE does on the sample."""
    _, saes = parts
    x_small = torch.randn(60, 6, generator=torch.Generator().manual_seed(8))
    cases = {
        "topk": (saes["resid"], resid_x),
        "transcoder": (saes["transcoder"], torch.randn(60, saes["transcoder"].cfg.d_in)),
    }
    for apply_b_dec in (True, False):
        std = StandardSAE(StandardSAEConfig(6, 20, apply_b_dec_to_input=apply_b_dec))
        jr = JumpReLUSAE(JumpReLUSAEConfig(6, 20, apply_b_dec_to_input=apply_b_dec))
        _randomised(std, 9 + apply_b_dec), _randomised(jr, 11 + apply_b_dec)
        with torch.no_grad():
            jr.threshold.copy_(torch.linspace(0.0, 1.5, 20))
        cases[f"standard b_dec={apply_b_dec}"] = (std, x_small)
        cases[f"jumprelu b_dec={apply_b_dec}"] = (jr, x_small)
    diffs = {}
    for name, (sae, x) in cases.items():
        with torch.no_grad():
            theirs = sae.encode(x)
        ours = encode_from_formula(sae, x)
        assert (theirs > 0).any(), name  # something fires: not a comparison of zeros
        diffs[name] = float((ours - theirs).abs().max())
    topk = saes["resid"]
    converted = jumprelu_from_topk(topk, resid_x)
    with torch.no_grad():
        counts_topk = (topk.encode(resid_x) > 0).sum(0)
        counts_jr = (converted.encode(resid_x) > 0).sum(0)
    count_gap = int((counts_jr - counts_topk).abs().max())
    worst = max(diffs.values())
    ok = worst < 1e-5 and count_gap == 0
    reference_row(
        technique="SAE architectures: encode formulas; TopK -> JumpReLU thresholds",
        reference="SAELens' own encode (StandardSAE, TopKSAE, JumpReLUSAE, Transcoder) on the "
        "same weights (micro world)",
        quantity="max abs difference of latents; largest per-latent firing-count gap",
        measured=f"{worst:.1e} over {len(diffs)} SAEs; count gap {count_gap} "
        f"(of {len(resid_x)} rows)",
        note="thresholds are read from the folded weights' own pre-activations: read from "
        "the TopK formula's numbers (rounded differently), one latent fired once more",
        tolerance="1e-5; equal firing counts",
        ok=ok,
    )
    for name, value in diffs.items():
        assert value < 1e-5, name
    assert count_gap == 0, (counts_jr - counts_topk).nonzero()
