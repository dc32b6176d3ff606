"""Tasks and latent attribution on the micro world (mechanics, not the tiny model's behaviour)."""

from __future__ import annotations

import pytest
import torch

from saebook.attribution import (
    ablation_effects,
    attribution_patching,
    direct_logit_attribution,
    latent_activations_at_last,
)
from saebook.tasks import make_task
from saebook.tinyworld.tasks import code_recall_task


@pytest.fixture(scope="module")
def task(micro_model):
    model, _, _ = micro_model
    return code_recall_task(model, n=4, seed=1)


def test_code_recall_task_is_aligned(micro_model, task):
    model, _, _ = micro_model
    assert task.clean.shape == task.corrupted.shape
    assert (task.answer != task.wrong).all()
    differs = (task.clean != task.corrupted).sum(-1)
    assert (differs == 1).all()  # only the stated last digit changes
    logits = torch.zeros(4, task.clean.shape[1], model.cfg.d_vocab)
    logits[torch.arange(4), -1, task.answer] = 2.0
    assert torch.equal(task.logit_diff(logits), torch.full((4,), 2.0))
    with pytest.raises(ValueError, match="n must be"):
        code_recall_task(model, n=0)


def test_make_task_rejects_misaligned_prompts(micro_model):
    model, _, _ = micro_model
    with pytest.raises(ValueError, match="same token length"):
        make_task(model, "t", "d", [("a b", "a b c d", " a", " b")])
    with pytest.raises(ValueError, match="at least one"):
        make_task(model, "t", "d", [])


def test_dla_matches_the_formula_for_one_latent(micro_model, task):
    model, saes, _ = micro_model
    sae = saes["resid"]
    dla = direct_logit_attribution(model, sae, task)
    acts = latent_activations_at_last(model, sae, task.clean)
    b, i = torch.nonzero(acts > 0)[0].tolist()
    _, cache = model.run_with_cache(task.clean, names_filter="ln_final.hook_scale")
    direction = sae.W_dec[i] @ (model.W_U[:, task.answer[b]] - model.W_U[:, task.wrong[b]])
    expected = acts[b, i] * direction / cache["ln_final.hook_scale"][b, -1, 0]
    assert dla[b, i] == pytest.approx(float(expected), rel=1e-4, abs=1e-6)
    assert (dla[acts == 0] == 0).all()


def test_ablation_matches_brute_force(micro_model, task):
    model, saes, _ = micro_model
    sae = saes["resid"]
    latents, effects = ablation_effects(model, sae, task, chunk=2)
    assert latents.numel() > 0
    i = int(latents[0])
    hook = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"

    def zero(acts, hook):
        acts = acts.clone()
        acts[:, -1, i] = 0
        return acts

    with torch.no_grad(), model.saes(saes=[sae], use_error_term=True):
        base = task.logit_diff(model(task.clean)).mean()
        ablated = task.logit_diff(model.run_with_hooks(task.clean, fwd_hooks=[(hook, zero)])).mean()
    assert effects[0] == pytest.approx(float(ablated - base), abs=1e-4)
    with pytest.raises(IndexError, match="latents"):
        ablation_effects(model, sae, task, latents=torch.tensor([sae.cfg.d_sae]))


def test_attribution_patching_is_zero_where_latents_are_silent(micro_model, task):
    model, saes, _ = micro_model
    sae = saes["resid"]
    attr = attribution_patching(model, sae, task)
    assert attr.shape == (*task.clean.shape, sae.cfg.d_sae)
    acts = latent_activations_at_last(model, sae, task.clean)
    assert (attr[:, -1][acts == 0] == 0).all()
    assert all(p.grad is None for p in model.parameters())
