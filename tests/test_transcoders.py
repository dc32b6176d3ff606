"""Transcoder splicing, attention-free de-embeddings and their overlap score on the micro world."""

from __future__ import annotations

import pytest
import torch

from saebook import checks
from saebook import transcoders as tr
from saebook.latent_stats import latent_stats


@pytest.fixture(scope="module")
def setup(micro_model):
    model, saes, _ = micro_model
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, model.cfg.d_vocab, (8, 16), generator=g)
    tokens[tokens == model.tokenizer.bos_token_id] = 1 if model.tokenizer.bos_token_id != 1 else 2
    tokens[:, 0] = model.tokenizer.bos_token_id
    return model, saes["transcoder"], tokens


def test_splice_report(setup):
    model, tc, tokens = setup
    report = tr.splice_report(model, tc, tokens)
    with torch.no_grad():
        clean = model(tokens)
    lp = clean[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    # predictions made at BOS are left out (the splice bypasses BOS)
    assert report.ce_clean == pytest.approx(float(-lp[:, 1:].mean()), rel=1e-4)
    assert report.kl_spliced >= 0 and 0 <= report.top1_agreement <= 1
    assert report.ce_spliced != report.ce_clean
    assert set(report.as_dict()) >= {"loss_recovered", "ce_mean_ablation"}
    with pytest.raises(ValueError, match="transcoder must"):
        tr.splice_report(model, _plain_sae(tc), tokens)


def _plain_sae(tc):
    class Fake:
        cfg = type(
            "C",
            (),
            {
                "metadata": type(
                    "M", (), {"hook_name": "blocks.0.hook_mlp_out", "hook_name_out": None}
                )()
            },
        )()

    return Fake()


def test_attention_free_inputs_formula(setup):
    model, _, _ = setup
    x = tr.attention_free_inputs(model, "blocks.0.hook_resid_mid", batch_size=100)
    expected = model.W_E + model.W_pos[1:].mean(0)
    assert torch.allclose(x, expected, atol=1e-5)
    ext = tr.extended_embedding(model, 1)
    with torch.no_grad():
        mlp = model.blocks[0].mlp(model.blocks[0].ln2(expected[:, None]))[:, 0]
    assert torch.allclose(ext, expected + mlp, atol=1e-4)
    with pytest.raises(ValueError, match="hook must be"):
        tr.attention_free_inputs(model, "blocks.9.nothing")


def test_de_embedding_matches_reference(setup):
    model, tc, _ = setup
    scores = tr.de_embedding(model, tc, [0, 3, 5])
    ref = checks.reference_de_embedding(
        model.W_E, model.W_pos, tc.W_enc[:, [0, 3, 5]], tc.b_enc[[0, 3, 5]], model.cfg.eps
    )
    assert torch.allclose(scores, ref.detach(), atol=1e-4)
    direct = tr.de_embedding(model, tc, [3], path="direct")
    assert torch.allclose(direct[0], (model.W_E @ tc.W_enc[:, 3]).detach(), atol=1e-5)
    with pytest.raises(ValueError, match="path must be"):
        tr.de_embedding(model, tc, [0], path="sideways")
    with pytest.raises(IndexError, match="latents must be"):
        tr.de_embedding(model, tc, [tc.cfg.d_sae])


def test_de_embedding_in_small_blocks_matches_reference(setup, monkeypatch):
    """Blocks of a few vocabulary rows give the same scores (bounded memory, issue 15)."""
    model, tc, _ = setup
    monkeypatch.setattr(tr, "_DE_EMBEDDING_BLOCK", 3 * 2)  # 3 rows per block of 2 latents
    scores = tr.de_embedding(model, tc, [1, 2])
    ref = checks.reference_de_embedding(
        model.W_E, model.W_pos, tc.W_enc[:, [1, 2]], tc.b_enc[[1, 2]], model.cfg.eps
    )
    assert scores.shape == (2, model.cfg.d_vocab)
    assert torch.allclose(scores, ref.detach(), atol=1e-4)


def test_overlap_finds_planted_prediction(setup):
    model, tc, tokens = setup
    stats = latent_stats(model, tc, tokens, k=5, progress=False)
    latents = tr.sample_alive_latents(stats, 6, min_count=1)
    # a "prediction" that lists exactly the tokens where each latent fired scores 1
    planted = torch.full((len(latents), model.cfg.d_vocab), -1.0)
    for a, latent in enumerate(latents):
        planted[a, tr.activating_tokens(stats, tokens, latent, 5)] = 1.0
    k = max(len(set(tr.activating_tokens(stats, tokens, i, 5))) for i in latents)
    table = tr.de_embedding_overlap(model, tc, tokens, stats, latents, k=k, n_top=5, scores=planted)
    assert (table["overlap"] == 1.0).all()
    assert (table["chance"] < 1.0).any()
    with pytest.raises(ValueError, match="at least 2"):
        tr.de_embedding_overlap(model, tc, tokens, stats, latents[:1])


def test_checker_rejects_unnormalised():
    checks.check_de_embedding(checks.reference_de_embedding)

    def raw(W_E, W_pos, W_enc, b_enc, eps):
        return ((W_E + W_pos[1:].mean(0)) @ W_enc + b_enc).T

    with pytest.raises(AssertionError, match="case"):
        checks.check_de_embedding(raw)


def test_fit_mlp_transcoder(setup):
    model, _, tokens = setup
    fitted = tr.fit_mlp_transcoder(model, tokens, 0, d_sae=32, epochs=1, progress=False)
    assert fitted.cfg.d_sae == 32
    assert fitted.cfg.metadata.hook_name_out == "blocks.0.hook_mlp_out"
    report = tr.splice_report(model, fitted, tokens)
    assert report.ce_spliced > 0
    with pytest.raises(ValueError, match="layer must be"):
        tr.fit_mlp_transcoder(model, tokens, 99)


def test_prediction_overlap_by_hand() -> None:
    scores = torch.tensor([[3.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 2.0]])
    overlap, chance = tr.prediction_overlap(scores, [[0, 1, 2, 0], [3, 3]], k=2)
    assert overlap == [0.75, 1.0]
    assert chance == [0.25, 0.0]
    with pytest.raises(ValueError, match="scores must be"):
        tr.prediction_overlap(scores[:1], [[0]], k=1)


def test_splice_report_matches_a_hand_written_splice(setup, reference_row):
    """Every number of splice_report against a splice written here: the transcoder's formula
    ReLU(x W_enc + b_enc) W_dec + b_dec on the cached MLP input, put in place of the MLP
    output with ``run_with_hooks`` at the non-BOS positions (the baselines likewise), and
    torch's ``cross_entropy`` and ``kl_div`` over the positions splice_report keeps."""
    import torch.nn.functional as F

    model, tc, tokens = setup
    report = tr.splice_report(model, tc, tokens)
    hook_in, hook_out = tc.cfg.metadata.hook_name, tc.cfg.metadata.hook_name_out
    keep = tokens != model.tokenizer.bos_token_id
    with torch.no_grad():
        clean, cache = model.run_with_cache(tokens, names_filter=[hook_in, hook_out])
        x = cache[hook_in]
        recon = (x @ tc.W_enc + tc.b_enc).relu() @ tc.W_dec + tc.b_dec
        mean_out = cache[hook_out][keep].mean(0)
        runs = {}
        for name, value in (("spliced", recon), ("mean", mean_out.expand_as(recon)),
                            ("zero", torch.zeros_like(recon))):  # fmt: skip
            hook = lambda act, hook, value=value: torch.where(keep[..., None], value, act)  # noqa: E731
            runs[name] = model.run_with_hooks(tokens, fwd_hooks=[(hook_out, hook)])
    pairs = keep[:, :-1] & keep[:, 1:]  # a non-BOS token predicted from a non-BOS position

    def ce(logits):
        per = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(),
                              reduction="none").view(pairs.shape)  # fmt: skip
        return float(per[pairs].mean())

    kl = F.kl_div(runs["spliced"].log_softmax(-1), clean.log_softmax(-1), log_target=True,
                  reduction="none").sum(-1)  # fmt: skip
    agree = (clean.argmax(-1) == runs["spliced"].argmax(-1))[keep].float().mean()
    reference = {
        "ce_clean": ce(clean), "ce_spliced": ce(runs["spliced"]),
        "ce_mean_ablation": ce(runs["mean"]), "ce_zero_ablation": ce(runs["zero"]),
        "kl_spliced": float(kl[keep].mean()), "top1_agreement": float(agree),
    }  # fmt: skip
    ours = report.as_dict()
    rel = {k: abs(ours[k] - v) / max(abs(v), 1e-3) for k, v in reference.items()}
    worst = max(rel.values())
    ok = worst < 1e-4 and report.kl_spliced > 1e-4
    reference_row(
        technique="transcoders: splice report (CE, baselines, KL, top-1 agreement)",
        reference="transcoder formula spliced with run_with_hooks at non-BOS positions; torch "
        "cross_entropy and kl_div (micro world)",
        quantity="max relative difference over the six numbers",
        measured=f"{worst:.1e} (loss recovered {report.loss_recovered:.3f})",
        tolerance="1e-4",
        ok=ok,
    )
    assert report.kl_spliced > 1e-4  # the splice changes the model: not a comparison of zeros
    for name, value in rel.items():
        assert value < 1e-4, name


def test_fit_learning_rate_keeps_latents_alive_at_gpt2_width():
    from saebook.training import train_transcoder

    assert tr.fit_learning_rate(128) == tr.fit_learning_rate(64) == 3e-3
    assert tr.fit_learning_rate(768) == pytest.approx(3e-3 / 6)
    with pytest.raises(ValueError, match="d_in"):
        tr.fit_learning_rate(0)
    # inputs that share a direction, as LayerNorm outputs do: at 3e-3 the L1 gradient pushes
    # every pre-activation down by ~lr * sum|x_i| per step and most latents die in 8 steps
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 768, generator=g) * 0.5 + torch.randn(768, generator=g)
    y = (
        torch.relu(x @ torch.randn(768, 64, generator=g) / 768**0.5)
        @ torch.randn(64, 768, generator=g)
        / 8
    )
    alive = {}
    for lr in (3e-3, tr.fit_learning_rate(768)):
        tc = train_transcoder(x, y, d_sae=512, metadata={"hook_name": "a", "hook_name_out": "b"},
                              total_samples=2 * 4096, batch_size=1024, lr=lr)  # fmt: skip
        with torch.no_grad():
            alive[lr] = int((tc.encode(x) > 0).any(0).sum())
    assert alive[tr.fit_learning_rate(768)] > 0.8 * 512
    assert alive[3e-3] < alive[tr.fit_learning_rate(768)] / 2
