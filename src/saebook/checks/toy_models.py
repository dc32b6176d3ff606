"""Checkers for the exercises of part 1, "Superposition and SAEs in toy models"."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from saebook import toy_computation, toy_models, toy_saes
from saebook.checks.core import Case, _generator, check_function

# --- Part 0, chapter 1: superposition -------------------------------------------------------


def reference_toy_forward(W: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """``ReLU(x W^T W + b)`` for one toy model; W is (hidden, features), x (batch, features)."""
    return torch.relu(x @ W.T @ W + b)


def check_toy_forward(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(W, b, x) -> ReLU(W^T W x + b)`` for a single toy model.

    ``W`` is ``(hidden, features)``, ``b`` is ``(features,)``, ``x`` is ``(batch, features)``
    and the result is ``(batch, features)``.
    """
    g = _generator(0)
    W = torch.randn(2, 5, generator=g)
    b = torch.randn(5, generator=g) * 0.3
    x = torch.rand(8, 5, generator=g)
    wide = torch.randn(3, 7, generator=g)
    cases: list[Case] = [
        ("random", (W, b, x), {}),
        ("zero input", (W, b, torch.zeros(4, 5)), {}),
        ("single feature", (W, b, torch.eye(5)[[2]] * 0.7), {}),
        ("batch of one", (W, b, x[:1]), {}),
        ("negative bias", (W, -torch.ones(5) * 5, x), {}),
        ("3 hidden, 7 features", (wide, torch.zeros(7), torch.rand(6, 7, generator=g)), {}),
    ]
    check_function(fn, reference_toy_forward, cases)


def check_feature_dimensionality(fn: Callable[[Tensor], Tensor]) -> None:
    """Check ``fn(W) -> D`` with ``D_i = ||W_i||^2 / sum_j (Ŵ_i · W_j)^2``.

    ``W`` is ``(hidden, features)`` and ``D`` is ``(features,)``; a zero column must give 0.
    """
    g = _generator(1)
    angle = torch.linspace(0, 2 * math.pi, 6)[:5]
    pentagon = torch.stack([angle.cos(), angle.sin()])
    random = torch.randn(3, 6, generator=g)
    with_zero = random.clone()
    with_zero[:, 2] = 0
    cases: list[Case] = [
        ("random", (random,), {}),
        ("orthogonal features", (torch.eye(4) * torch.tensor([1.0, 0.5, 2.0, 1.0]),), {}),
        ("antipodal pair", (torch.tensor([[1.0, -1.0]]),), {}),
        ("pentagon", (pentagon,), {}),
        ("a dropped (zero) feature", (with_zero,), {}),
        ("single feature", (torch.randn(4, 1, generator=g),), {}),
    ]
    check_function(fn, toy_models.feature_dimensionality, cases)


def check_two_feature_phase(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(W, threshold=0.5) -> (cells,)`` int codes of two-feature arrangements.

    ``W`` is ``(cells, hidden, 2)``. Code 0: only feature 1 has norm above ``threshold``;
    1: only feature 2; 2: both, with ``W_1 · W_2 < 0``; 3: anything else. The reference is
    :func:`saebook.toy_models.two_feature_phase`. Cases: one cell of each code in one
    dimension, norms exactly at the threshold (not stored), another threshold, both features
    stored on the same side, and two hidden dimensions (orthogonal and obtuse pairs).
    """
    g = _generator(12)
    one_dim = torch.tensor([[[1.0, 0.02]], [[-0.1, 1.2]], [[0.9, -1.1]], [[0.2, -0.3]]])
    at_threshold = torch.tensor([[[0.5, -1.0]], [[1.0, 0.5]], [[0.5, -0.5]]])
    same_side = torch.tensor([[[1.0, 0.8]], [[-1.0, -0.7]]])
    two_dim = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, -0.6], [0.0, 0.8]]])
    random = torch.randn(12, 1, 2, generator=g)
    cases: list[Case] = [
        ("one cell of each code", (one_dim,), {}),
        ("norms at the threshold", (at_threshold,), {}),
        ("threshold 0.1", (one_dim,), {"threshold": 0.1}),
        ("both stored on the same side", (same_side,), {}),
        ("two hidden dimensions", (two_dim,), {}),
        ("random cells", (random,), {}),
    ]
    check_function(fn, toy_models.two_feature_phase, cases)


# --- Part 0, chapter 2: SAEs from scratch ---------------------------------------------------


def reference_sae_loss(
    x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor, l1_coeff: float
) -> Tensor:
    """Mean over the batch of ``||x - x_hat||^2 + l1_coeff * ||f||_1`` for a ReLU SAE.

    ``f = ReLU((x - b_dec) W_enc + b_enc)`` and ``x_hat = f W_dec + b_dec``, with ``x``
    ``(batch, d_in)``, ``W_enc`` ``(d_in, d_sae)``, ``W_dec`` ``(d_sae, d_in)``.
    """
    latents = torch.relu((x - b_dec) @ W_enc + b_enc)
    recon = latents @ W_dec + b_dec
    return ((x - recon).pow(2).sum(-1) + l1_coeff * latents.abs().sum(-1)).mean()


def check_superposition_measure(fn: Callable[[Tensor], Tensor]) -> None:
    """Check ``fn(W) -> (features,)``: ``sum_{j != i} (Ŵ_i · W_j)^2`` for each column ``W_i``
    of ``W`` ``(hidden, features)``, 0 for a zero column. The reference is
    :func:`saebook.toy_models.superposition_measure`. Cases: random weights, orthogonal
    features (0 everywhere), an antipodal pair, features of different lengths (the measure
    normalises feature ``i`` only) and a dropped feature."""
    g = _generator(2)
    random = torch.randn(3, 6, generator=g)
    with_zero = random.clone()
    with_zero[:, 4] = 0
    uneven = torch.randn(2, 5, generator=g) * torch.tensor([0.2, 1.0, 3.0, 0.5, 2.0])
    cases: list[Case] = [
        ("random", (random,), {}),
        ("orthogonal features", (torch.eye(4) * torch.tensor([1.0, 0.5, 2.0, 1.0]),), {}),
        ("antipodal pair", (torch.tensor([[1.0, -0.7]]),), {}),
        ("features of different lengths", (uneven,), {}),
        ("a dropped feature", (with_zero,), {}),
    ]
    check_function(fn, toy_models.superposition_measure, cases)


def check_sae_loss(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(x, W_enc, b_enc, W_dec, b_dec, l1_coeff)`` against :func:`reference_sae_loss`."""
    g = _generator(2)
    d_in, d_sae = 3, 6
    W_enc = torch.randn(d_in, d_sae, generator=g)
    W_dec = torch.nn.functional.normalize(torch.randn(d_sae, d_in, generator=g), dim=-1)
    b_enc = torch.randn(d_sae, generator=g) * 0.1
    b_dec = torch.randn(d_in, generator=g) * 0.5
    x = torch.randn(16, d_in, generator=g)
    params = (W_enc, b_enc, W_dec, b_dec)
    cases: list[Case] = [
        ("random", (x, *params, 0.3), {}),
        ("no sparsity penalty", (x, *params, 0.0), {}),
        ("zero input", (torch.zeros(4, d_in), *params, 0.3), {}),
        ("batch of one", (x[:1], *params, 0.3), {}),
        ("single feature", (W_dec[[1]] * 2.0, *params, 1.0), {}),
        ("all latents off", (x, W_enc, -torch.full((d_sae,), 100.0), W_dec, b_dec, 0.3), {}),
    ]
    check_function(fn, reference_sae_loss, cases)


def reference_max_cosine_similarity(decoder: Tensor, features: Tensor) -> Tensor:
    """For each feature row, the largest cosine similarity with any decoder row."""
    return toy_saes.cosine_similarity_matrix(features, decoder).max(dim=-1).values


def check_max_cosine_similarity(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(decoder, features) -> (features,)`` best cosine of each feature.

    ``decoder`` is ``(d_sae, d_in)``, ``features`` is ``(features, d_in)``; a zero feature
    has cosine 0 with everything (as ``torch.nn.functional.normalize`` gives).
    """
    g = _generator(3)
    decoder = torch.randn(8, 4, generator=g)
    features = torch.randn(5, 4, generator=g)
    with_zero = features.clone()
    with_zero[1] = 0
    cases: list[Case] = [
        ("random", (decoder, features), {}),
        ("unnormalised decoder", (decoder * 7.0, features), {}),
        ("perfect recovery", (features[[3, 0, 4, 1, 2]] * 2.5, features), {}),
        ("opposite directions", (-features, features), {}),
        ("a zero feature", (decoder, with_zero), {}),
        ("one latent", (decoder[:1], features), {}),
    ]
    check_function(fn, reference_max_cosine_similarity, cases)


def check_greedy_matching(fn: Callable[[Tensor, Tensor], tuple]) -> None:
    """Check ``fn(decoder, features) -> (latent, similarity)``, a greedy one-to-one matching.

    ``decoder`` is ``(d_sae, d_in)``, ``features`` ``(n_features, d_in)``. Repeatedly take the
    (feature, latent) pair of largest cosine similarity among unmatched features and latents;
    ``latent[i]`` is feature ``i``'s latent (-1 when the latents ran out) and
    ``similarity[i]`` its cosine (0 if unmatched). The reference is
    :func:`saebook.toy_saes.match_features` with ``method="greedy"``. Cases include two
    features wanting the same latent (where greedy and the optimal matching differ) and fewer
    latents than features.
    """
    g = _generator(4)
    decoder = torch.randn(8, 4, generator=g)
    features = torch.randn(5, 4, generator=g)
    # latent 0 is closest to both features: greedy gives it to feature 1, the optimum to feature 0
    conflict_features = torch.tensor([[1.0, 0.0], [0.8, 0.6]])
    conflict_decoder = torch.tensor([[0.9, 0.436], [0.0, 1.0]])
    cases: list[Case] = [
        ("random", (decoder, features), {}),
        ("unnormalised decoder", (decoder * torch.linspace(0.2, 5.0, 8)[:, None], features), {}),
        ("perfect recovery", (features[[3, 0, 4, 1, 2]] * 2.5, features), {}),
        ("two features want one latent", (conflict_decoder, conflict_features), {}),
        ("fewer latents than features", (decoder[:3], features), {}),
    ]

    def reference(decoder: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        match = toy_saes.match_features(decoder, features, method="greedy")
        return match.latent, match.similarity

    def reader(decoder: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        latent, similarity = fn(decoder, features)
        return torch.as_tensor(latent).long(), torch.as_tensor(similarity).float()

    check_function(reader, reference, cases)


# --- Part 0, chapter 3: SAE variants --------------------------------------------------------


def check_topk_activation(fn: Callable[[Tensor, int], Tensor]) -> None:
    """Check ``fn(z, k)``: keep the ``k`` largest entries of each row (ReLU'd), zero the rest."""
    g = _generator(4)
    z = torch.randn(6, 10, generator=g)
    cases: list[Case] = [
        ("random, k=3", (z, 3), {}),
        ("k=1", (z, 1), {}),
        ("k = d_sae", (z, 10), {}),
        ("all negative", (-z.abs() - 0.1, 2), {}),
        ("zeros", (torch.zeros(3, 10), 2), {}),
        ("batch of one", (z[:1], 4), {}),
        ("extra batch axis", (torch.randn(2, 3, 10, generator=g), 2), {}),
    ]
    check_function(fn, toy_saes.topk_activation, cases)


def _jumprelu_probe(function: Any) -> Callable[..., tuple[Tensor, Tensor, Tensor]]:
    """Wrap an autograd Function: return its output and the gradients of a weighted sum."""

    def run(z: Tensor, theta: Tensor, bandwidth: float, weight: Tensor):
        z = z.clone().requires_grad_(True)
        theta = theta.clone().requires_grad_(True)
        out = function.apply(z, theta, bandwidth)
        (out * weight).sum().backward()
        grad_z = z.grad if z.grad is not None else torch.zeros_like(z)
        grad_theta = theta.grad if theta.grad is not None else torch.zeros_like(theta)
        return out.detach(), grad_z, grad_theta

    return run


def check_jumprelu_function(function: Any) -> None:
    """Check an autograd Function ``function.apply(z, theta, bandwidth)`` implementing JumpReLU.

    Forward ``z * 1[z > theta]``; backward ``d/dz = 1[z > theta]`` and
    ``d/dtheta = -(theta / bandwidth) * rectangle((z - theta) / bandwidth)``, summed over
    the axes along which ``theta`` was broadcast. ``z`` is ``(batch, d_sae)`` and ``theta``
    ``(d_sae,)``. Compared: the output, ``z``'s gradient and ``theta``'s gradient of
    ``(output * weight).sum()``.
    """
    if not hasattr(function, "apply"):
        raise TypeError(
            f"function must be a torch.autograd.Function subclass (with .apply), got {function!r}"
        )
    g = _generator(5)
    theta = torch.rand(6, generator=g) * 0.5 + 0.25
    near = theta + (torch.rand(32, 6, generator=g) - 0.5) * 0.16  # inside the 0.2 window
    far = torch.randn(32, 6, generator=g) * 2
    weight = torch.randn(32, 6, generator=g)
    cases: list[Case] = [
        ("near the threshold", (near, theta, 0.2, weight), {}),
        ("far from the threshold", (far, theta, 0.2, weight), {}),
        ("narrow bandwidth", (near, theta, 0.02, weight), {}),
        (
            "all below the threshold",
            (theta - 0.05 - torch.rand(4, 6, generator=g), theta, 0.2, weight[:4]),
            {},
        ),
        ("zeros", (torch.zeros(4, 6), theta, 0.2, weight[:4]), {}),
        ("batch of one", (near[:1], theta, 0.2, weight[:1]), {}),
    ]
    check_function(_jumprelu_probe(function), _jumprelu_probe(toy_saes.JumpReLUFunction), cases)


def check_weighted_mse(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(output, target, importance) -> (instances,)``, the toy model's loss.

    ``output`` and ``target`` are ``(batch, instances, features)``, ``importance`` is
    ``(features,)``; the result is the importance-weighted squared error averaged over the
    batch and the features, per instance. The reference is
    :func:`saebook.toy_models.weighted_mse`. Cases include equal importances, one instance,
    a perfect output and zero importance on all but one feature.
    """
    g = _generator(10)
    out = torch.randn(8, 3, 5, generator=g)
    target = torch.rand(8, 3, 5, generator=g)
    importance = 0.7 ** torch.arange(5.0)
    cases: list[Case] = [
        ("random", (out, target, importance), {}),
        ("equal importances", (out, target, torch.ones(5)), {}),
        ("one instance", (out[:, :1], target[:, :1], importance), {}),
        ("perfect output", (target, target, importance), {}),
        ("only feature 0 matters", (out, target, torch.eye(5)[0]), {}),
        ("batch of one", (out[:1], target[:1], importance), {}),
    ]
    check_function(fn, toy_models.weighted_mse, cases)


def check_dead_latents(fn: Callable[[Tensor, int, int], Tensor]) -> None:
    """Check ``fn(last_fired, step, window) -> bool (instances, d_sae)``.

    A latent is dead when it has not fired in the ``window`` steps up to ``step``:
    ``step - last_fired >= window`` (``last_fired`` is -1 for a latent that never fired).
    The reference is :func:`saebook.toy_saes.dead_latents`. Cases include a latent that last
    fired exactly ``window`` steps ago (dead), one step later than that (alive), latents that
    never fired, and step 0.
    """
    last = torch.tensor([[-1, 0, 5, 10, 11, 20], [3, 3, -1, 19, 20, 15]])
    cases: list[Case] = [
        ("step 20, window 10", (last, 20, 10), {}),
        ("step 20, window 1", (last, 20, 1), {}),
        ("step 0, window 1", (torch.full((2, 3), -1), 0, 1), {}),
        ("window longer than the run", (last, 20, 100), {}),
        ("one instance", (last[:1], 15, 5), {}),
    ]
    check_function(fn, toy_saes.dead_latents, cases)


def check_rectangle(fn: Callable[[Tensor], Tensor]) -> None:
    """Check ``fn(u)``: the rectangle kernel ``1[-1/2 < u < 1/2]`` as floats of ``u``'s dtype.

    The reference is :func:`saebook.toy_saes.rectangle`. Cases include the edges ``±1/2``
    (outside: the inequalities are strict), zero, float64 input and a 2-D input.
    """
    g = _generator(11)
    cases: list[Case] = [
        ("random", (torch.randn(20, generator=g),), {}),
        ("the edges ±1/2", (torch.tensor([-0.5, 0.5, -0.4999, 0.4999]),), {}),
        ("zero", (torch.zeros(3),), {}),
        ("float64", (torch.randn(10, generator=g).double(),), {}),
        ("2-D", (torch.randn(4, 6, generator=g),), {}),
    ]

    def with_dtype(kernel: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Any]:
        def run(u: Tensor) -> Any:
            out = torch.as_tensor(kernel(u))
            return out, str(out.dtype)

        return run

    check_function(with_dtype(fn), with_dtype(toy_saes.rectangle), cases)


_GATED_PARAMS = ("W_enc", "b_enc", "r_mag", "b_mag", "W_dec", "b_dec")


def _gated_reference(x: Tensor, params: dict[str, Tensor], l1_coeff: float) -> dict[str, Any]:
    """:class:`saebook.toy_saes.GatedSAE` (one instance) on ``x``: latents, loss, gradients."""
    d_in, d_sae = params["W_enc"].shape
    sae = toy_saes.GatedSAE(d_in, d_sae, 1, l1_coeff=l1_coeff)
    with torch.no_grad():
        for name in _GATED_PARAMS:
            getattr(sae, name).copy_(params[name][None])
    out = sae(x[:, None])
    grads = torch.autograd.grad(out.loss.sum(), [getattr(sae, n) for n in _GATED_PARAMS])
    return {
        "latents": out.latents[:, 0].detach(),
        "loss": out.loss[0].detach(),
        "gradients": {n: g[0] for n, g in zip(_GATED_PARAMS, grads, strict=True)},
    }


def check_gated_loss(fn: Callable[[Tensor, dict, float], tuple]) -> None:
    """Check ``fn(x, params, l1_coeff) -> (latents, loss)`` for a Gated SAE, and the gradients
    of the loss with respect to every parameter.

    ``x`` is ``(batch, d_in)``; ``params`` holds ``W_enc (d_in, d_sae)``, ``b_enc``, ``r_mag``,
    ``b_mag`` (each ``(d_sae,)``), ``W_dec (d_sae, d_in)`` and ``b_dec (d_in,)``. The reference
    is :class:`saebook.toy_saes.GatedSAE`: latents ``1[pi_gate > 0] * ReLU(pi_mag)``; loss the
    squared error (summed over ``d_in``, averaged over the batch) plus ``l1_coeff`` times the
    L1 norm of ``ReLU(pi_gate)`` plus the auxiliary error of reconstructing ``x`` from
    ``ReLU(pi_gate)`` through a *frozen* decoder. Comparing gradients catches a decoder that
    is not frozen in the auxiliary term, which the loss value alone cannot show.
    """
    g = _generator(9)
    d_in, d_sae = 4, 7
    params = {
        "W_enc": torch.randn(d_in, d_sae, generator=g),
        "b_enc": torch.randn(d_sae, generator=g) * 0.3,
        "r_mag": torch.randn(d_sae, generator=g) * 0.5,
        "b_mag": torch.randn(d_sae, generator=g) * 0.3,
        "W_dec": torch.randn(d_sae, d_in, generator=g) * 0.5,
        "b_dec": torch.randn(d_in, generator=g) * 0.2,
    }
    x = torch.randn(16, d_in, generator=g).relu()
    shut = {**params, "b_enc": torch.full((d_sae,), -50.0)}
    cases: list[Case] = [
        ("random", (x, params, 0.5), {}),
        ("no L1 penalty", (x, params, 0.0), {}),
        ("a large L1 coefficient", (x, params, 5.0), {}),
        ("every gate shut", (x, shut, 1.0), {}),
        ("batch of one", (x[:1], params, 0.5), {}),
    ]

    def reader(x: Tensor, params: dict[str, Tensor], l1_coeff: float) -> dict[str, Any]:
        leaves = {n: params[n].clone().requires_grad_(True) for n in _GATED_PARAMS}
        latents, loss = fn(x, leaves, l1_coeff)
        grads = torch.autograd.grad(loss, [leaves[n] for n in _GATED_PARAMS], allow_unused=True)
        return {
            "latents": torch.as_tensor(latents).detach(),
            "loss": torch.as_tensor(loss).detach(),
            "gradients": {
                n: (gr if gr is not None else torch.zeros_like(leaves[n]))
                for n, gr in zip(_GATED_PARAMS, grads, strict=True)
            },
        }

    check_function(reader, _gated_reference, cases, atol=1e-5, rtol=1e-4)


# --- Part 0, chapter 4: privileged basis and computation in superposition -------------------


def check_relu_hidden_forward(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(W, b, x) -> ReLU(W^T ReLU(W x) + b)`` for one tied ReLU-hidden-layer model,
    against :func:`saebook.toy_computation.relu_hidden_forward`. Cases include weights with
    negative entries (where the hidden ReLU clips) and an all-negative bias."""
    g = _generator(4)
    W = torch.randn(3, 6, generator=g)
    b = torch.randn(6, generator=g) * 0.3
    x = torch.rand(8, 6, generator=g)
    cases: list[Case] = [
        ("random", (W, b, x), {}),
        ("negative weights only", (-W.abs(), b, x), {}),
        ("zero input", (W, b, torch.zeros(3, 6)), {}),
        ("negative bias", (W, -torch.full((6,), 4.0), x), {}),
        ("signed input", (W, b, torch.rand(5, 6, generator=g) * 2 - 1), {}),
    ]
    check_function(fn, toy_computation.relu_hidden_forward, cases)


def check_top_neuron_share(fn: Callable[[Tensor], Tensor]) -> None:
    """Check ``fn(W) -> (features,)``: per column ``W_i`` of ``W`` ``(hidden, features)``,
    ``max_j W_ji^2 / sum_j W_ji^2`` (0 for a zero column), against
    :func:`saebook.toy_computation.top_neuron_share`."""
    g = _generator(5)
    random = torch.randn(4, 5, generator=g)
    with_zero = random.clone()
    with_zero[:, 1] = 0
    cases: list[Case] = [
        ("random", (random,), {}),
        ("basis aligned", (torch.eye(3) * torch.tensor([2.0, -1.0, 0.5]),), {}),
        ("negative largest entry", (torch.tensor([[0.5, -3.0], [-2.0, 1.0]]),), {}),
        ("a zero column", (with_zero,), {}),
        ("one neuron", (torch.randn(1, 4, generator=g),), {}),
    ]
    check_function(fn, toy_computation.top_neuron_share, cases)


def check_abs_loss(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(output, x, importance) -> (instances,)``: the importance-weighted squared
    error of ``output`` against ``|x|``, averaged over batch and features, against
    :func:`saebook.toy_computation.abs_loss`."""
    g = _generator(6)
    x = torch.rand(16, 3, 5, generator=g) * 2 - 1
    out = torch.rand(16, 3, 5, generator=g)
    imp = 0.8 ** torch.arange(5.0)
    cases: list[Case] = [
        ("random", (out, x, imp), {}),
        ("perfect output", (x.abs(), x, imp), {}),
        ("negative inputs only", (out, -x.abs(), imp), {}),
        ("equal importance", (out, x, torch.ones(5)), {}),
        ("batch of one", (out[:1], x[:1], imp), {}),
    ]
    check_function(fn, toy_computation.abs_loss, cases)
