"""Latent-to-latent Jacobians, token and logit gradients on the micro world."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from saebook import checks
from saebook import latent_gradients as lg


@pytest.fixture(scope="module")
def setup(micro_model):
    model, saes, _ = micro_model
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, model.cfg.d_vocab, (10,), generator=g)
    tokens[0] = model.tokenizer.bos_token_id
    return model, saes, tokens


def test_hook_order_and_pairs(setup):
    _, saes, _ = setup
    assert lg.hook_order("hook_embed") < lg.hook_order("blocks.0.hook_mlp_out")
    assert lg.hook_order("blocks.0.hook_mlp_out") < lg.hook_order("blocks.1.hook_resid_pre")
    assert lg.hook_order("blocks.1.hook_resid_pre") < lg.hook_order("blocks.1.attn.hook_z")
    with pytest.raises(ValueError, match="hook must be"):
        lg.hook_order("nonsense")
    pairs = lg.ordered_pairs(saes)
    assert ("mlp", "resid") in pairs and ("resid", "attn") in pairs
    assert ("attn", "resid") not in pairs and ("resid", "mlp") not in pairs


def test_map_reproduces_clean_latents(setup):
    model, saes, tokens = setup
    lmap = lg.latent_map(model, saes["mlp"], saes["attn"], tokens)
    assert len(lmap.up) > 0 and len(lmap.down) > 0
    assert (lmap.up.pos > 0).all() and (lmap.down.pos > 0).all()  # BOS skipped
    out = lmap.fn(lmap.inputs)
    assert torch.allclose(out.cpu(), lmap.down.value, atol=1e-5)


def test_jacobian_matches_finite_differences(setup, reference_row):
    model, saes, tokens = setup
    lmap = lg.latent_map(model, saes["mlp"], saes["attn"], tokens)
    jac = lg.latent_jacobian(model, saes["mlp"], saes["attn"], tokens)
    cols = [0, len(lmap.up) // 2, len(lmap.up) - 1]
    fd = lg.finite_difference(lmap, cols, eps=1e-2)
    assert jac.jacobian[:, cols].abs().max() > 1e-3  # not trivially zero
    diff = (fd - jac.jacobian[:, cols]).abs()
    bound = 2e-3 + 2e-2 * jac.jacobian[:, cols].abs()
    reference_row(
        technique="latent gradients (latent-to-latent Jacobian)",
        reference="central finite differences through the model (eps 1e-2, micro world)",
        quantity="max |difference| / (2e-3 + 2% of the entry)",
        measured=f"{float((diff / bound).max()):.2g} (max |difference| {float(diff.max()):.1e})",
        tolerance="<= 1",
        ok=bool((diff <= bound).all()),
    )
    assert torch.allclose(fd, jac.jacobian[:, cols], atol=2e-3, rtol=2e-2)
    # causality: a later latent never depends on an earlier latent at a later position
    later = jac.up.pos[None, :] > jac.down.pos[:, None]
    assert jac.jacobian[later].abs().max() == 0


def test_sparse_equals_dense_and_modes_agree(setup):
    model, saes, tokens = setup
    kw = dict(down_positions=[-1])
    sparse = lg.latent_jacobian(model, saes["mlp"], saes["attn"], tokens, **kw)
    dense = lg.latent_jacobian(model, saes["mlp"], saes["attn"], tokens, dense=True, **kw)
    fwd = lg.latent_jacobian(model, saes["mlp"], saes["attn"], tokens, mode="fwd", **kw)
    assert torch.allclose(sparse.jacobian, dense.jacobian, atol=1e-5)
    assert torch.allclose(sparse.jacobian, fwd.jacobian, atol=1e-5)
    assert (sparse.down.pos == len(tokens) - 1).all()
    with pytest.raises(ValueError, match="mode must be"):
        lg.latent_jacobian(model, saes["mlp"], saes["attn"], tokens, mode="sideways", **kw)


def test_linear_pair_equals_virtual_weights(setup):
    model, saes, tokens = setup
    jac = lg.latent_jacobian(model, saes["mlp"], saes["resid"], tokens)
    weights = lg.virtual_weights(model, saes["mlp"], saes["resid"])
    expected = weights[jac.up.latent][:, jac.down.latent].T
    expected = expected * (jac.up.pos[None, :] == jac.down.pos[:, None])
    assert torch.allclose(jac.jacobian, expected, atol=1e-5)
    with pytest.raises(ValueError, match="residual-stream hook"):
        lg.virtual_weights(model, saes["mlp"], saes["attn"])


def test_position_matrix_and_table(setup):
    model, saes, tokens = setup
    jac = lg.latent_jacobian(model, saes["mlp"], saes["attn"], tokens)
    mat = jac.position_matrix(len(tokens))
    assert mat.shape == (len(tokens), len(tokens))
    assert torch.allclose(mat.sum(), jac.jacobian.abs().sum())
    assert mat.triu(1).abs().max() == 0
    table = jac.top_edges(5)
    assert len(table) == 5 and table["gradient"].abs().is_monotonic_decreasing


def test_bad_arguments(setup):
    model, saes, tokens = setup
    with pytest.raises(ValueError, match="must write before"):
        lg.latent_map(model, saes["attn"], saes["mlp"], tokens)
    with pytest.raises(ValueError, match="one sequence"):
        lg.latent_map(model, saes["mlp"], saes["attn"], tokens.repeat(2, 1))
    with pytest.raises(IndexError, match="pos must be"):
        lg.token_attribution(model, saes["attn"], tokens, 99, 0)
    with pytest.raises(IndexError, match="down_positions must be"):
        lg.latent_map(model, saes["mlp"], saes["attn"], tokens, down_positions=[len(tokens)])
    with pytest.raises(ValueError, match="at least one position"):
        lg.latent_map(model, saes["mlp"], saes["attn"], tokens, up_positions=[])


def test_token_attribution_and_logit_jacobian(setup):
    model, saes, tokens = setup
    acts = lg.latent_map(model, saes["mlp"], saes["attn"], tokens, down_positions=[-1]).down
    attr = lg.token_attribution(model, saes["attn"], tokens, -1, int(acts.latent[0]))
    assert attr.shape == (len(tokens),) and attr.abs().sum() > 0
    early = lg.token_attribution(model, saes["attn"], tokens, 4, int(acts.latent[0]))
    assert early[5:].abs().max() == 0  # causal: later tokens cannot matter
    ids = torch.tensor([1, 2, 3])
    jac, active = lg.latent_logit_jacobian(model, saes["mlp"], tokens, ids, pos=5)
    assert jac.shape == (3, len(active)) and (active.pos <= 5).all()
    # against autograd on the spliced model: perturb one latent along its decoder column
    col = int(jac.abs().sum(0).argmax())
    eps = 1e-2
    p, i = int(active.pos[col]), int(active.latent[col])
    direction = (
        saes["mlp"].decode(torch.eye(saes["mlp"].cfg.d_sae)[i]) - saes["mlp"].b_dec
    ).detach()
    hook = saes["mlp"].cfg.metadata.hook_name

    def shifted(sign):
        def fn(act, hook):
            act = act.clone()
            act[0, p] += sign * eps * direction
            return act

        return model.run_with_hooks(tokens[None], fwd_hooks=[(hook, fn)])[0, 5, ids]

    with torch.no_grad():
        fd = (shifted(1) - shifted(-1)) / (2 * eps)
    assert torch.allclose(fd, jac[:, col], atol=2e-3, rtol=2e-2)


def test_checker_accepts_reference_and_rejects_wrong():
    checks.check_latent_jacobian(checks.reference_latent_jacobian)

    def no_relu(x0, dirs, w, b, v):
        return (dirs @ w).T

    with pytest.raises(AssertionError, match="case"):
        checks.check_latent_jacobian(no_relu)


def test_residual_connected(setup):
    _, saes, _ = setup
    assert lg.residual_connected(saes["mlp"], saes["resid"])
    assert lg.residual_connected(saes["transcoder"], saes["resid"])
    assert not lg.residual_connected(saes["mlp"], saes["attn"])
    assert not lg.residual_connected(saes["resid"], saes["attn"])


def _record_blocks(monkeypatch) -> list[int]:
    """Sizes of the blocks of passes ``_jacobian`` vectorises, in order."""
    seen: list[int] = []
    real = lg._one_hot

    def one_hot(start, stop, n, like):
        seen.append(stop - start)
        return real(start, stop, n, like)

    monkeypatch.setattr(lg, "_one_hot", one_hot)
    return seen


def test_auto_chunk_size_bounds_vectorised_passes(setup, monkeypatch):
    assert lg.auto_chunk_size(10, 100, budget=10_000) == 10  # small maps: all at once
    assert lg.auto_chunk_size(24576, 24576 * 17, budget=1 << 24) == 40  # gpt2-wide dense map
    assert lg.auto_chunk_size(5, 10**9, budget=100) == 1
    with pytest.raises(ValueError, match="n_passes"):
        lg.auto_chunk_size(0, 10)
    # a tiny budget forces one pass at a time and gives the same dense Jacobian
    model, saes, tokens = setup
    kw = dict(down_positions=[-1], dense=True)
    whole = lg.latent_jacobian(model, saes["mlp"], saes["attn"], tokens, **kw)
    monkeypatch.setattr(lg, "JACOBIAN_BUDGET", 1)
    seen = _record_blocks(monkeypatch)
    chunked = lg.latent_jacobian(model, saes["mlp"], saes["attn"], tokens, mode="rev", **kw)
    assert seen == [1] * saes["attn"].cfg.d_sae  # one row of the dense map at a time
    assert torch.allclose(whole.jacobian, chunked.jacobian, atol=1e-5)


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_chunks_give_the_same_jacobian_in_both_modes(setup, monkeypatch, mode):
    model, saes, tokens = setup
    whole = lg.latent_jacobian(model, saes["mlp"], saes["attn"], tokens, mode=mode)
    seen = _record_blocks(monkeypatch)
    chunked = lg.latent_jacobian(model, saes["mlp"], saes["attn"], tokens, mode=mode,
                                 chunk_size=3)  # fmt: skip
    n_passes = len(whole.down) if mode == "rev" else len(whole.up)
    assert sum(seen) == n_passes and max(seen) == 3 and len(seen) == -(-n_passes // 3)
    assert torch.allclose(whole.jacobian, chunked.jacobian, atol=1e-6)
    assert whole.jacobian.abs().max() > 1e-3
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="chunk_size must be a positive int"):
            lg.latent_jacobian(model, saes["mlp"], saes["attn"], tokens, chunk_size=bad)


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_blocks_of_passes_keep_no_graph(setup, monkeypatch, mode):
    """Issue 15: the model's parameters require gradients, so passes run with autograd on
    return blocks that hold the graph of every pass (all activations, for a second
    derivative) until the Jacobian is complete: 12 GB on gpt2 shapes, growing with the number
    of passes instead of the chunk. Every block must come back without a graph."""
    model, saes, tokens = setup
    assert any(p.requires_grad for p in model.parameters())  # the case that leaked
    blocks: list[Tensor] = []
    real = lg.vmap

    def vmap(fn, *args, **kwargs):
        batched = real(fn, *args, **kwargs)
        return lambda *a: blocks.append(batched(*a)) or blocks[-1]

    monkeypatch.setattr(lg, "vmap", vmap)
    jac = lg.latent_jacobian(model, saes["mlp"], saes["attn"], tokens, mode=mode, chunk_size=2)
    n_passes = len(jac.down) if mode == "rev" else len(jac.up)
    assert len(blocks) == -(-n_passes // 2) and blocks[0].shape[0] == 2
    assert not any(b.requires_grad or b.grad_fn is not None for b in blocks)
    assert not jac.jacobian.requires_grad


def test_dense_jacobian_sample_matches_the_full_dense_rows(setup, monkeypatch):
    """A sample of the dense rows gives the active block of the full dense Jacobian."""
    model, saes, tokens = setup
    kw = dict(down_positions=[-1])
    full = lg.latent_jacobian(model, saes["mlp"], saes["attn"], tokens, dense=True, **kw)
    n_active = len(full.down)
    seen = _record_blocks(monkeypatch)
    sample, n_total = lg.dense_jacobian_sample(
        model, saes["mlp"], saes["attn"], tokens, n_active + 5, **kw
    )
    assert n_total == saes["attn"].cfg.d_sae  # one later position: one row per latent
    assert torch.allclose(sample.jacobian, full.jacobian, atol=1e-6)
    assert torch.equal(sample.down.latent, full.down.latent)
    assert torch.equal(sample.up.latent, full.up.latent)
    assert sum(seen) == n_active + 5  # reverse-mode passes for the sampled rows only
    again, _ = lg.dense_jacobian_sample(
        model, saes["mlp"], saes["attn"], tokens, n_total + 10, seed=3, **kw
    )  # more rows than exist: all of them
    assert torch.allclose(again.jacobian, full.jacobian, atol=1e-6)
    with pytest.raises(ValueError, match="n_rows must be >= the"):
        lg.dense_jacobian_sample(
            model, saes["mlp"], saes["attn"], tokens, max(n_active - 1, 1), **kw
        )
    with pytest.raises(ValueError, match="n_rows must be a positive int"):
        lg.dense_jacobian_sample(model, saes["mlp"], saes["attn"], tokens, 0, **kw)


_MISSING = object()


def test_pre_activations_of_some_columns_are_those_of_all(setup):
    """``columns`` picks latents (in the order asked) from their encoder columns alone, decoder
    norm rescaling included (de_embedding's cost on wide SAEs, issue 15)."""
    _, saes, _ = setup
    sae = saes["resid"]
    x = torch.randn(5, sae.cfg.d_in, generator=torch.Generator().manual_seed(3))
    some = torch.tensor([sae.cfg.d_sae - 1, 0, 2])
    with torch.no_grad():
        full = lg.pre_activations(sae, x)
        torch.testing.assert_close(lg.pre_activations(sae, x, columns=some), full[:, some])
        before = sae.cfg.__dict__.get("rescale_acts_by_decoder_norm", _MISSING)
        sae.cfg.rescale_acts_by_decoder_norm = True  # TopK's option: each norm differs
        try:
            scaled = lg.pre_activations(sae, x, columns=some)
            torch.testing.assert_close(scaled, full[:, some] * sae.W_dec[some].norm(dim=-1))
        finally:
            if before is _MISSING:
                del sae.cfg.rescale_acts_by_decoder_norm
            else:
                sae.cfg.rescale_acts_by_decoder_norm = before
    with pytest.raises(IndexError, match="columns"):
        lg.pre_activations(sae, x, columns=[sae.cfg.d_sae])
