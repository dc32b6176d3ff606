"""Tests for saebook.attention on the micro tiny-world build."""

from __future__ import annotations

import pytest
import torch

from saebook import checks
from saebook.attention import head_decoder_norms, repeated_token_scores, source_attribution
from saebook.induction import repeated_tokens


@pytest.fixture(scope="module")
def parts(micro_model):
    model, saes, _ = micro_model
    return model, saes["attn"], saes["resid"]


@pytest.fixture(scope="module")
def repeated(parts):
    model, _, _ = parts
    bos = model.tokenizer.bos_token_id
    pool = torch.arange(model.cfg.d_vocab)
    pool = pool[pool != bos]
    half = (model.cfg.n_ctx - 1) // 2
    return repeated_tokens(4, min(half, 7), pool, bos, torch.Generator().manual_seed(0))


def test_head_decoder_norms_match_blocks(parts):
    model, sae, _ = parts
    norms = head_decoder_norms(sae, model.cfg.n_heads)
    assert norms.shape == (sae.cfg.d_sae, model.cfg.n_heads)
    d_head = model.cfg.d_head
    for h in range(model.cfg.n_heads):
        block = sae.W_dec[:, h * d_head : (h + 1) * d_head].norm(dim=-1)
        torch.testing.assert_close(norms[:, h], block)
    # the blocks together hold the whole decoder norm
    torch.testing.assert_close(norms.pow(2).sum(-1), sae.W_dec.norm(dim=-1).pow(2))


def test_head_decoder_norms_rejects_bad_heads(parts):
    _, sae, _ = parts
    with pytest.raises(ValueError, match="n_heads"):
        head_decoder_norms(sae, 0)
    with pytest.raises(ValueError, match="n_heads"):
        head_decoder_norms(sae, sae.cfg.d_in + 1)


def test_source_attribution_sums_to_sae_pre_activation(parts, repeated):
    model, sae, _ = parts
    _, cache = model.run_with_cache(repeated, names_filter="blocks.1.attn.hook_z")
    acts = sae.encode(cache["blocks.1.attn.hook_z"])
    latent = int(acts.sum(dim=(0, 1)).argmax())  # a latent that fires
    attr = source_attribution(model, sae, repeated, latent)
    b, s = repeated.shape
    assert attr.contributions.shape == (b, model.cfg.n_heads, s, s)
    torch.testing.assert_close(attr.reconstructed(), attr.pre_activation, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(attr.activation, acts[..., latent], atol=1e-5, rtol=1e-5)
    # causal attention: no contribution from future sources
    future = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)
    assert attr.by_source[:, future].abs().max() == 0
    # the split is not trivial: several sources contribute at late positions
    assert (attr.by_source[:, -1].abs() > 1e-6).sum(-1).min() > 1


def test_source_attribution_constant_includes_b_dec(parts, repeated):
    model, sae, _ = parts
    attr = source_attribution(model, sae, repeated[:1], 0)
    expected = float((sae.b_enc[0] - sae.b_dec @ sae.W_enc[:, 0]).detach())
    assert sae.cfg.apply_b_dec_to_input
    assert attr.constant == pytest.approx(expected, abs=1e-5)


def test_source_attribution_rejects_bad_input(parts, repeated):
    model, sae, resid = parts
    with pytest.raises(ValueError, match="hook_z"):
        source_attribution(model, resid, repeated, 0)
    with pytest.raises(IndexError, match="latent"):
        source_attribution(model, sae, repeated, sae.cfg.d_sae)
    with pytest.raises(ValueError, match="tokens"):
        source_attribution(model, sae, repeated[0], 0)


def test_repeated_token_scores_table(parts, repeated):
    model, sae, _ = parts
    table = repeated_token_scores(model, sae, repeated, batch_size=3, progress=False)
    assert len(table) == sae.cfg.d_sae
    assert list(table["latent"]) == list(range(sae.cfg.d_sae))
    half = (repeated.shape[1] - 1) // 2
    _, cache = model.run_with_cache(repeated, names_filter="blocks.1.attn.hook_z")
    acts = sae.encode(cache["blocks.1.attn.hook_z"])
    torch.testing.assert_close(
        torch.tensor(table["mean_second"].values, dtype=torch.float32),
        acts[:, half + 1 :].mean(dim=(0, 1)),
        atol=1e-5,
        rtol=1e-4,
    )
    gain = table["mean_second"] - table["mean_first"]
    assert (gain - table["repeat_gain"]).abs().max() < 1e-6
    norms = head_decoder_norms(sae, model.cfg.n_heads)
    assert list(table["top_head"]) == norms.argmax(-1).tolist()
    assert table["top_head_share"].between(1 / model.cfg.n_heads - 1e-6, 1 + 1e-6).all()


def test_repeated_token_scores_shares_match_source_attribution(parts, repeated):
    model, sae, _ = parts
    table = repeated_token_scores(model, sae, repeated, progress=False)
    half = (repeated.shape[1] - 1) // 2
    latent = int(table["mean_second"].idxmax())
    attr = source_attribution(model, sae, repeated, latent)
    dst = torch.arange(half + 1, 2 * half + 1)
    w = attr.activation[:, half + 1 :]
    for name, offset in (("induction", half - 1), ("duplicate", half), ("previous", 1)):
        contrib = attr.by_source[:, dst, dst - offset]
        pre = attr.pre_activation[:, half + 1 :]
        share = (w * contrib / torch.where(w > 0, pre, torch.ones_like(pre))).sum() / w.sum()
        assert table.loc[latent, f"{name}_share"] == pytest.approx(float(share), abs=1e-4)


def test_repeated_token_scores_rejects_unrepeated_shape(parts):
    model, sae, _ = parts
    with pytest.raises(ValueError, match="repeated_tokens"):
        repeated_token_scores(model, sae, torch.zeros(2, 8, dtype=torch.long), progress=False)


def test_check_head_norms_accepts_reference_and_rejects_transpose():
    checks.check_head_norms(lambda w, n: w.reshape(w.shape[0], n, -1).norm(dim=-1))
    with pytest.raises(AssertionError, match="case"):
        checks.check_head_norms(lambda w, n: w.reshape(w.shape[0], -1, n).norm(dim=-2))


def test_source_attribution_after_the_sae_was_spliced_into_the_model(parts, repeated):
    """Splicing an SAE into a HookedSAETransformer renames its hook points with the model's
    prefix for good; the attribution must still read SAELens' own pre-activations after that
    (it raised KeyError 'hook_sae_acts_pre' once a chapter had used the SAE in model.saes)."""
    model, sae, _ = parts
    before = source_attribution(model, sae, repeated[:1], 0)
    with model.saes(saes=[sae]):
        model(repeated[:1])
    assert sae.hook_dict["hook_sae_acts_pre"].name != "hook_sae_acts_pre"
    after = source_attribution(model, sae, repeated[:1], 0)
    torch.testing.assert_close(after.pre_activation, before.pre_activation)
    torch.testing.assert_close(after.activation, before.activation)


def _plain_head_attribution(model, layer, task):
    """Head-level attribution patching with plain TransformerLens hooks (no SAE at all)."""
    name = f"blocks.{layer}.attn.hook_z"
    store = {}

    def keep(z, hook):
        z.retain_grad()
        store["z"] = z
        return z

    with torch.enable_grad():
        logits = model.run_with_hooks(task.clean, fwd_hooks=[(name, keep)])
        task.logit_diff(logits).sum().backward()
    grad = store["z"].grad.detach()
    model.zero_grad(set_to_none=True)
    _, cache = model.run_with_cache(task.corrupted, names_filter=name)
    _, base = model.run_with_cache(task.clean, names_filter=name)
    delta = cache[name] - base[name]
    return (grad * delta).sum((0, 1, 3)) / task.clean.shape[0]


def test_head_attributions_add_up_to_plain_head_patching(micro_model, reference_row):
    from saebook import feature_circuits as fc
    from saebook.attention import head_attributions, head_latent_table
    from saebook.tinyworld.tasks import code_recall_task

    model, saes, _ = micro_model
    sae = saes["attn"]
    layer = int(sae.cfg.metadata.hook_name.split(".")[1])
    task = code_recall_task(model, n=4, seed=1)
    (attr,) = head_attributions(model, [sae], task)
    assert attr.shape == (sae.cfg.d_sae + 1, model.cfg.n_heads)
    ref = _plain_head_attribution(model, layer, task)
    gap = float((attr.sum(0) - ref).abs().max())
    scale = float(ref.abs().max())
    ok = gap <= 1e-4 * max(scale, 1.0)
    reference_row(
        technique="attention SAEs: task attribution split by head",
        reference="head-level attribution patching with plain TransformerLens hooks (no SAE)",
        quantity="max |difference| of per-head sums (latents + error)",
        measured=f"{gap:.1e} (largest head {scale:.2e})", tolerance="< 1e-4 x max(|head|, 1)",
        ok=ok,
    )
    assert ok
    # the rows add up to feature_circuits' per-latent estimates
    nodes = fc.node_attributions(model, [sae], task)
    assert torch.allclose(attr.sum(1), nodes, atol=1e-5, rtol=1e-4)
    table = head_latent_table([attr], [layer], top=3, task_heads={"copy": ((layer, 0),)})
    assert len(table) == 3 and table["attribution"].abs().is_monotonic_decreasing
    assert set(table["known role"]) <= {"", "copy"}
    assert ((table["head share"] > 0) & (table["head share"] <= 1)).all()
    with pytest.raises(ValueError, match="layers must name"):
        head_latent_table([attr], [layer, layer])


def test_split_by_head_rejects_bad_shapes():
    from saebook.attention import split_by_head

    with pytest.raises(ValueError, match="n_heads"):
        split_by_head(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), torch.zeros(3, 4), 3)
    with pytest.raises(ValueError, match="d_sae"):
        split_by_head(torch.zeros(1, 2, 5), torch.zeros(1, 2, 4), torch.zeros(3, 4), 2)
    checks.check_head_split(split_by_head)
