"""Unit tests of saebook.toy_computation (tiny shapes, fast)."""

from __future__ import annotations

import pytest
import torch

from saebook import toy_computation as tc
from saebook import toy_models as tm


def test_linear_tied_model_matches_toy_model() -> None:
    g = torch.Generator().manual_seed(0)
    model = tc.HiddenLayerModel(5, 2, 3, hidden_relu=False, generator=g)
    toy = tm.ToyModel(5, 2, 3)
    with torch.no_grad():
        toy.W.copy_(model.W_in)
        model.b_out.normal_(generator=g)
        toy.b.copy_(model.b_out)
    x = torch.rand(7, 3, 5, generator=g)
    assert torch.allclose(model(x), toy(x), atol=1e-6)


def test_relu_hidden_model_matches_single_forward() -> None:
    g = torch.Generator().manual_seed(1)
    model = tc.HiddenLayerModel(4, 3, 2, generator=g)
    x = torch.rand(6, 2, 4, generator=g)
    out = model(x)
    for k in range(2):
        ref = tc.relu_hidden_forward(model.W_in[k], model.b_out[k], x[:, k])
        assert torch.allclose(out[:, k], ref, atol=1e-6)
    assert (model.hidden(x) >= 0).all()


def test_untied_model_and_shape_errors() -> None:
    model = tc.HiddenLayerModel(4, 3, 2, tied=False, hidden_bias=True)
    assert model.output_weights().shape == (2, 4, 3) and model.b_hidden.requires_grad
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.zeros(5, 4))
    with pytest.raises(ValueError, match="need W"):
        tc.relu_hidden_forward(torch.zeros(2, 3), torch.zeros(2), torch.zeros(1, 3))


def test_signed_batch_and_abs_loss() -> None:
    g = torch.Generator().manual_seed(2)
    x = tc.generate_signed_batch(4000, torch.tensor([1.0, 0.1]), 3, generator=g)
    assert x.shape == (4000, 2, 3) and x.min() >= -1 and x.max() <= 1
    assert (x[:, 0] < 0).float().mean().item() == pytest.approx(0.5, abs=0.05)
    assert (x[:, 1] != 0).float().mean().item() == pytest.approx(0.1, abs=0.02)
    imp = torch.tensor([1.0, 0.5, 0.25])
    assert torch.allclose(tc.abs_loss(x.abs(), x, imp), torch.zeros(2))
    by_hand = (imp * x.abs() ** 2).mean(dim=(0, 2))
    assert torch.allclose(tc.abs_loss(torch.zeros_like(x), x, imp), by_hand)


def test_train_hidden_model_lowers_the_loss() -> None:
    g = torch.Generator().manual_seed(3)
    model = tc.HiddenLayerModel(4, 4, 1, tied=False, hidden_bias=True, generator=g)
    prob = torch.tensor([0.3])
    x = tc.generate_signed_batch(2000, prob, 4, generator=g)
    before = tc.abs_loss(model(x), x, torch.ones(4)).item()
    tc.train_hidden_model(model, prob, task="abs", steps=150, batch_size=128, generator=g)
    after = tc.abs_loss(model(x), x, torch.ones(4)).item()
    assert after < 0.7 * before
    with pytest.raises(ValueError, match="task"):
        tc.train_hidden_model(model, prob, task="square")


def test_top_neuron_share_and_alignment() -> None:
    W = torch.tensor([[1.0, 1.0, 0.0], [0.0, -1.0, 0.0]])
    assert torch.allclose(tc.top_neuron_share(W), torch.tensor([1.0, 0.5, 0.0]))
    # the zero column is not stored, so it is left out of the mean
    assert tc.basis_alignment(W).item() == pytest.approx(0.75)


def test_random_rotation_is_orthogonal_and_baseline_matches_theory() -> None:
    g = torch.Generator().manual_seed(4)
    R = tc.random_rotation(5, generator=g)
    assert torch.allclose(R @ R.T, torch.eye(5), atol=1e-5)
    W = torch.eye(2).repeat(1, 1, 1)  # two features on two neurons: alignment 1
    rotated = tc.rotated_alignment(W, 4000, generator=g)
    assert rotated.shape == (4000, 1)
    # a random unit vector in 2-D puts max(cos^2, sin^2) on its top axis: mean 1/2 + 1/pi
    assert rotated.mean().item() == pytest.approx(0.5 + 1 / torch.pi, abs=0.01)


def test_abs_top_k_loss_matches_its_explicit_model() -> None:
    g = torch.Generator().manual_seed(5)
    imp = torch.tensor([1.0, 0.8, 0.6, 0.4])
    prob = torch.tensor([0.4, 0.4])
    model = tc.abs_top_k_model(imp, prob, 4)
    x = tc.generate_signed_batch(200_000, prob, 4, generator=g)
    with torch.no_grad():
        mc = tc.abs_loss(model(x), x, imp)
    closed = tc.abs_top_k_loss(imp, 0.4, 2)
    assert closed == pytest.approx((0.6 + 0.4) * (0.4 / 3 - 0.16 / 4) / 4)
    assert torch.allclose(mc, torch.full((2,), closed), rtol=0.03)
    assert tc.abs_top_k_loss(imp, 0.4, 4) == 0.0


def test_abs_represented_and_monosemantic_neurons() -> None:
    model = tc.abs_top_k_model(torch.tensor([1.0, 0.5, 0.2]), torch.tensor([0.1]), 4)
    assert tc.abs_represented(model).tolist() == [[True, True, False]]
    mono = tc.monosemantic_neurons(model.W_in)
    assert mono.tolist() == [[True, True, True, True]]
    mixed = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert tc.monosemantic_neurons(mixed).tolist() == [False, False]


def test_plot_weight_heatmaps() -> None:
    fig = tc.plot_weight_heatmaps([torch.eye(2), -torch.eye(2)], ["a", "b"])
    assert len(fig.data) == 2 and fig.data[1].zmin == -1.0
    with pytest.raises(ValueError, match="one title"):
        tc.plot_weight_heatmaps([torch.eye(2)], ["a", "b"])
