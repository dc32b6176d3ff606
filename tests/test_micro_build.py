"""The tiny-world build pipeline at micro scale, and the package functions it exercises."""

from __future__ import annotations

import json

import pytest
import torch

from saebook.groundtruth import label_recovery
from saebook.induction import induction_report, repeated_tokens
from saebook.metrics import explained_variance, reconstruction_metrics, sae_input_and_target
from saebook.tinyworld.build import FULL, MICRO, SAE_LR, SAE_SPECS, sae_recipe
from saebook.tinyworld.shipped import ROLES, load_shipped
from saebook.training import activation_batches, collect_activations


def test_build_writes_every_artifact(micro_world):
    out, card = micro_world
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    assert (out / "model" / "model.safetensors").is_file()
    for role in SAE_SPECS:
        assert (out / "saes" / role / "cfg.json").is_file(), role
    on_disk = json.loads((out / "model_card.json").read_text())
    assert on_disk["scale"] == "micro"
    assert set(on_disk["saes"]) == set(SAE_SPECS)
    lm = on_disk["language_model"]
    assert lm["baselines"]["bigram"] < lm["baselines"]["unigram"]
    assert 0 < lm["val_loss"] < float("inf")
    assert json.loads((out / "training_curve.json").read_text())[-1]["step"] == 12
    # label recovery is scored on its own labelled batch, whose size the card records
    assert on_disk["label_batch"] == {"rows": MICRO.label_rows, "seq_len": MICRO.seq_len}
    n_positions = MICRO.label_rows * MICRO.seq_len
    for rows in on_disk["label_recovery"].values():
        assert all(20 <= r["count"] <= n_positions for r in rows)


def test_sae_recipe_scales_the_defaults_by_the_spec():
    assert sae_recipe("resid_256", MICRO) == {
        "total_samples": MICRO.sae_samples, "batch_size": MICRO.sae_batch, "lr": SAE_LR,
    }  # fmt: skip
    spec = SAE_SPECS["resid"]
    resid = sae_recipe("resid")  # FULL by default
    assert resid["total_samples"] == FULL.sae_samples * spec["samples_factor"]
    assert resid["batch_size"] == FULL.sae_batch * spec["batch_factor"]
    assert resid["lr"] == spec["lr"]
    with pytest.raises(ValueError, match="transcoder"):
        sae_recipe("transcoder")
    with pytest.raises(ValueError, match="role must be one of"):
        sae_recipe("nope")


def test_load_shipped_roles_and_family(micro_model):
    model, saes, family = micro_model
    assert set(saes) == set(ROLES)
    widths = [s.cfg.d_sae for s in family]
    assert widths == sorted(widths) and len(widths) == 4
    assert saes["transcoder"].cfg.metadata.hook_name_out == "blocks.0.hook_mlp_out"
    assert saes["attn"].cfg.reshape_activations == "hook_z"


def test_load_shipped_reports_missing_files(tmp_path):
    from saebook.errors import MissingArtifactError

    with pytest.raises(MissingArtifactError, match="tokenizer"):
        load_shipped(tmp_path)


def test_collect_activations_shapes_and_bos(micro_model):
    model, _, _ = micro_model
    tokens = torch.randint(1, model.cfg.d_vocab, (3, 10))
    tokens[:, 0] = model.tokenizer.bos_token_id
    acts = collect_activations(
        model,
        tokens,
        ["blocks.1.attn.hook_z", "blocks.0.hook_mlp_out"],
        batch_size=2,
        progress=False,
    )
    assert acts["blocks.1.attn.hook_z"].shape == (27, model.cfg.n_heads * model.cfg.d_head)
    assert acts["blocks.0.hook_mlp_out"].shape == (27, model.cfg.d_model)
    with pytest.raises(KeyError, match="blocks.9"):
        collect_activations(model, tokens, ["blocks.9.hook_resid_pre"])


def test_activation_batches_cover_rows_and_align():
    x = torch.arange(10).float()[:, None]
    y = x * 2
    batches = activation_batches(x, y, batch_size=5, seed=0)
    seen = torch.cat([next(batches)[0] for _ in range(2)])
    assert sorted(seen.flatten().tolist()) == list(range(10))
    bx, by = next(batches)
    assert torch.equal(by, bx * 2)
    with pytest.raises(ValueError, match="batch_size"):
        next(activation_batches(x, batch_size=11))


def test_reconstruction_metrics_are_consistent(micro_model):
    model, saes, _ = micro_model
    tokens = torch.randint(1, model.cfg.d_vocab, (2, 16))
    tokens[:, 0] = model.tokenizer.bos_token_id
    for role, sae in saes.items():
        m = reconstruction_metrics(model, sae, tokens)
        assert m.ce_clean <= m.ce_with_sae + 0.5, role
        assert 0 <= m.dead_fraction <= 1
        assert m.l0 > 0
        x_in, target = sae_input_and_target(model, sae, tokens)
        assert x_in.shape[:2] == target.shape[:2] == tokens.shape


def test_explained_variance_edges():
    x = torch.randn(50, 4)
    assert explained_variance(x, x) == pytest.approx(1.0)
    assert explained_variance(x, x.mean(0).expand_as(x)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="shape"):
        explained_variance(x, x[:, :3])


def test_induction_report_on_a_copying_model():
    """A model that copies perfectly would get ratio ~0; the helper's indexing is what we test."""
    pool = torch.arange(5, 50)
    toks = repeated_tokens(4, 6, pool, bos_token_id=0, generator=torch.Generator().manual_seed(0))
    assert toks.shape == (4, 13)
    assert torch.equal(toks[:, 1:7], toks[:, 7:])
    with pytest.raises(ValueError, match="half_len"):
        repeated_tokens(1, 1, pool, 0)


def test_induction_report_shapes(micro_model):
    model, _, _ = micro_model
    pool = torch.arange(1, model.cfg.d_vocab)
    report = induction_report(model, repeated_tokens(2, 8, pool, model.tokenizer.bos_token_id))
    assert report.head_scores.shape == (model.cfg.n_layers, model.cfg.n_heads)
    assert ((report.head_scores >= 0) & (report.head_scores <= 1)).all()
    layer, head, score = report.best_head()
    assert score == pytest.approx(float(report.head_scores.max()))


def test_label_recovery_finds_a_planted_detector():
    labels = {"a": torch.zeros(100, dtype=torch.bool), "rare": torch.zeros(100, dtype=torch.bool)}
    labels["a"][:40] = True
    labels["rare"][:3] = True
    acts = torch.zeros(100, 3)
    acts[:40, 1] = 1.0  # latent 1 is a perfect detector of "a"
    acts[:20, 2] = 1.0  # latent 2 covers half of it, precisely
    acts[50:, 0] = 1.0  # latent 0 never fires on "a"
    table = label_recovery(acts, labels, min_count=20)
    row = table.set_index("label").loc["a"]
    assert row["best_latent"] == 1 and row["best_f1"] == pytest.approx(1.0)
    assert row["n_precise"] == 2 and row["union_recall"] == pytest.approx(1.0)
    assert "rare" not in set(table["label"])
    with pytest.raises(ValueError, match="labels"):
        label_recovery(acts, {"a": labels["a"][:5]})


def test_repeat_rows_tile_a_span_of_varying_length():
    from saebook.tinyworld.model import _repeat_rows

    pool = torch.arange(10, 500)
    rows = _repeat_rows(64, 128, pool, bos=0, generator=torch.Generator().manual_seed(0))
    assert rows.shape == (64, 128) and (rows[:, 0] == 0).all()
    periods = set()
    for row in rows:
        body = row[1:]
        period = next(p for p in range(1, 64) if torch.equal(body[p:], body[:-p]))
        assert period >= 8
        periods.add(period)
    assert len(periods) > 5  # no fixed offset for the model to latch onto


def test_check_sae_hooks_names_the_missing_hook(micro_model):
    from saebook.metrics import check_sae_hooks

    model, saes, _ = micro_model
    assert check_sae_hooks(model, saes["transcoder"]) == (
        "blocks.0.ln2.hook_normalized",
        "blocks.0.hook_mlp_out",
    )
    saes["resid"].cfg.metadata.hook_name = "blocks.7.hook_resid_pre"
    try:
        with pytest.raises(ValueError, match="hook_name.*blocks.7.hook_resid_pre"):
            check_sae_hooks(model, saes["resid"])
    finally:
        saes["resid"].cfg.metadata.hook_name = "blocks.1.hook_resid_pre"
