"""Decoder directions in the residual stream, for every kind of SAE the micro world ships."""

from __future__ import annotations

import pytest
import torch

from saebook.directions import check_latent, decoder_directions


def test_all_directions_have_residual_width(micro_model):
    model, saes, _ = micro_model
    for role, sae in saes.items():
        dirs = decoder_directions(model, sae)
        assert dirs.shape == (sae.cfg.d_sae, model.cfg.d_model), role


def test_directions_per_hook_kind(micro_model):
    model, saes, _ = micro_model
    resid, attn, tc = saes["resid"], saes["attn"], saes["transcoder"]
    assert torch.allclose(decoder_directions(model, resid, [0, 2]), resid.W_dec[[0, 2]])
    assert torch.allclose(decoder_directions(model, tc, [1]), tc.W_dec[[1]])
    w_o = model.blocks[1].attn.W_O  # the attn SAE reads blocks.1.attn.hook_z
    manual = torch.einsum("hd,hdm->m", attn.W_dec[3].view(w_o.shape[0], w_o.shape[1]), w_o)
    assert torch.allclose(decoder_directions(model, attn, [3])[0], manual, atol=1e-6)
    assert torch.allclose(decoder_directions(model, attn)[3], manual, atol=1e-6)


def test_bad_latents_are_named(micro_model):
    model, saes, _ = micro_model
    sae = saes["resid"]
    with pytest.raises(IndexError, match=r"latents must be in \[0, \d+\).*got \[-1\]"):
        decoder_directions(model, sae, [0, -1])
    with pytest.raises(IndexError, match="latent must be in"):
        check_latent(sae, sae.cfg.d_sae)
    with pytest.raises(TypeError, match="feature must be an int"):
        check_latent(sae, 1.5, arg="feature")
    assert check_latent(sae, torch.tensor(3)) == 3
