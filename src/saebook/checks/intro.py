"""Checkers for the exercises of part 2, "Intro to SAE interpretability"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from saebook.checks.core import Case, _generator, check_function

# --- Part 1, chapter 3: latent dashboards ---------------------------------------------------


def check_top_logits(fn: Callable[..., tuple[Tensor, Tensor]], model: Any, sae: Any) -> None:
    """Check ``fn(model, sae, latent, k) -> (values, token_ids)`` for a residual-stream SAE.

    The reference is :func:`saebook.dashboards.top_logits`: the ``k`` largest entries of the
    direct logit effect of ``W_dec[latent]`` through the final LayerNorm's centring and
    weight and ``W_U`` (:func:`saebook.directions.logit_effects`), largest first, and their
    token ids. Cases:
    the first, a middle and the last latent, the latent with the largest decoder norm, and
    ``k`` from 1 to 20.
    """
    from saebook import dashboards

    def reference(model: Any, sae: Any, latent: int, k: int) -> tuple[Tensor, Tensor]:
        return dashboards.top_logits(model, sae, latent, k)

    d_sae = sae.cfg.d_sae
    k_max = min(20, model.cfg.d_vocab)
    strongest = int(sae.W_dec.norm(dim=-1).argmax())
    cases: list[Case] = [
        ("latent 0, k=5", (model, sae, 0, 5), {}),
        ("a middle latent, k=1", (model, sae, d_sae // 2, 1), {}),
        (f"a middle latent, k={k_max}", (model, sae, d_sae // 2, k_max), {}),
        (f"the last latent ({d_sae - 1}), k=5", (model, sae, d_sae - 1, 5), {}),
        (f"the largest-norm latent ({strongest}), k=10", (model, sae, strongest, 10), {}),
    ]
    check_function(fn, reference, cases, atol=1e-4, rtol=1e-4)


# --- Part 1, chapters 5-7: attention SAEs, steering, architectures ---------------------------


def reference_head_norms(W_dec: Tensor, n_heads: int) -> Tensor:
    """``(d_sae, n_heads * d_head) -> (d_sae, n_heads)``: the L2 norm of each head's block."""
    return W_dec.reshape(W_dec.shape[0], n_heads, -1).norm(dim=-1)


def check_head_norms(fn: Callable[[Tensor, int], Tensor]) -> None:
    """Check ``fn(W_dec, n_heads)``: per-head decoder norms of a ``hook_z`` SAE.

    ``W_dec`` is ``(d_sae, n_heads * d_head)`` flattened head by head; the result is
    ``(d_sae, n_heads)``. Cases include one head, ``d_head = 1``, a zero latent and a latent
    living in a single head (which a transposed reshape gets wrong).
    """
    g = _generator(6)
    W = torch.randn(10, 4 * 3, generator=g)
    one_head = torch.zeros(5, 4 * 3)
    one_head[:, 3:6] = torch.randn(5, 3, generator=g)  # only head 1
    with_zero = W.clone()
    with_zero[2] = 0
    cases: list[Case] = [
        ("random, 4 heads of 3", (W, 4), {}),
        ("latents in head 1 only", (one_head, 4), {}),
        ("one head", (W, 1), {}),
        ("d_head = 1", (W, 12), {}),
        ("a zero latent", (with_zero, 4), {}),
        ("one latent", (W[:1], 2), {}),
    ]
    check_function(fn, reference_head_norms, cases)


def reference_steering_hook(direction: Tensor, coefficient: float) -> Callable[..., Tensor]:
    """The reference steering hook: ``activation + coefficient * direction``."""
    from saebook.steering import steering_hook

    return steering_hook(direction, coefficient)


def _steering_probe(make_hook: Callable[..., Any]) -> Callable[..., Tensor]:
    def run(direction: Tensor, coefficient: float, activation: Tensor) -> Tensor:
        return make_hook(direction, coefficient)(activation, None)

    return run


def check_steering_hook(fn: Callable[[Tensor, float], Callable[..., Tensor]]) -> None:
    """Check ``fn(direction, coefficient) -> hook`` with ``hook(activation, hook)`` steering.

    The hook must return ``activation + coefficient * direction`` at every batch row and
    position. Cases: coefficient 0 (no change), negative and large coefficients, one
    position, a zero direction, and a non-unit direction.
    """
    g = _generator(7)
    d = torch.nn.functional.normalize(torch.randn(8, generator=g), dim=0)
    acts = torch.randn(3, 5, 8, generator=g)
    cases: list[Case] = [
        ("random, coefficient 2", (d, 2.0, acts), {}),
        ("coefficient 0", (d, 0.0, acts), {}),
        ("negative coefficient", (d, -3.5, acts), {}),
        ("large coefficient", (d, 100.0, acts), {}),
        ("one position", (d, 1.0, acts[:, :1]), {}),
        ("batch of one", (d, 1.5, acts[:1]), {}),
        ("zero direction", (torch.zeros(8), 5.0, acts), {}),
        ("non-unit direction", (d * 3.0, 0.5, acts), {}),
    ]
    check_function(_steering_probe(fn), _steering_probe(reference_steering_hook), cases)


def reference_jumprelu_encode(
    x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor, threshold: Tensor, apply_b_dec: bool
) -> Tensor:
    """SAELens' ``JumpReLUSAE.encode`` on ``x`` for the given weights (the reference)."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    sae = JumpReLUSAE(
        JumpReLUSAEConfig(
            d_in=W_enc.shape[0], d_sae=W_enc.shape[1], apply_b_dec_to_input=apply_b_dec
        )
    )
    sae.load_state_dict(
        {
            "W_enc": W_enc,
            "b_enc": b_enc,
            "W_dec": W_enc.T.contiguous(),
            "b_dec": b_dec,
            "threshold": threshold,
        }
    )
    with torch.no_grad():
        return sae.encode(x)


def check_jumprelu_encode(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(x, W_enc, b_enc, b_dec, threshold, apply_b_dec) -> (batch, d_sae)``.

    The reference is SAELens' own ``JumpReLUSAE.encode``. Cases: both settings of
    ``apply_b_dec`` (subtract ``b_dec`` from ``x`` first or not), thresholds of zero, negative
    thresholds (ReLU still applies), thresholds so high nothing fires, and pre-activations
    equal to the threshold (which must not fire: the comparison is strict).
    """
    g = _generator(8)
    d_in, d_sae = 5, 12
    W = torch.randn(d_in, d_sae, generator=g)
    b_enc = torch.randn(d_sae, generator=g) * 0.2
    b_dec = torch.randn(d_in, generator=g) * 0.5
    theta = torch.rand(d_sae, generator=g)
    x = torch.randn(16, d_in, generator=g)
    at_threshold = torch.zeros(1, d_in)  # pre = b_enc exactly when apply_b_dec is False
    cases: list[Case] = [
        ("random, b_dec subtracted", (x, W, b_enc, b_dec, theta, True), {}),
        ("random, b_dec not subtracted", (x, W, b_enc, b_dec, theta, False), {}),
        ("zero thresholds (plain ReLU)", (x, W, b_enc, b_dec, torch.zeros(d_sae), True), {}),
        ("negative thresholds", (x, W, b_enc, b_dec, -theta, False), {}),
        ("thresholds too high to fire", (x, W, b_enc, b_dec, theta + 100.0, True), {}),
        (
            "pre-activation equal to the threshold",
            (at_threshold, W, b_enc, b_dec, b_enc, False),
            {},
        ),
        ("batch of one", (x[:1], W, b_enc, b_dec, theta, True), {}),
    ]
    check_function(fn, reference_jumprelu_encode, cases)
