"""Decoder directions in the residual stream, for every kind of SAE the micro world ships."""

from __future__ import annotations

import pytest
import torch

from saebook.directions import (
    check_latent,
    decoder_directions,
    effective_unembedding,
    logit_effects,
)


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


# --- Logit effects against TransformerLens' own LayerNorm folding -------------------------------


def _folded_copy(model):
    """The same weights in a fresh HookedSAETransformer, processed by TransformerLens with
    ``fold_ln=True`` (``ln_final.w`` folded into ``W_U``, ``ln_final`` a ``LayerNormPre``). The
    residual stream is left as it is (``center_writing_weights=False``) so the SAEs read the
    same activations, and ``center_unembed=False`` keeps every logit comparable one to one."""
    from sae_lens import HookedSAETransformer
    from transformer_lens import HookedTransformerConfig

    cfg = HookedTransformerConfig(**{
        k: v for k, v in model.cfg.to_dict().items()
        if k in HookedTransformerConfig.__dataclass_fields__ and k not in ("n_params",)
    })
    folded = HookedSAETransformer(cfg, tokenizer=model.tokenizer)
    folded.load_and_process_state_dict(
        {k: v.clone() for k, v in model.state_dict().items()},
        fold_ln=True, center_writing_weights=False, center_unembed=False,
        fold_value_biases=False, refactor_factored_attn_matrices=False,
    )
    folded.eval()
    return folded


@pytest.fixture(scope="module")
def tiny_and_folded():
    from saebook.tinyworld.shipped import load_shipped

    model, saes, _ = load_shipped()
    return model, saes, _folded_copy(model)


def test_folded_reference_is_really_folded(tiny_and_folded):
    model, _, folded = tiny_and_folded
    assert model.cfg.normalization_type == "LN" and not hasattr(folded.ln_final, "w")
    w = model.ln_final.w
    assert float(w.min()) < 0.5 < 2.0 < float(w.max())  # far from 1: folding matters here
    tokens = torch.arange(1, 33).view(2, 16)
    with torch.no_grad():
        assert torch.allclose(model(tokens), folded(tokens), atol=1e-4)


def test_logit_effects_equal_a_folded_model(tiny_and_folded, reference_row):
    """Every latent of every role: our logit effects on the unfolded model vs TransformerLens'
    folded model, whose LayerNormPre centring is applied with its own ``apply_ln_to_stack``
    (scale put back: the effect per unit of LayerNorm scale)."""
    from saebook.dashboards import latent_logits

    model, saes, folded = tiny_and_folded
    tokens = torch.arange(1, 17).view(1, 16)
    _, cache = folded.run_with_cache(tokens)
    scale = cache["ln_final.hook_scale"][0, -1, 0]
    worst, n_latents, flips = 0.0, 0, 0
    for role, sae in saes.items():
        dirs = decoder_directions(folded, sae)  # (d_sae, d_model)
        stack = dirs[:, None, None, :].expand(-1, 1, 16, -1)
        normed = cache.apply_ln_to_stack(stack, layer=None, pos_slice=-1)[:, 0, -1] * scale
        reference = normed @ folded.W_U
        ours = logit_effects(model, decoder_directions(model, sae))
        worst = max(worst, float((ours - reference).abs().max()))
        n_latents += sae.cfg.d_sae
        bare = decoder_directions(model, sae) @ model.W_U  # the old, unfolded product
        flips += int((bare.argmax(-1) != reference.argmax(-1)).sum())
        assert torch.allclose(latent_logits(model, sae, 7), reference[7], atol=1e-5), role
    ok = worst <= 1e-5
    reference_row(
        technique="logit effects (dashboards' logit tables, logit lens, top_logits)",
        reference="TransformerLens fold_ln=True on the same weights (LayerNormPre + folded W_U)",
        quantity="max |difference| over every latent and token",
        measured=f"{worst:.1e} over {n_latents} latents of 4 SAEs ({flips} latents' top "
        "token differs under the bare decoder @ W_U)",
        tolerance="1e-5",
        ok=ok,
    )
    assert ok, worst
    assert flips > 0  # the bare product really ranks tokens differently here


def test_effective_unembedding_is_the_same_folded_or_not(tiny_and_folded, micro_model):
    model, _, folded = tiny_and_folded
    assert torch.allclose(effective_unembedding(model), effective_unembedding(folded), atol=1e-5)
    micro = micro_model[0]
    u = effective_unembedding(micro)
    assert torch.allclose(u.mean(0), torch.zeros(u.shape[1]), atol=1e-5)  # centred
    with pytest.raises(ValueError, match="d_model"):
        logit_effects(micro, torch.zeros(3, micro.cfg.d_model + 1))
    with pytest.raises(TypeError, match="directions must be a tensor"):
        logit_effects(micro, [0.0] * micro.cfg.d_model)


def test_dla_equals_transformer_lens_logit_attrs(tiny_and_folded, reference_row):
    """Latent DLA on the unfolded model vs ``cache.logit_attrs`` of the latents' contributions
    on the folded model; and every component of ``cache.decompose_resid`` through our
    effective unembedding vs ``logit_attrs`` on the folded model."""
    from saebook.attribution import direct_logit_attribution, latent_activations_at_last
    from saebook.tinyworld.tasks import code_recall_task

    model, saes, folded = tiny_and_folded
    sae = saes["resid"]
    task = code_recall_task(model, n=12, seed=5)
    ours = direct_logit_attribution(model, sae, task)  # (batch, d_sae)
    acts = latent_activations_at_last(model, sae, task.clean)
    _, cache = folded.run_with_cache(task.clean)
    dirs = decoder_directions(folded, sae)
    worst = 0.0
    for b in range(task.clean.shape[0]):
        on = torch.nonzero(acts[b] > 0).flatten()
        contrib = torch.zeros(on.numel(), task.clean.shape[0], model.cfg.d_model)
        contrib[:, b] = acts[b, on, None] * dirs[on]  # the last position, already sliced
        attrs = cache.logit_attrs(
            contrib, tokens=task.answer, incorrect_tokens=task.wrong, pos_slice=-1
        )[:, b]
        worst = max(worst, float((ours[b, on] - attrs).abs().max()))
    # per component: decompose_resid of the unfolded model through our map, vs TL folded
    _, cache_raw = model.run_with_cache(task.clean)
    comps, labels = cache_raw.decompose_resid(layer=None, pos_slice=-1, return_labels=True)
    comps = comps[:, :, -1] if comps.ndim == 4 else comps
    scale = cache_raw["ln_final.hook_scale"][:, -1]  # (batch, 1)
    u = effective_unembedding(model)
    per_comp = ((comps / scale) @ u)  # (components, batch, d_vocab)
    rows = torch.arange(task.clean.shape[0])
    ours_comp = per_comp[:, rows, task.answer] - per_comp[:, rows, task.wrong]
    tl_comps = cache.decompose_resid(layer=None, pos_slice=-1)
    tl_attrs = cache.logit_attrs(tl_comps, tokens=task.answer, incorrect_tokens=task.wrong,
                                 pos_slice=-1)
    worst_comp = float((ours_comp - tl_attrs.squeeze()).abs().max())
    # float32 round-off grows with the size of what is compared (components reach tens of
    # logits): the tolerance is 1e-5 relative to the largest value, and at least 1e-5 absolute
    tol_comp = 1e-5 * max(1.0, float(tl_attrs.abs().max()))
    ok = worst <= 1e-5 and worst_comp <= tol_comp
    reference_row(
        technique="direct logit attribution (latents and components)",
        reference="TransformerLens cache.logit_attrs / decompose_resid on a fold_ln=True model",
        quantity="max |difference| in logit difference",
        measured=f"{worst:.1e} on latents, {worst_comp:.1e} on {len(labels)} components "
        "(12 code-recall prompts)",
        tolerance=f"1e-5 (latents); {tol_comp:.1e} = 1e-5 x largest component value",
        ok=ok,
    )
    assert ok, (worst, worst_comp, tol_comp)
