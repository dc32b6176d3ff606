"""SAE training with SAELens on cached activations: configs, curves, checkpoints, faults."""

from __future__ import annotations

import pytest
import torch
from sae_lens import SAE

from saebook.training import (
    ARCHITECTURES,
    FAULTS,
    activation_batches,
    check_training_run,
    collect_activations,
    curve_signatures,
    train_planted_faults,
    train_sae,
    training_sae_config,
)


def _acts(n: int = 1024, d: int = 8, seed: int = 0) -> torch.Tensor:
    """Sparse non-negative combinations of 16 random directions, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(16, d, generator=g), dim=-1)
    coeffs = torch.rand(n, 16, generator=g) * (torch.rand(n, 16, generator=g) < 0.15)
    return 3 * coeffs @ dirs + 0.01 * torch.randn(n, d, generator=g)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_trains_and_loads(arch):
    value = 4 if ARCHITECTURES[arch][1] == "k" else 1.0
    cfg = training_sae_config(arch, 8, 32, value, metadata={"hook_name": "blocks.0.hook_x"})
    assert type(cfg) is ARCHITECTURES[arch][0]
    run = train_sae(_acts(), cfg, total_samples=128 * 30, batch_size=128, progress=False)
    assert isinstance(run.sae, SAE)
    assert run.architecture == cfg.architecture() and run.seconds > 0
    assert run.sae.cfg.metadata.hook_name == "blocks.0.hook_x"
    assert len(run.curves) == 30
    for col in ("loss", "l0", "explained_variance", "dead_fraction", "lr", "mse_loss"):
        assert col in run.curves.columns
    # training helps: the reconstruction error falls
    assert run.curves["mse_loss"].iloc[-5:].mean() < run.curves["mse_loss"].iloc[:3].mean()


def test_topk_l0_is_k_and_matryoshka_widths():
    cfg = training_sae_config("topk", 8, 32, 3)
    run = train_sae(_acts(), cfg, total_samples=128 * 10, batch_size=128, progress=False)
    assert (run.curves["l0"] == 3).all()
    mat = training_sae_config("matryoshka", 8, 64, 4)
    assert mat.matryoshka_widths == [8, 16, 32, 64]


def test_trainer_runs_on_the_requested_device():
    """The trainer config carries the device (default: the activations'), so a GPU profile
    trains on the GPU (issue 15); the CUDA branch runs on a GPU machine."""
    cfg = training_sae_config("topk", 8, 32, 3)
    run = train_sae(_acts(), cfg, total_samples=128 * 2, batch_size=128, progress=False)
    assert run.trainer_config.device == "cpu" and run.sae.W_enc.device.type == "cpu"
    if torch.cuda.is_available():
        run = train_sae(_acts().cuda(), cfg, total_samples=128 * 2, batch_size=128, progress=False)
        assert run.trainer_config.device.startswith("cuda")
        assert run.sae.W_enc.device.type == "cuda"


def test_checkpoints_reload(tmp_path):
    cfg = training_sae_config("standard", 8, 16, 1.0, metadata={"hook_name": "h"})
    run = train_sae(
        _acts(),
        cfg,
        64 * 20,
        batch_size=64,
        checkpoint_path=tmp_path,
        n_checkpoints=1,
        progress=False,
    )
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 2 and any(f.startswith("final") for f in folders)
    final = SAE.load_from_disk(tmp_path / next(f for f in folders if f.startswith("final")))
    x = _acts(32, seed=3)
    assert torch.allclose(
        final.decode(final.encode(x)), run.sae.decode(run.sae.encode(x)), atol=1e-5
    )


def test_config_and_training_errors():
    with pytest.raises(ValueError, match="architecture"):
        training_sae_config("relu", 8, 16, 1.0)
    with pytest.raises(ValueError, match="k"):
        training_sae_config("topk", 8, 16, 16)
    with pytest.raises(ValueError, match="sparsity"):
        training_sae_config("standard", 8, 16, 0.0)
    cfg = training_sae_config("standard", 8, 16, 1.0)
    with pytest.raises(ValueError, match="d_in=8"):
        train_sae(torch.zeros(100, 4), cfg, 100, batch_size=10)
    with pytest.raises(ValueError, match="total_samples"):
        train_sae(torch.zeros(100, 8), cfg, 5, batch_size=10)


def test_activation_batches_cover_rows():
    x = torch.arange(10).float()[:, None]
    it = activation_batches(x, batch_size=5, seed=1)
    first = torch.cat([next(it), next(it)]).flatten().sort().values
    assert torch.equal(first, torch.arange(10).float())
    with pytest.raises(ValueError, match="batch_size"):
        next(activation_batches(x, batch_size=11))


def test_collect_activations_drops_bos(micro_model):
    model, saes, _ = micro_model
    hook = saes["resid"].cfg.metadata.hook_name
    tokens = torch.randint(1, model.cfg.d_vocab, (3, 6))
    tokens[:, 0] = model.tokenizer.bos_token_id
    acts = collect_activations(model, tokens, [hook], progress=False)[hook]
    assert acts.shape == (3 * 5, model.cfg.d_model)
    with pytest.raises(KeyError, match="hook_names"):
        collect_activations(model, tokens, ["no.such.hook"], progress=False)


def test_planted_faults_have_their_signatures():
    acts = _acts(2048)
    runs = train_planted_faults(
        acts,
        d_sae=32,
        total_samples=256 * 40,
        batch_size=256,
        faults=["healthy", "sparsity coefficient too large", "bad input normalisation"],
        progress=False,
    )
    sig = {f: curve_signatures(r.curves) for f, r in runs.items()}
    assert sig["sparsity coefficient too large"]["final_l0"] < sig["healthy"]["final_l0"]
    assert sig["bad input normalisation"]["loss_scale"] > 100 * sig["healthy"]["loss_scale"]
    with pytest.raises(ValueError, match="faults"):
        train_planted_faults(acts, 32, 256, faults=["typo"])
    assert "healthy" in FAULTS


def test_curve_signatures_detects_a_spike():
    import pandas as pd

    steps = 40
    base = pd.DataFrame(
        {
            "loss": [1.0] * steps,
            "l0": [5.0] * steps,
            "explained_variance": [0.8] * steps,
            "dead_fraction": [0.0] * steps,
        }
    )
    spiky = base.copy()
    spiky.loc[30, "loss"] = 4.0
    assert curve_signatures(base)["max_jump"] == pytest.approx(1.0)
    assert curve_signatures(spiky)["max_jump"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="curves"):
        curve_signatures(base.iloc[:5])


def test_checkers_of_part_4():
    from saebook import checks

    def right(x, acts, x_hat, W_dec, l1):
        return (x - x_hat).pow(2).sum(-1).mean() + l1 * (acts * W_dec.norm(dim=1)).sum(-1).mean()

    def unweighted(x, acts, x_hat, W_dec, l1):
        return (x - x_hat).pow(2).sum(-1).mean() + l1 * acts.sum(-1).mean()

    checks.check_standard_sae_loss(right)
    with pytest.raises(AssertionError, match="seed 0"):
        checks.check_standard_sae_loss(unweighted)

    checks.check_diagnosis(dict(checks.DIAGNOSIS_RUNS))
    wrong = dict(checks.DIAGNOSIS_RUNS)
    wrong["A"], wrong["B"] = wrong["B"], wrong["A"]
    with pytest.raises(AssertionError, match="run A"):
        checks.check_diagnosis(wrong)
    with pytest.raises(AssertionError, match="missing"):
        checks.check_diagnosis({"A": "healthy"})
    assert set(checks.DIAGNOSIS_RUNS.values()) == set(FAULTS)

    checks.check_l2_ratio(lambda x, x_hat: checks.reference_l2_ratio(x, x_hat))
    with pytest.raises(AssertionError, match="zero input"):
        checks.check_l2_ratio(lambda x, x_hat: (x_hat.norm(dim=-1) / x.norm(dim=-1)).mean())


def test_topk_adam_steps_lowers_the_loss_and_leaves_its_inputs_alone():
    from saebook.training import topk_adam_steps

    g = torch.Generator().manual_seed(0)
    params = {"W_enc": torch.randn(4, 8, generator=g), "b_enc": torch.zeros(8),
              "W_dec": torch.randn(8, 4, generator=g), "b_dec": torch.zeros(4)}  # fmt: skip
    before = {k: v.clone() for k, v in params.items()}
    x = torch.randn(64, 4, generator=g)

    def loss(p):
        norms = p["W_dec"].norm(dim=-1)
        pre = ((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]) * norms
        top = pre.topk(2, dim=-1)
        acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        return float(((acts @ (p["W_dec"] / norms[:, None]) + p["b_dec"] - x) ** 2).sum(-1).mean())

    trained = topk_adam_steps(x.repeat(5, 1), params, k=2, lr=1e-2, batch_size=16)
    assert loss(trained) < loss(params)
    assert all(torch.equal(params[k], before[k]) for k in params)
    with pytest.raises(ValueError, match="missing"):
        topk_adam_steps(x, {"W_enc": params["W_enc"]}, k=2, lr=1e-2, batch_size=16)


def test_check_training_run_names_the_first_bad_argument():
    ok = torch.zeros(64, 4)
    check_training_run(ok, d_sae=8, batch_size=32, total_samples=64)  # no error
    cases = [
        ((torch.zeros(64, 4, 2), 8, 32, 64), r"activations.*2 dimensions"),
        ((torch.full((64, 4), float("inf")), 8, 32, 64), r"activations.*finite"),
        ((ok, 0, 32, 64), r"d_sae.*positive int.*0"),
        ((ok, 8, 32, 16), r"total_samples.*>= 32.*got 16"),
        ((ok, 8, 128, 256), r"activations must have at least batch_size=128 rows, got 64"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            check_training_run(*args)


def _step(sae, x, dead):
    from sae_lens.saes.sae import TrainStepInput

    sae.zero_grad()
    step = TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead, n_training_steps=0,
                          is_logging_step=False)  # fmt: skip
    out = sae.training_forward_pass(step)
    out.loss.backward()
    return out, {name: p.grad.clone() for name, p in sae.named_parameters()}


def test_gathered_topk_step_matches_saelens(reference_row):
    """The gathered step gives SAELens' TopK losses, gradients and activations (reference:
    SAELens' own ``TopKTrainingSAE`` on the same weights), with and without decoder-norm
    rescaling and hook_z reshaping, with no dead latents, fewer than ``d_in // 2`` and more."""
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

    from saebook.training import GatheredTopKTrainingSAE

    torch.manual_seed(0)
    loss_gap, grad_gap, cases = 0.0, 0.0, 0
    for rescale in (True, False):
        for reshape in ("none", "hook_z"):
            cfg = TopKTrainingSAEConfig(d_in=16, d_sae=128, k=6, reshape_activations=reshape,
                                        rescale_acts_by_decoder_norm=rescale)  # fmt: skip
            ref, fast = TopKTrainingSAE(cfg), GatheredTopKTrainingSAE(cfg)
            with torch.no_grad():  # a trained-looking SAE: biases, uneven decoder norms
                ref.b_dec.normal_()
                ref.b_enc.normal_(0, 0.1)
                ref.W_dec.mul_(torch.rand(128, 1) + 0.5)
            fast.load_state_dict(ref.state_dict())
            x = torch.randn(48, 16)
            for n_dead in (0, 5, 100):
                dead = torch.zeros(128, dtype=torch.bool)
                dead[torch.randperm(128)[:n_dead]] = True
                (a, grads_a), (b, grads_b) = _step(ref, x, dead), _step(fast, x, dead)
                assert set(a.losses) == set(b.losses)
                assert (a.losses["auxiliary_reconstruction_loss"] > 0) == (n_dead > 0)
                for name in a.losses:
                    scale = a.losses[name].abs().clamp_min(1e-12)
                    gap = float((b.losses[name] - a.losses[name]).detach().abs() / scale)
                    loss_gap = max(loss_gap, gap)
                torch.testing.assert_close(b.feature_acts, a.feature_acts, rtol=1e-5, atol=1e-6)
                torch.testing.assert_close(b.sae_out, a.sae_out, rtol=1e-5, atol=1e-5)
                for name, grad in grads_a.items():
                    assert grad.abs().max() > 0, name
                    gap = float((grads_b[name] - grad).abs().max() / grad.abs().max())
                    grad_gap = max(grad_gap, gap)
                cases += 1
    ok = loss_gap < 1e-5 and grad_gap < 1e-4
    reference_row(
        technique="TopK training step (GatheredTopKTrainingSAE)",
        reference="SAELens' TopKTrainingSAE.training_forward_pass and its autograd gradients",
        quantity="largest relative difference of each loss term / of each parameter's gradient",
        measured=f"losses {loss_gap:.1e}, gradients {grad_gap:.1e} ({cases} cases)",
        tolerance="losses 1e-5, gradients 1e-4 (of the largest entry)",
        ok=ok,
    )
    assert ok, (loss_gap, grad_gap)


def test_gathered_step_only_when_asked_and_only_for_topk():
    from saebook.training import GatheredTopKTrainingSAE, train_topk_sae

    seen = []
    original = GatheredTopKTrainingSAE.training_forward_pass

    def spy(self, step_input):
        seen.append(type(self))
        return original(self, step_input)

    GatheredTopKTrainingSAE.training_forward_pass = spy
    try:
        topk = training_sae_config("topk", 8, 32, 3)
        train_sae(_acts(), topk, 128 * 2, batch_size=128, progress=False)
        assert seen == []
        train_sae(_acts(), topk, 128 * 2, batch_size=128, progress=False, gathered=True)
        assert seen == [GatheredTopKTrainingSAE] * 2
        train_topk_sae(_acts(), 32, 3, {"hook_name": "h"}, total_samples=128 * 2,
                       batch_size=128)  # fmt: skip
        assert len(seen) == 4
    finally:
        GatheredTopKTrainingSAE.training_forward_pass = original
    with pytest.raises(ValueError, match="gathered=True needs a TopKTrainingSAEConfig, got "
                                         "BatchTopKTrainingSAEConfig"):  # fmt: skip
        train_sae(_acts(), training_sae_config("batchtopk", 8, 32, 3), 128 * 2,
                  batch_size=128, progress=False, gathered=True)  # fmt: skip
