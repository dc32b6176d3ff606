"""Unit tests of the toy-model part: saebook.toy_models, saebook.toy_saes and saebook.checks."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import pytest
import torch

from saebook import checks, toy_models, toy_saes


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seeded, and on one thread: these tensors are tiny, and extra threads on a busy machine
    only add waiting."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _polygon(n: int) -> torch.Tensor:
    """(2, n): n unit vectors evenly spaced on the circle."""
    angle = torch.arange(n) * 2 * math.pi / n
    return torch.stack([angle.cos(), angle.sin()])


# --- toy_models: data --------------------------------------------------------------------


def test_importance_weights():
    assert torch.allclose(toy_models.importance_weights(3, 0.5), torch.tensor([1.0, 0.5, 0.25]))
    assert torch.equal(toy_models.importance_weights(4), torch.ones(4))
    with pytest.raises(ValueError, match="decay must be in \\(0, 1\\], got 1.5"):
        toy_models.importance_weights(3, 1.5)
    with pytest.raises(ValueError, match="n_features must be a positive int, got 0"):
        toy_models.importance_weights(0)


def test_feature_probability_sweep():
    probs = toy_models.feature_probability_sweep(3, 0.01)
    assert torch.allclose(probs, torch.tensor([1.0, 0.1, 0.01]))
    assert torch.equal(toy_models.feature_probability_sweep(1, 0.1, 0.5), torch.tensor([0.5]))
    with pytest.raises(ValueError, match="min_probability=0.5, max_probability=0.1"):
        toy_models.feature_probability_sweep(3, 0.5, 0.1)


def test_generate_batch_shapes_and_marginals():
    prob = torch.tensor([1.0, 0.2, 0.0])
    x = toy_models.generate_batch(20_000, prob, 6, generator=_gen())
    assert x.shape == (20_000, 3, 6)
    assert (x >= 0).all() and (x < 1).all()
    present = (x > 0).float().mean(0)
    assert present[0].min() > 0.99  # p = 1: always present (up to rand() == 0)
    assert (present[1] - 0.2).abs().max() < 0.02
    assert present[2].max() == 0


def test_generate_batch_correlated_and_anticorrelated_pairs():
    prob = torch.tensor([0.3])
    x = toy_models.generate_batch(
        20_000, prob, 5, n_correlated_pairs=1, n_anticorrelated_pairs=1, generator=_gen()
    )[:, 0]
    on = x > 0
    assert torch.equal(on[:, 0], on[:, 1])  # correlated: always together
    assert not (on[:, 2] & on[:, 3]).any()  # anticorrelated: never together
    assert ((on.float().mean(0) - 0.3).abs() < 0.02).all()  # marginals stay p


def test_generate_batch_errors():
    with pytest.raises(ValueError, match="n_correlated_pairs=2, .*n_features=3"):
        toy_models.generate_batch(4, torch.tensor([0.1]), 3, n_correlated_pairs=2)
    with pytest.raises(ValueError, match="anticorrelated pairs need feature_probability <= 0.5"):
        toy_models.generate_batch(4, torch.tensor([0.8]), 4, n_anticorrelated_pairs=1)
    with pytest.raises(ValueError, match=r"\(instances,\), got shape \(2, 2\)"):
        toy_models.generate_batch(4, torch.ones(2, 2) * 0.1, 4)
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        toy_models.generate_batch(4, torch.tensor([1.5]), 4)


# --- toy_models: model and training --------------------------------------------------------


def test_toy_model_matches_single_model_formula():
    model = toy_models.ToyModel(5, 2, n_instances=3, generator=_gen())
    with torch.no_grad():
        model.b.normal_()
    x = torch.rand(7, 3, 5)
    out = model(x)
    assert out.shape == (7, 3, 5) and model.hidden(x).shape == (7, 3, 2)
    for k in range(3):
        expected = checks.reference_toy_forward(model.W[k], model.b[k], x[:, k])
        assert torch.allclose(out[:, k], expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(batch, 3, 5\).*got \(7, 5\)"):
        model(x[:, 0])


def test_weighted_mse():
    target = torch.zeros(2, 1, 2)
    output = torch.ones(2, 1, 2)
    assert torch.allclose(
        toy_models.weighted_mse(output, target, torch.tensor([1.0, 3.0])), torch.tensor([2.0])
    )
    with pytest.raises(ValueError, match="importance must have shape \\(2,\\) or \\(1, 2\\)"):
        toy_models.weighted_mse(output, target, torch.ones(3))


def test_weighted_mse_per_instance_importance():
    g = _gen(3)
    output, target = torch.rand(6, 3, 2, generator=g), torch.rand(6, 3, 2, generator=g)
    importance = torch.tensor([[1.0, 0.1], [1.0, 1.0], [1.0, 10.0]])
    loss = toy_models.weighted_mse(output, target, importance)
    for k in range(3):  # each instance with its own row equals the shared-importance loss
        alone = toy_models.weighted_mse(output[:, k : k + 1], target[:, k : k + 1], importance[k])
        assert torch.allclose(loss[k], alone[0])
    by_hand = ((output - target) ** 2 * importance).sum(-1).mean(0) / 2
    assert torch.allclose(loss, by_hand)
    with pytest.raises(ValueError, match=r"\(3, 2\) = \(instances, features\), got \(2, 2\)"):
        toy_models.weighted_mse(output, target, importance[:2])


def test_train_toy_model_reduces_loss():
    model = toy_models.ToyModel(5, 2, n_instances=2, generator=_gen())
    history = toy_models.train_toy_model(
        model,
        torch.tensor([1.0, 0.1]),
        steps=300,
        batch_size=256,
        log_every=10,
        progress=False,
        generator=_gen(1),
    )
    assert history.shape == (30, 2)
    assert (history[-5:].mean(0) < history[:5].mean(0)).all()
    with pytest.raises(ValueError, match=r"feature_probability must have shape \(2,\)"):
        toy_models.train_toy_model(model, torch.tensor([0.1]), steps=1, progress=False)


def test_train_toy_model_per_instance_importance():
    """Two features in one dimension, dense: each instance keeps its more important feature."""
    model = toy_models.ToyModel(2, 1, n_instances=2, generator=_gen())
    with torch.no_grad():
        model.W.fill_(0.7)  # the same start for both: only the importances differ
    importance = torch.tensor([[1.0, 0.2], [0.2, 1.0]])
    toy_models.train_toy_model(
        model,
        torch.ones(2),
        importance,
        steps=400,
        batch_size=256,
        progress=False,
        generator=_gen(1),
    )
    norms = toy_models.feature_norms(model.W)
    assert norms[0, 0] > 0.9 and norms[0, 1] < 0.1, norms
    assert norms[1, 1] > 0.9 and norms[1, 0] < 0.1, norms
    with pytest.raises(ValueError, match=r"importance must have shape \(2,\) = \(features,\)"):
        toy_models.train_toy_model(model, torch.ones(2), torch.ones(3, 2), steps=1)


# --- toy_models: geometry -------------------------------------------------------------------


def test_geometry_of_known_arrangements():
    square = torch.eye(2) * torch.tensor([1.0, 0.5])  # orthogonal, norms 1 and 0.5
    antipodal = torch.tensor([[1.0, -1.0]])
    pentagon = _polygon(5)
    dropped = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert torch.allclose(toy_models.feature_norms(square), torch.tensor([1.0, 0.5]))
    assert torch.allclose(toy_models.feature_dimensionality(square), torch.ones(2))
    assert torch.allclose(toy_models.feature_dimensionality(antipodal), torch.full((2,), 0.5))
    assert torch.allclose(
        toy_models.feature_dimensionality(pentagon), torch.full((5,), 0.4), atol=1e-5
    )
    assert torch.allclose(toy_models.feature_dimensionality(dropped), torch.tensor([1.0, 0.0]))
    assert torch.allclose(toy_models.superposition_measure(square), torch.zeros(2))
    assert torch.allclose(toy_models.superposition_measure(antipodal), torch.ones(2))
    inter = toy_models.interference(pentagon)
    assert inter.shape == (5, 5) and torch.allclose(inter.diagonal(), torch.ones(5), atol=1e-5)
    # batched leading axes work the same as one model at a time
    stack = torch.stack([square, 2 * square])
    assert toy_models.feature_dimensionality(stack).shape == (2, 2)
    assert torch.allclose(toy_models.dimensions_per_feature(stack), torch.tensor([1.6, 0.4]))
    assert torch.allclose(toy_models.dimensions_per_feature(pentagon), torch.tensor(0.4))
    assert torch.equal(toy_models.represented_features(stack), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"\(\.\.\., hidden, features\), got \(3,\)"):
        toy_models.feature_norms(torch.ones(3))


def test_two_feature_phase_codes():
    W = torch.tensor(
        [
            [[1.0, 0.0]],  # feature 1 alone
            [[0.1, -0.9]],  # feature 2 alone
            [[1.0, -1.0]],  # antipodal
            [[0.9, 0.8]],  # both stored, same side
            [[0.2, -0.3]],  # neither stored
            [[0.5, -1.0]],  # a norm at the threshold is not stored
        ]
    )
    codes = toy_models.two_feature_phase(W)
    assert codes.dtype == torch.int64
    assert codes.tolist() == [0, 1, 2, 3, 3, 1]
    assert toy_models.two_feature_phase(W, threshold=0.1).tolist() == [0, 1, 2, 3, 2, 2]
    # two hidden dimensions: orthogonal features are "other", obtuse ones count as apart
    W2 = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, -0.6], [0.0, 0.8]]])
    assert toy_models.two_feature_phase(W2).tolist() == [3, 2]
    # extra leading axes are kept
    assert toy_models.two_feature_phase(W.view(2, 3, 1, 2)).shape == (2, 3)
    assert len(toy_models.TWO_FEATURE_PHASES) == 4
    with pytest.raises(ValueError, match=r"\(\.\.\., hidden, 2\), got \(1, 3\)"):
        toy_models.two_feature_phase(torch.ones(1, 3))
    with pytest.raises(ValueError, match="threshold must be >= 0, got -1"):
        toy_models.two_feature_phase(W, threshold=-1)


def test_plot_phase_diagram():
    phase = torch.tensor([[0, 1, 1], [2, 2, 3]])
    ratios, probs = torch.tensor([0.1, 1.0, 10.0]), torch.tensor([1.0, 0.1])
    fig = toy_models.plot_phase_diagram(phase, ratios, probs, title="t")
    heat = fig.data[0]
    assert isinstance(heat, go.Heatmap) and [list(row) for row in heat.z] == phase.tolist()
    assert list(heat.x) == pytest.approx([-1.0, 0.0, 1.0])
    assert list(heat.y) == pytest.approx([0.0, -1.0])
    assert heat.text[1][0] == toy_models.TWO_FEATURE_PHASES[2]
    assert [t.name for t in fig.data[1:]] == list(toy_models.TWO_FEATURE_PHASES)
    with pytest.raises(ValueError, match=r"\(2, 3\), got \(3, 2\)"):
        toy_models.plot_phase_diagram(phase.T, ratios, probs)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 4\)"):
        toy_models.plot_phase_diagram(phase + 2, ratios, probs)


def test_plots_return_figures():
    W = torch.stack([_polygon(5), _polygon(5) * 0.5])
    fig = toy_models.plot_feature_directions(W, ["a", "b"], importance=torch.ones(5))
    assert isinstance(fig, go.Figure) and len(fig.data) == 2 * (5 + 1)
    assert len(toy_models.plot_wtw(W).data) == 2
    assert len(toy_models.plot_feature_norms(W).data) == 2
    dim_fig = toy_models.plot_dimensionality(torch.tensor([0.5, 0.1]), W)
    assert len(dim_fig.data) == 2
    latent_fig = toy_models.plot_latent_directions(
        W[0].T, torch.randn(2, 3, 2), dead=torch.tensor([[True, False, False]] * 2)
    )
    assert len(latent_fig.data) == 2 * (5 + 3)
    assert {t.legendgroup for t in latent_fig.data if t.showlegend} == {"feature", "latent", "dead"}
    with pytest.raises(ValueError, match=r"\(instances, 2, features\), got \(2, 3, 5\)"):
        toy_models.plot_feature_directions(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="titles must have one entry per instance \\(2\\), got 1"):
        toy_models.plot_wtw(W, ["only one"])
    with pytest.raises(ValueError, match=r"feature_probability of shape \(instances,\)"):
        toy_models.plot_dimensionality(torch.tensor([0.5]), W)


# --- toy_saes: architectures -----------------------------------------------------------------


def _single(sae: toy_saes.ToySAE):
    return sae.W_enc[0], sae.b_enc[0], sae.W_dec[0], sae.b_dec[0]


def test_standard_sae_matches_reference_loss():
    sae = toy_saes.StandardSAE(3, 4, n_instances=2, l1_coeff=[0.1, 0.5], generator=_gen())
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    x = torch.randn(6, 2, 3)
    out = sae(x)
    assert out.latents.shape == (6, 2, 4) and out.reconstruction.shape == (6, 2, 3)
    assert set(out.terms) == {"mse", "l1"}
    for k, coeff in enumerate([0.1, 0.5]):
        params = (sae.W_enc[k], sae.b_enc[k], sae.W_dec[k], sae.b_dec[k])
        expected = checks.reference_sae_loss(x[:, k], *params, coeff)
        assert torch.allclose(out.loss[k], expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"one value per instance \(2,\), got shape \(3,\)"):
        toy_saes.StandardSAE(3, 4, n_instances=2, l1_coeff=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="l1_coeff must be >= 0"):
        toy_saes.StandardSAE(3, 4, l1_coeff=-1.0)
    with pytest.raises(ValueError, match=r"\(batch, 2, 3\) = \(batch, instances, d_in\)"):
        sae(torch.randn(6, 3))


def test_normalise_decoder():
    sae = toy_saes.StandardSAE(3, 4, n_instances=2)
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.normalise_decoder()
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(2, 4))


def test_gated_sae_encode_and_loss_terms():
    sae = toy_saes.GatedSAE(2, 3, n_instances=1, l1_coeff=0.2, generator=_gen())
    with torch.no_grad():
        sae.r_mag.fill_(math.log(2.0))
        sae.b_mag.fill_(-0.1)
        sae.b_enc.copy_(torch.tensor([[0.0, -5.0, 0.0]]))
    x = torch.randn(5, 1, 2)
    W_enc, b_enc, _, b_dec = _single(sae)
    gate = (x[:, 0] - b_dec) @ W_enc + b_enc
    mag = (x[:, 0] - b_dec) @ (W_enc * 2.0) - 0.1
    expected = (gate > 0).float() * torch.relu(mag)
    assert torch.allclose(sae.encode(x)[:, 0], expected, atol=1e-6)
    out = sae(x)
    assert set(out.terms) == {"mse", "l1", "aux"}
    assert torch.allclose(out.loss, sum(out.terms.values()))
    # the auxiliary loss reaches the gate but not the decoder
    out.terms["aux"].sum().backward()
    assert sae.W_dec.grad is None and sae.W_enc.grad is not None


def test_rectangle():
    u = torch.tensor([-0.6, -0.5, -0.4, 0.0, 0.4, 0.5, 0.6])
    assert torch.equal(toy_saes.rectangle(u), torch.tensor([0.0, 0, 1, 1, 1, 0, 0]))


def test_jumprelu_and_step_functions_gradients():
    z = torch.tensor([[0.30, 0.52, 0.10], [0.48, 0.90, 0.60]], requires_grad=True)
    theta = torch.tensor([0.5, 0.5, 0.5], requires_grad=True)
    out = toy_saes.JumpReLUFunction.apply(z, theta, 0.1)
    assert torch.allclose(out, torch.tensor([[0.0, 0.52, 0.0], [0.0, 0.9, 0.6]]))
    out.sum().backward()
    assert torch.equal(z.grad, (z > theta).float())
    # inside the window (|z - theta| < 0.05): 0.48 (column 0) and 0.52 (column 1)
    assert torch.allclose(theta.grad, torch.tensor([-5.0, -5.0, 0.0]))
    z2 = z.detach().clone().requires_grad_(True)
    theta2 = theta.detach().clone().requires_grad_(True)
    step = toy_saes.StepFunction.apply(z2, theta2, 0.1)
    assert torch.equal(step, (z2 > theta2).float())
    step.sum().backward()
    assert torch.equal(z2.grad, torch.zeros_like(z2))
    assert torch.allclose(theta2.grad, torch.tensor([-10.0, -10.0, 0.0]))


def test_jumprelu_sae():
    sae = toy_saes.JumpReLUSAE(2, 3, n_instances=2, l0_coeff=0.5, bandwidth=0.1, init_threshold=0.2)
    assert torch.allclose(sae.threshold, torch.full((2, 3), 0.2))
    x = torch.randn(8, 2, 2)
    out = sae(x)
    z = sae.preactivations(x)
    assert torch.allclose(out.latents, z * (z > 0.2))
    assert torch.allclose(out.terms["l0"], 0.5 * (z > 0.2).float().sum(-1).mean(0))
    out.loss.sum().backward()
    assert sae.log_threshold.grad is not None
    with pytest.raises(ValueError, match="bandwidth=0"):
        toy_saes.JumpReLUSAE(2, 3, bandwidth=0)


def test_topk_activation_and_sae():
    z = torch.tensor([[0.5, -1.0, 2.0, 0.1], [-3.0, -2.0, -1.0, -0.5]])
    assert torch.equal(
        toy_saes.topk_activation(z, 2), torch.tensor([[0.5, 0, 2.0, 0], [0, 0, 0, 0]])
    )
    with pytest.raises(ValueError, match="k must be at most d_sae = 4, got 5"):
        toy_saes.topk_activation(z, 5)
    sae = toy_saes.TopKSAE(3, 6, n_instances=2, k=2)
    out = sae(torch.randn(10, 2, 3))
    assert ((out.latents > 0).sum(-1) <= 2).all()
    assert set(out.terms) == {"mse"}
    with pytest.raises(ValueError, match="k must be at most d_sae = 6, got 7"):
        toy_saes.TopKSAE(3, 6, k=7)


# --- toy_saes: training, dead latents, resampling -----------------------------------------------


def _orthogonal_data(n_instances: int):
    def data(batch_size: int) -> torch.Tensor:
        x = toy_models.generate_batch(batch_size, torch.tensor([0.2]), 2)
        return x.expand(-1, n_instances, -1)

    return data


def test_dead_latents():
    last = torch.tensor([[-1, 5, 9]])
    assert torch.equal(toy_saes.dead_latents(last, 10, 5), torch.tensor([[True, True, False]]))
    with pytest.raises(ValueError, match="window must be a positive int, got 0"):
        toy_saes.dead_latents(last, 10, 0)


def test_resample_dead_latents_points_at_badly_reconstructed_inputs():
    sae = toy_saes.StandardSAE(2, 2, n_instances=1, l1_coeff=0.0)
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    x = torch.cat([torch.rand(16, 1) * e1, (torch.rand(16, 1) + 0.5) * e2]).unsqueeze(1)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-2)
    sae(x).loss.sum().backward()
    optimizer.step()  # creates the optimizer state
    with torch.no_grad():  # latent 0 reads e1 exactly; latent 1 never fires
        sae.W_dec[0] = torch.stack([e1, -(e1 + e2) / math.sqrt(2)])
        sae.W_enc[0] = torch.stack([e1, -(e1 + e2)]).T
        sae.b_enc[0] = torch.tensor([0.0, -10.0])
        sae.b_dec.zero_()
    for param in sae.parameters():
        optimizer.state[param]["exp_avg"].fill_(1.0)
        optimizer.state[param]["exp_avg_sq"].uniform_(1.0, 2.0)
    dead = torch.tensor([[False, True]])
    count = toy_saes.resample_dead_latents(sae, x, dead, optimizer, encoder_scale=0.2)
    assert count == 1
    assert torch.allclose(sae.W_dec[0, 1], e2)  # the direction of the badly served inputs
    assert torch.allclose(sae.W_enc[0, :, 1], 0.2 * e2)  # 0.2 x the live encoder norm (1)
    assert sae.b_enc[0, 1] == 0
    for param, axis in sae.latent_parameters():
        moments = optimizer.state[param]["exp_avg"][0]
        assert (moments.select(axis - 1, 1) == 0).all()  # the resampled latent: reset
        assert (moments.select(axis - 1, 0) == 1).all()  # the live one: untouched
        second = optimizer.state[param]["exp_avg_sq"][0]  # new latent: the live ones' mean
        assert torch.equal(second.select(axis - 1, 1), second.select(axis - 1, 0))
    assert toy_saes.resample_dead_latents(sae, x, torch.zeros(1, 2, dtype=torch.bool)) == 0
    with pytest.raises(ValueError, match=r"dead must be a bool tensor of shape \(1, 2\)"):
        toy_saes.resample_dead_latents(sae, x, torch.zeros(2, 2, dtype=torch.bool))


def test_resample_resets_extra_parameters():
    gated = toy_saes.GatedSAE(2, 2)
    jump = toy_saes.JumpReLUSAE(2, 2, init_threshold=0.3)
    with torch.no_grad():
        gated.r_mag.fill_(1.0)
        jump.log_threshold.fill_(2.0)
    direction = torch.tensor([0.6, 0.8])
    gated.reset_latent(0, 1, direction, 0.5)
    jump.reset_latent(0, 1, direction, 0.5)
    assert gated.r_mag[0, 1] == 0 and gated.r_mag[0, 0] == 1
    assert math.isclose(float(jump.threshold[0, 1].detach()), 0.3, rel_tol=1e-6)
    assert torch.allclose(jump.W_enc[0, :, 1], 0.5 * direction)


def test_train_sae_learns_and_resamples():
    torch.manual_seed(1)
    sae = toy_saes.StandardSAE(2, 3, n_instances=2, l1_coeff=0.01, generator=_gen(2))
    with torch.no_grad():
        sae.b_enc[:, 2] = -100.0  # a latent born dead
    log = toy_saes.train_sae(
        sae,
        _orthogonal_data(2),
        steps=300,
        batch_size=128,
        lr=1e-2,
        resample_every=50,
        dead_window=20,
        log_every=10,
        progress=False,
    )
    assert log.loss.shape == (30, 2) and log.dead.shape == (30, 2) and len(log.steps) == 30
    assert (log.mse[-3:].mean(0) < log.mse[:3].mean(0)).all()
    assert sum(log.resampled) >= 2 and all(s < 0.75 * 300 for s in log.resample_steps)
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(2, 3), atol=1e-5)
    assert toy_saes.recovered_features(sae, torch.eye(2), _orthogonal_data(2)(256)).min() == 2
    with pytest.raises(ValueError, match="resample_every must be a positive int, got 0"):
        toy_saes.train_sae(sae, _orthogonal_data(2), steps=1, resample_every=0, progress=False)


# --- toy_saes: matching and shrinkage ----------------------------------------------------------


def _at(degrees: list[float]) -> torch.Tensor:
    rad = torch.tensor(degrees) * math.pi / 180
    return torch.stack([rad.cos(), rad.sin()], dim=1)


def test_cosine_similarity_matrix():
    cos = toy_saes.cosine_similarity_matrix(
        _at([0, 90]) * 3, torch.cat([_at([0]), torch.zeros(1, 2)])
    )
    assert torch.allclose(cos, torch.tensor([[1.0, 0.0], [0.0, 0.0]]), atol=1e-6)
    with pytest.raises(ValueError, match=r"same d, got \(2, 2\) and \(1, 3\)"):
        toy_saes.cosine_similarity_matrix(torch.ones(2, 2), torch.ones(1, 3))


def test_match_features_hungarian_beats_greedy():
    features, latents = _at([0, 50]), _at([10, -35])
    greedy = toy_saes.match_features(latents, features, method="greedy")
    hungarian = toy_saes.match_features(latents, features)
    assert greedy.latent.tolist() == [0, 1]
    assert hungarian.latent.tolist() == [1, 0]
    assert hungarian.similarity.sum() > greedy.similarity.sum()
    assert hungarian.recovered(0.7) == 2 and greedy.recovered(0.7) == 1
    fewer = toy_saes.match_features(_at([0]), features)  # one latent, two features
    assert fewer.latent.tolist() == [0, -1] and fewer.similarity[1] == 0
    with pytest.raises(ValueError, match="method must be 'hungarian' or 'greedy', got 'best'"):
        toy_saes.match_features(latents, features, method="best")


def _exact_sae(features: torch.Tensor, bias: float = 0.0) -> toy_saes.StandardSAE:
    """An SAE whose latents are exactly the (orthogonal) features, shifted by ``bias``."""
    n, d = features.shape
    sae = toy_saes.StandardSAE(d, n, n_instances=1)
    unit = features / features.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        sae.W_dec[0] = unit
        sae.W_enc[0] = unit.T
        sae.b_enc.fill_(bias)
        sae.b_dec.zero_()
    return sae


def test_recovered_features_and_shrinkage_measures():
    features = torch.eye(2) * torch.tensor([[2.0], [0.5]])
    exact, shrunk = _exact_sae(features), _exact_sae(features, bias=-0.1)
    x = toy_models.generate_batch(64, torch.tensor([0.5]), 2) + 0.2
    assert toy_saes.recovered_features(exact, features, x).tolist() == [2]
    # a dead SAE recovers nothing, however well its decoder rows point (defect of issue 14)
    dead = _exact_sae(features, bias=-100.0)
    assert torch.equal(dead.W_dec, exact.W_dec)
    assert toy_saes.recovered_features(dead, features, x).tolist() == [0]
    one_dead = _exact_sae(features)
    with torch.no_grad():
        one_dead.W_enc[0, :, 1] = -one_dead.W_enc[0, :, 1]  # latent 1 never fires on x >= 0
    assert toy_saes.recovered_features(one_dead, features, x).tolist() == [1]
    assert torch.allclose(toy_saes.norm_ratio(exact, x), torch.ones(1), atol=1e-5)
    assert toy_saes.norm_ratio(shrunk, x) < 1
    magnitudes = torch.linspace(0.5, 1.0, 6)
    acts, latent, similarity = toy_saes.feature_response(exact, features, magnitudes)
    assert acts.shape == (2, 6) and latent.tolist() == [0, 1]
    assert torch.allclose(acts[0], 2 * magnitudes, atol=1e-6)
    assert torch.allclose(similarity, torch.ones(2))
    assert torch.allclose(toy_saes.activation_ratio(exact, features, magnitudes), torch.ones(1))
    assert toy_saes.activation_ratio(shrunk, features, magnitudes) < 0.95
    with pytest.raises(ValueError, match=r"features must have shape \(features, 2\)"):
        toy_saes.recovered_features(exact, torch.ones(2, 3), x)
    with pytest.raises(ValueError, match=r"x must have shape"):
        toy_saes.recovered_features(exact, features, torch.ones(4, 2))
    with pytest.raises(ValueError, match="instance must be in \\[0, 1\\), got 3"):
        toy_saes.feature_response(exact, features, magnitudes, instance=3)


# --- checks ------------------------------------------------------------------------------------


def _square(x):
    return x**2


def test_check_function_accepts_and_reports(capsys):
    cases = [("ints", (torch.arange(3),), {}), ("float", (1.5,), {})]
    checks.check_function(_square, _square, cases)
    assert capsys.readouterr().out.strip() == "✓ all 2 cases match"


def test_check_function_names_first_failing_case():
    cases = [
        ("fine", (torch.zeros(2),), {}),
        ("first bad", (torch.tensor([1.0, 3.0]),), {}),
        ("second bad", (torch.tensor([5.0]),), {}),
    ]
    with pytest.raises(AssertionError) as info:
        checks.check_function(lambda x: x**2 + (x > 2), _square, cases)
    message = str(info.value)
    assert message.startswith("case 'first bad'") and "second bad" not in message
    assert "max abs difference 1" in message and "shapes: yours (2,), expected (2,)" in message


def test_check_function_shapes_tuples_nan_and_exceptions():
    case = [("c", (torch.ones(2, 3),), {})]
    with pytest.raises(
        AssertionError, match=r"wrong shape; shapes: yours \(3, 2\), expected \(2, 3\)"
    ):
        checks.check_function(lambda x: x.T, lambda x: x, case)
    with pytest.raises(AssertionError, match=r"case 'c': output\[1\] differs"):
        checks.check_function(lambda x: (x, x + 1), lambda x: (x, x), case)
    with pytest.raises(AssertionError, match="expected a sequence of 2 values, got 1"):
        checks.check_function(lambda x: (x,), lambda x: (x, x), case)
    with pytest.raises(AssertionError, match="max abs difference nan"):
        checks.check_function(lambda x: x * math.nan, lambda x: x, case)
    checks.check_function(lambda x: x * math.nan, lambda x: x * math.nan, case)  # NaN == NaN
    checks.check_function(lambda x: float(x.sum()), lambda x: x.sum(), case)  # float vs 0-d
    with pytest.raises(AssertionError, match="case 'c': your function raised ZeroDivisionError"):
        checks.check_function(lambda x: 1 / 0, lambda x: x, case)
    with pytest.raises(AssertionError, match="1 entries differ"):
        checks.check_function(lambda x: x[0] > 0, lambda x: x[0] > torch.tensor([0, 0, 2]), case)
    with pytest.raises(ValueError, match="at least one"):
        checks.check_function(_square, _square, [])
    with pytest.raises(ValueError, match="each case must be"):
        checks.check_function(_square, _square, [("no kwargs", (1,))])


def test_check_function_does_not_share_inputs():
    def in_place(x):
        x.add_(1)
        return x

    checks.check_function(in_place, lambda x: x + 1, [("c", (torch.zeros(3),), {})])


def _expect_case(checker, fn, case: str) -> None:
    with pytest.raises(AssertionError, match=f"^case '{case}'"):
        checker(fn)


def test_check_toy_forward(capsys):
    checks.check_toy_forward(checks.reference_toy_forward)
    assert "✓ all 6 cases match" in capsys.readouterr().out
    _expect_case(checks.check_toy_forward, lambda W, b, x: x @ W.T @ W + b, "random")  # no ReLU


def test_check_feature_dimensionality():
    checks.check_feature_dimensionality(toy_models.feature_dimensionality)

    def no_zero_guard(W):  # 0 / 0 for a dropped feature
        unit = W / W.norm(dim=0)
        return W.norm(dim=0) ** 2 / ((unit.T @ W) ** 2).sum(1)

    def without_self(W):  # forgets the j = i term
        unit = W / W.norm(dim=0).clamp_min(1e-8)
        inter = (unit.T @ W) ** 2
        return W.norm(dim=0) ** 2 / (inter.sum(1) - inter.diagonal()).clamp_min(1e-8)

    _expect_case(checks.check_feature_dimensionality, no_zero_guard, "a dropped \\(zero\\) feature")
    _expect_case(checks.check_feature_dimensionality, without_self, "random")


def test_check_sae_loss():
    checks.check_sae_loss(checks.reference_sae_loss)

    def no_centering(x, W_enc, b_enc, W_dec, b_dec, l1):
        f = torch.relu(x @ W_enc + b_enc)
        return ((x - f @ W_dec - b_dec).pow(2).sum(-1) + l1 * f.sum(-1)).mean()

    _expect_case(checks.check_sae_loss, no_centering, "random")


def test_check_max_cosine_similarity():
    checks.check_max_cosine_similarity(checks.reference_max_cosine_similarity)

    def divide_by_norm(decoder, features):  # NaN for a zero feature
        dec = decoder / decoder.norm(dim=-1, keepdim=True)
        feat = features / features.norm(dim=-1, keepdim=True)
        return (feat @ dec.T).max(-1).values

    _expect_case(checks.check_max_cosine_similarity, divide_by_norm, "a zero feature")


def test_check_topk_activation():
    checks.check_topk_activation(toy_saes.topk_activation)

    def no_relu(z, k):
        top = z.topk(k, dim=-1)
        return torch.zeros_like(z).scatter(-1, top.indices, top.values)

    _expect_case(checks.check_topk_activation, no_relu, "k = d_sae")


def test_check_jumprelu_function():
    checks.check_jumprelu_function(toy_saes.JumpReLUFunction)

    class StepGradient(torch.autograd.Function):  # uses the Heaviside's 1/eps, not theta/eps
        @staticmethod
        def forward(ctx, z, theta, bandwidth):
            ctx.save_for_backward(z, theta)
            ctx.bandwidth = bandwidth
            return z * (z > theta)

        @staticmethod
        def backward(ctx, grad):
            z, theta = ctx.saved_tensors
            window = toy_saes.rectangle((z - theta) / ctx.bandwidth)
            grad_theta = (-grad / ctx.bandwidth * window).sum_to_size(theta.shape)
            return grad * (z > theta), grad_theta, None

    class PassThrough(StepGradient):  # lets the gradient reach z below the threshold too
        @staticmethod
        def backward(ctx, grad):
            z, theta = ctx.saved_tensors
            window = toy_saes.rectangle((z - theta) / ctx.bandwidth)
            return grad, (-grad * theta / ctx.bandwidth * window).sum_to_size(theta.shape), None

    _expect_case(checks.check_jumprelu_function, StepGradient, "near the threshold")
    with pytest.raises(AssertionError, match=r"^case 'near the threshold': output\[1\] differs"):
        checks.check_jumprelu_function(PassThrough)
    with pytest.raises(TypeError, match="torch.autograd.Function"):
        checks.check_jumprelu_function(lambda z, t, b: z)


def test_instanced_toy_model_checks_sizes_input_and_draws_xavier_weights():
    InstancedToyModel, ToyModel = toy_models.InstancedToyModel, toy_models.ToyModel

    base = InstancedToyModel(n_features=30, n_hidden=10, n_instances=2)
    w = base.xavier(2000, 10, 30, generator=torch.Generator().manual_seed(0))
    assert w.shape == (2000, 10, 30)
    assert abs(float(w.std()) - (2.0 / 40) ** 0.5) < 2e-3  # Xavier normal: sqrt(2/(in+out))
    base._check_input(torch.zeros(5, 2, 30))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2, 30\).*got \(5, 3, 30\)"):
        base._check_input(torch.zeros(5, 3, 30))
    with pytest.raises(ValueError, match="n_hidden"):
        InstancedToyModel(n_features=3, n_hidden=0)
    # the toy model draws exactly these weights: same generator, same draw
    model = ToyModel(30, 10, 2, generator=torch.Generator().manual_seed(1))
    again = base.xavier(2, 10, 30, generator=torch.Generator().manual_seed(1))
    assert torch.equal(model.W.detach(), again)


# --- reference rows: toy models against closed forms and explicit loops ---------------------


def test_dimensionality_matches_an_explicit_loop(reference_row):
    """D_i = ||W_i||^2 / sum_j (W_i . W_j / ||W_i||)^2 (Elhage et al., 2022) and n_hidden /
    ||W||_F^2, written out as plain Python loops over the numbers in W."""
    W = torch.randn(3, 4, 9, generator=_gen(11))
    W[1, :, 2] = 0.0  # a dropped feature: D = 0
    W[2] = torch.cat([_polygon(5), torch.zeros(2, 5)]).repeat(1, 2)[:, :9]  # repeated columns
    got = toy_models.feature_dimensionality(W)
    got_dpf = toy_models.dimensions_per_feature(W)
    rows = W.tolist()
    worst = 0.0
    for k, Wk in enumerate(rows):
        hidden, features = len(Wk), len(Wk[0])
        frob = 0.0
        for i in range(features):
            col_i = [Wk[h][i] for h in range(hidden)]
            sq = sum(v * v for v in col_i)
            frob += sq
            if sq == 0:
                expected = 0.0
            else:
                norm = math.sqrt(sq)
                denom = 0.0
                for j in range(features):
                    dot = sum(col_i[h] * Wk[h][j] for h in range(hidden)) / norm
                    denom += dot * dot
                expected = sq / denom
            worst = max(worst, abs(float(got[k, i]) - expected))
        worst = max(worst, abs(float(got_dpf[k]) - hidden / frob))
    pentagon = toy_models.feature_dimensionality(_polygon(5))
    pentagon_err = float((pentagon - 0.4).abs().max())
    ok = worst < 1e-5 and pentagon_err < 1e-5
    reference_row(
        technique="toy models: feature dimensionality",
        reference="explicit Python loops over W (Elhage et al. 2022 formula); the pentagon's 2/5",
        quantity="max abs difference (D_i and dimensions per feature)",
        measured=f"{worst:.1e}; pentagon {pentagon_err:.1e}",
        tolerance="1e-5",
        ok=ok,
    )
    assert worst < 1e-5 and pentagon_err < 1e-5
    assert float(got[1, 2]) == 0.0


def test_two_feature_solutions_reach_their_closed_form_losses(reference_row):
    """Two features in one dimension, x_i = U[0, 1) with probability p. Keeping feature 1
    (W = [1, 0], b = [0, p/2]) costs I_2 (p/3 - p^2/4) / 2; the antipodal pair (W = [1, -1],
    b = 0) costs (I_1 + I_2) p^2 / 12 (E[min(u, v)^2] = 1/6 when both are present). Sampled
    with generate_batch and scored with ToyModel and weighted_mse, one instance per p."""
    probs = torch.tensor([1.0, 0.5, 0.2, 0.05])
    importance = torch.tensor([1.0, 0.7])
    n = 200_000
    x = toy_models.generate_batch(n, probs, 2, generator=_gen(3))
    worst_z = 0.0
    measured = []
    for name, w, bias, exact in (
        ("one feature", [1.0, 0.0], lambda p: [0.0, p / 2], lambda p: 0.7 * (p / 3 - p**2 / 4) / 2),
        ("antipodal", [1.0, -1.0], lambda p: [0.0, 0.0], lambda p: 1.7 * p**2 / 12),
    ):
        model = toy_models.ToyModel(2, 1, n_instances=len(probs))
        with torch.no_grad():
            model.W.copy_(torch.tensor(w).expand(len(probs), 1, 2))
            model.b.copy_(torch.tensor([bias(float(p)) for p in probs]))
            out = model(x)
            loss = toy_models.weighted_mse(out, x, importance)
            per_sample = (importance * (out - x) ** 2).mean(-1)  # (n, instances)
        std_err = per_sample.std(0) / math.sqrt(n)
        closed = torch.tensor([exact(float(p)) for p in probs])
        z = ((loss - closed) / std_err).abs()
        worst_z = max(worst_z, float(z.max()))
        measured.append(f"{name} max rel. {float(((loss - closed) / closed).abs().max()):.1e}")
    ok = worst_z < 5
    reference_row(
        technique="toy models: loss of the two-feature solutions",
        reference="closed forms I_2 (p/3 - p^2/4)/2 (one feature kept) and (I_1 + I_2) p^2/12 "
        "(antipodal)",
        quantity="sampled loss (2e5 samples per p) vs closed form",
        measured="; ".join(measured) + f"; max {worst_z:.1f} standard errors",
        tolerance="5 standard errors",
        ok=ok,
    )
    assert worst_z < 5


def _sae_lens_twin(toy: toy_saes.ToySAE, arch: str, coeff: float):
    """A SAELens training SAE of the same architecture holding ``toy``'s weights (instance 0),
    and the coefficients its training_forward_pass reads."""
    import sae_lens

    d_in, d_sae = toy.d_in, toy.d_sae
    state = {"W_enc": toy.W_enc[0], "W_dec": toy.W_dec[0], "b_dec": toy.b_dec[0]}
    if arch == "standard":
        sae = sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(d_in, d_sae))
        state["b_enc"], coefficients = toy.b_enc[0], {"l1": coeff}
    elif arch == "gated":
        sae = sae_lens.GatedTrainingSAE(sae_lens.GatedTrainingSAEConfig(d_in, d_sae))
        state.update(b_gate=toy.b_enc[0], r_mag=toy.r_mag[0], b_mag=toy.b_mag[0])
        coefficients = {"l1": coeff}
    elif arch == "jumprelu":
        cfg = sae_lens.JumpReLUTrainingSAEConfig(d_in, d_sae, jumprelu_bandwidth=toy.bandwidth)
        sae = sae_lens.JumpReLUTrainingSAE(cfg)
        state.update(b_enc=toy.b_enc[0], threshold=toy.threshold[0])
        coefficients = {"l0": coeff}
    else:
        cfg = sae_lens.TopKTrainingSAEConfig(
            d_in, d_sae, k=toy.k, rescale_acts_by_decoder_norm=False
        )
        sae = sae_lens.TopKTrainingSAE(cfg)
        state["b_enc"], coefficients = toy.b_enc[0], {}
    sae.load_state_dict({name: value.detach().clone() for name, value in state.items()})
    return sae, coefficients


def test_toy_saes_match_sae_lens_training_saes(reference_row):
    """Each toy SAE against SAELens' training SAE of its architecture, loaded with the same
    weights: latents, reconstruction, every loss term of ``training_forward_pass`` and the
    gradients of the encoder-side parameters (the JumpReLU threshold's pseudo-derivative
    included; the toy learns log(theta), so its gradient is theta times SAELens')."""
    from sae_lens.saes.sae import TrainStepInput

    d_in, d_sae, coeff = 5, 12, 0.3
    x = torch.randn(64, 1, d_in, generator=_gen(21))
    toys = {
        "standard": toy_saes.StandardSAE(d_in, d_sae, l1_coeff=coeff, generator=_gen(22)),
        "gated": toy_saes.GatedSAE(d_in, d_sae, l1_coeff=coeff, generator=_gen(23)),
        "jumprelu": toy_saes.JumpReLUSAE(
            d_in, d_sae, l0_coeff=coeff, bandwidth=0.5, generator=_gen(24)
        ),  # fmt: skip
        "topk": toy_saes.TopKSAE(d_in, d_sae, k=3, generator=_gen(25)),
    }
    # loss term names: SAELens' on the left, the toy's on the right
    terms = {
        "standard": {"l1_loss": "l1"},
        "gated": {"l1_loss": "l1", "auxiliary_reconstruction_loss": "aux"},
        "jumprelu": {"l0_loss": "l0"},
        "topk": {},
    }
    g = _gen(26)
    worst: dict[str, float] = {}
    for arch, toy in toys.items():
        with torch.no_grad():  # random biases, so that no bias is trivially zero
            toy.b_enc.copy_(torch.randn(toy.b_enc.shape, generator=g) * 0.3)
            toy.b_dec.copy_(torch.randn(toy.b_dec.shape, generator=g) * 0.3)
            if arch == "gated":
                toy.r_mag.copy_(torch.randn(toy.r_mag.shape, generator=g) * 0.3)
                toy.b_mag.copy_(torch.randn(toy.b_mag.shape, generator=g) * 0.3)
            if arch == "jumprelu":
                toy.log_threshold.copy_(torch.rand(toy.log_threshold.shape, generator=g) - 1.5)
        sae, coefficients = _sae_lens_twin(toy, arch, coeff)
        out = toy(x)
        step = TrainStepInput(sae_in=x[:, 0], coefficients=coefficients, dead_neuron_mask=None,
                              n_training_steps=0, is_logging_step=False)  # fmt: skip
        ref = sae.training_forward_pass(step)
        diffs = [
            (out.latents[:, 0] - ref.feature_acts).abs().max(),
            (out.reconstruction[:, 0] - ref.sae_out).abs().max(),
            (out.terms["mse"][0] - ref.losses["mse_loss"]).abs(),
            (out.loss[0] - ref.loss).abs(),
        ]
        diffs += [(out.terms[t][0] - ref.losses[r]).abs() for r, t in terms[arch].items()]
        out.loss.sum().backward()
        ref.loss.backward()
        pairs = [(toy.W_enc.grad[0], sae.W_enc.grad), (toy.b_enc.grad[0],
                 sae.b_gate.grad if arch == "gated" else sae.b_enc.grad)]  # fmt: skip
        if arch == "gated":
            pairs += [(toy.r_mag.grad[0], sae.r_mag.grad), (toy.b_mag.grad[0], sae.b_mag.grad)]
        if arch == "jumprelu":
            pairs += [(toy.log_threshold.grad[0], toy.threshold[0].detach() * sae.threshold.grad)]
        if arch in ("jumprelu", "topk"):  # decoder grads: same objective, same decoder use
            pairs += [(toy.W_dec.grad[0], sae.W_dec.grad), (toy.b_dec.grad[0], sae.b_dec.grad)]
        diffs += [(a - b).abs().max() for a, b in pairs]
        worst[arch] = float(torch.stack([d.detach() for d in diffs]).max())
    assert toys["jumprelu"].log_threshold.grad.abs().max() > 0  # the pseudo-derivative was hit
    ok = max(worst.values()) < 1e-5
    reference_row(
        technique="toy SAEs (standard, gated, JumpReLU, TopK)",
        reference="SAELens training SAEs with the same weights (training_forward_pass)",
        quantity="max abs difference (latents, reconstruction, loss terms, encoder gradients)",
        measured=", ".join(f"{arch} {value:.1e}" for arch, value in worst.items()),
        tolerance="1e-5",
        ok=ok,
        note="decoder gradients are compared for JumpReLU and TopK only: SAELens weights the "
        "L1 penalty by decoder norms (the toy keeps them at 1 instead) and its gated auxiliary "
        "loss uses the live decoder, where the paper and the toy use a frozen copy",
    )
    for arch, value in worst.items():
        assert value < 1e-5, arch


def test_hungarian_matching_equals_a_search_over_every_assignment(reference_row):
    """match_features("hungarian") against a brute-force search: every injective assignment
    of 5 features to 7 latents (2520 of them) scored by its total cosine, on random
    directions where greedy matching is not always optimal."""
    import itertools

    worst, beats_greedy, n_cases = 0.0, 0, 6
    for seed in range(n_cases):
        g = _gen(40 + seed)
        features = torch.randn(5, 4, generator=g)
        decoder = torch.randn(7, 4, generator=g)
        match = toy_saes.match_features(decoder, features, "hungarian")
        cos = (
            torch.nn.functional.normalize(features, dim=-1)
            @ torch.nn.functional.normalize(decoder, dim=-1).T
        )
        best = max(
            sum(float(cos[i, j]) for i, j in enumerate(assign))
            for assign in itertools.permutations(range(7), 5)
        )
        total = float(match.similarity.sum())
        assert len(set(match.latent.tolist())) == 5  # distinct latents
        worst = max(worst, abs(total - best))
        greedy = float(toy_saes.match_features(decoder, features, "greedy").similarity.sum())
        beats_greedy += greedy < best - 1e-6
    ok = worst < 1e-5
    reference_row(
        technique="toy SAEs: feature matching (Hungarian)",
        reference="exhaustive search over every assignment of features to latents",
        quantity="abs difference of the total matched cosine",
        measured=f"{worst:.1e} over {n_cases} random cases (greedy suboptimal in {beats_greedy})",
        tolerance="1e-5",
        ok=ok,
    )
    assert worst < 1e-5
    assert beats_greedy > 0  # the cases can tell an optimal matching from a greedy one
