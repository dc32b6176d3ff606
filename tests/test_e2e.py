"""Unit tests of saebook.e2e on the tiny profile's model (small batches, a few steps)."""

from __future__ import annotations

import pytest
import torch

from saebook.e2e import (
    OBJECTIVES,
    cache_resid,
    downstream_hooks,
    downstream_mse,
    e2e_losses,
    forward_from_resid,
    kl_loss,
    resid_layer,
    splice,
    spliced_logits,
    train_topk,
)
from saebook.metrics import reconstruction_metrics


@pytest.fixture(scope="module")
def tiny():
    from saebook import profiles

    return profiles.load("tiny")


@pytest.fixture(scope="module")
def setup(tiny):
    hook = tiny.saes["resid"].cfg.metadata.hook_name
    tokens = tiny.tokens(6, 24, seed=3)
    resid, keep = cache_resid(tiny.model, tokens, hook, batch_size=4)
    return tiny.model, hook, tokens, resid, keep


def test_resid_layer_and_downstream_hooks(tiny) -> None:
    model = tiny.model
    assert resid_layer(model, "blocks.1.hook_resid_pre") == 1
    assert downstream_hooks(model, "blocks.0.hook_resid_pre") == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
    ]
    for bad in ("blocks.1.hook_mlp_out", f"blocks.{model.cfg.n_layers}.hook_resid_pre"):
        with pytest.raises(ValueError, match="hook_name"):
            resid_layer(model, bad)


def test_cache_resid_matches_run_with_cache(setup) -> None:
    model, hook, tokens, resid, keep = setup
    _, cache = model.run_with_cache(tokens, names_filter=[hook])
    assert torch.allclose(resid, cache[hook], atol=1e-5)
    assert not keep[:, 0].any() and keep[:, 1:].all()


def test_forward_from_resid_reproduces_the_model(setup) -> None:
    model, hook, tokens, resid, _ = setup
    with torch.no_grad():
        logits, (post,) = forward_from_resid(model, resid, 1, ["blocks.1.hook_resid_post"])
        full, cache = model.run_with_cache(tokens, names_filter=["blocks.1.hook_resid_post"])
    assert torch.allclose(logits, full, atol=1e-4)
    assert torch.allclose(post, cache["blocks.1.hook_resid_post"], atol=1e-4)


def test_splice_kl_and_downstream_mse_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    keep = torch.tensor([[False, True, True], [False, True, False]])
    out = splice(a, b, keep)
    assert torch.equal(out[keep], b[keep]) and torch.equal(out[~keep], a[~keep])
    assert float(kl_loss(a, a, keep)) == pytest.approx(0.0, abs=1e-7)
    p, q = a.softmax(-1), b.softmax(-1)
    ref = (p * (p.log() - q.log())).sum(-1)[keep].mean()
    assert float(kl_loss(a, b, keep)) == pytest.approx(float(ref), rel=1e-5)
    expected = ((b - a) ** 2).sum(-1)[keep].mean() * 1.5  # layers: err and 2*err -> mean 1.5
    got = downstream_mse([a, a], [b, a + 2**0.5 * (b - a)], keep)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="keep"):
        kl_loss(a, b, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="clean and new"):
        downstream_mse([], [], keep)


def test_losses_match_run_with_saes(tiny, setup) -> None:
    model, hook, tokens, resid, keep = setup
    sae = tiny.saes["resid"]
    with torch.no_grad():
        terms = e2e_losses(model, sae, resid, keep)
        logits = spliced_logits(model, sae, resid, keep)
    metrics = reconstruction_metrics(model, sae, tokens)
    assert float(terms["kl"]) == pytest.approx(metrics.kl_div, rel=1e-3, abs=1e-5)
    assert float(terms["explained_variance"]) == pytest.approx(metrics.explained_variance, abs=1e-4)
    assert float(terms["l0"]) == pytest.approx(metrics.l0, rel=1e-5)
    clean = model(tokens)
    assert float(kl_loss(clean, logits, keep)) == pytest.approx(metrics.kl_div, rel=1e-3)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_train_topk_lowers_its_loss_and_returns_a_saelens_sae(setup, objective) -> None:
    model, hook, _, resid, keep = setup
    run = train_topk(model, resid, keep, objective, 64, 4, {"hook_name": hook}, 30,
                     batch_rows=3, lr=1e-2)  # fmt: skip
    assert run.sae.cfg.architecture() == "topk" and run.sae.cfg.metadata.hook_name == hook
    assert run.curves["loss"].iloc[-5:].mean() < run.curves["loss"].iloc[:3].mean()
    assert (run.curves["l0"] <= 4).all()
    assert all(p.requires_grad for p in model.parameters())  # the model is left trainable
    again = train_topk(model, resid, keep, objective, 64, 4, {"hook_name": hook}, 3,
                       batch_rows=3, lr=1e-2)  # fmt: skip
    first = train_topk(model, resid, keep, objective, 64, 4, {"hook_name": hook}, 3,
                       batch_rows=3, lr=1e-2)  # fmt: skip
    assert torch.equal(again.sae.W_dec, first.sae.W_dec)  # seeded


def test_train_topk_rejects_bad_arguments(setup) -> None:
    model, hook, _, resid, keep = setup
    with pytest.raises(ValueError, match="objective"):
        train_topk(model, resid, keep, "l1", 64, 4, {"hook_name": hook}, 3)
    with pytest.raises(ValueError, match="metadata"):
        train_topk(model, resid, keep, "e2e", 64, 4, {}, 3)
    with pytest.raises(ValueError, match="k must be below"):
        train_topk(model, resid, keep, "e2e", 8, 8, {"hook_name": hook}, 3)


def test_kl_and_downstream_error_match_whole_model_passes(tiny, setup, reference_row) -> None:
    """The training loop's KL and e2e+ds term, and the KL the chapter reports
    (reconstruction_metrics), against whole-model passes written here: SAELens'
    ``run_with_saes`` (BOS left alone) and a plain ``run_with_hooks`` splice, with
    ``torch.nn.functional.kl_div`` over the non-BOS positions; the downstream residual streams
    from ``run_with_cache`` with and without the splice."""
    import torch.nn.functional as F

    model, hook, tokens, resid, keep = setup
    sae = tiny.saes["resid"]
    bos = torch.tensor([model.tokenizer.bos_token_id])
    down = downstream_hooks(model, hook)

    def patch(act, hook):
        return torch.where(keep[..., None], sae.decode(sae.encode(act)), act)

    def kl_ref(clean, new):
        per_token = F.kl_div(new.log_softmax(-1), clean.log_softmax(-1), log_target=True,
                             reduction="none").sum(-1)  # fmt: skip
        return float(per_token[keep].mean())

    with torch.no_grad():
        terms = e2e_losses(model, sae, resid, keep)
        metrics = reconstruction_metrics(model, sae, tokens)
        clean, clean_cache = model.run_with_cache(tokens, names_filter=down)
        with_saes = model.run_with_saes(tokens, saes=[sae], exclude_special_tokens=bos)
        with model.hooks(fwd_hooks=[(hook, patch)]):
            hooked, hooked_cache = model.run_with_cache(tokens, names_filter=down)
    ref_saes, ref_hooks = kl_ref(clean, with_saes), kl_ref(clean, hooked)
    ds_ref = sum(
        float((hooked_cache[n] - clean_cache[n]).pow(2).sum(-1)[keep].mean()) for n in down
    ) / len(down)
    rel = {
        "loop KL vs run_with_saes": abs(float(terms["kl"]) / ref_saes - 1),
        "loop KL vs run_with_hooks": abs(float(terms["kl"]) / ref_hooks - 1),
        "chapter KL vs run_with_saes": abs(metrics.kl_div / ref_saes - 1),
        "downstream MSE": abs(float(terms["ds_mse"]) / ds_ref - 1),
    }
    worst = max(rel.values())
    ok = worst < 1e-3 and ref_saes > 1e-4
    reference_row(
        technique="end-to-end SAEs: KL and downstream error (resid SAE)",
        reference="whole-model run_with_saes / run_with_hooks splice + torch kl_div; "
        "run_with_cache for the downstream residuals",
        quantity="relative difference (loop KL, reported KL, e2e+ds term)",
        measured=f"max {worst:.1e} (KL {ref_saes:.4f} nats)",
        tolerance="1e-3",
        ok=ok,
    )
    assert ref_saes > 1e-4  # the SAE changes the predictions: not a comparison of zeros
    for name, value in rel.items():
        assert value < 1e-3, name
