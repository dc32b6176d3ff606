"""Checkers for the exercises of part 5, "SAE circuits"."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from saebook.checks.core import Case, _generator, check_function

# --- Part 5, chapters 1-3: latent gradients, transcoders, attribution graphs ----------------


def reference_latent_jacobian(
    x0: Tensor, directions: Tensor, W_enc: Tensor, b_enc: Tensor, values: Tensor
) -> Tensor:
    """Jacobian of ``ReLU((x0 + values @ directions) @ W_enc + b_enc)`` w.r.t. ``values``.

    ``x0`` is ``(d,)``, ``directions`` ``(n_up, d)``, ``W_enc`` ``(d, n_down)``, ``b_enc``
    ``(n_down,)``, ``values`` ``(n_up,)``; the result is ``(n_down, n_up)`` (computed with
    :func:`torch.func.jacrev`; ReLU has slope 0 at 0).
    """

    def f(v: Tensor) -> Tensor:
        return torch.relu((x0 + v @ directions) @ W_enc + b_enc)

    return torch.func.jacrev(f)(values)


def check_latent_jacobian(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(x0, directions, W_enc, b_enc, values) -> (n_down, n_up)`` Jacobian."""
    g = _generator(11)
    d, n_up, n_down = 6, 4, 5
    x0 = torch.randn(d, generator=g)
    dirs = torch.randn(n_up, d, generator=g)
    w = torch.randn(d, n_down, generator=g)
    b = torch.randn(n_down, generator=g) * 0.5
    v = torch.rand(n_up, generator=g) + 0.5
    cases: list[Case] = [
        ("random", (x0, dirs, w, b, v), {}),
        ("all later latents active", (x0, dirs, w, torch.full((n_down,), 50.0), v), {}),
        ("no later latent active", (x0, dirs, w, torch.full((n_down,), -50.0), v), {}),
        ("one earlier latent", (x0, dirs[:1], w, b, v[:1]), {}),
        ("earlier values zero", (x0, dirs, w, b, torch.zeros(n_up)), {}),
        ("wider", (torch.randn(9, generator=g), torch.randn(3, 9, generator=g),
                   torch.randn(9, 7, generator=g), torch.zeros(7), torch.rand(3, generator=g)), {}),
    ]  # fmt: skip
    check_function(fn, reference_latent_jacobian, cases)


def reference_de_embedding(
    W_E: Tensor, W_pos: Tensor, W_enc: Tensor, b_enc: Tensor, eps: float
) -> Tensor:
    """Pre-activation of every latent of an SAE reading a LayerNorm's normalised output, for
    each token alone on the attention-free path of layer 0: ``(d_sae, d_vocab)``.

    ``x_t = W_E[t] + mean(W_pos[1:])``; ``n_t = (x_t - mean(x_t)) / sqrt(var(x_t) + eps)``
    (biased variance); result ``[i, t] = n_t . W_enc[:, i] + b_enc[i]``.
    """
    x = W_E + W_pos[1:].mean(0)
    x = x - x.mean(-1, keepdim=True)
    n = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return (n @ W_enc + b_enc).T


def check_de_embedding(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(W_E, W_pos, W_enc, b_enc, eps) -> (d_sae, d_vocab)`` de-embedding scores."""
    g = _generator(12)
    W_E = torch.randn(20, 8, generator=g)
    W_pos = torch.randn(6, 8, generator=g) * 0.3
    W_enc = torch.randn(8, 5, generator=g)
    b_enc = torch.randn(5, generator=g) * 0.1
    big_first = torch.cat([W_pos[:1] * 100, W_pos[1:]])
    cases: list[Case] = [
        ("random", (W_E, W_pos, W_enc, b_enc, 1e-5), {}),
        ("position 0 is ignored", (W_E, big_first, W_enc, b_enc, 1e-5), {}),
        ("two positions", (W_E, W_pos[:2], W_enc, b_enc, 1e-5), {}),
        ("one latent", (W_E, W_pos, W_enc[:, :1], b_enc[:1], 1e-5), {}),
        ("large eps", (W_E, W_pos, W_enc, b_enc, 10.0), {}),
        ("constant embeddings", (torch.ones(4, 8), torch.zeros(3, 8), W_enc, b_enc, 1e-5), {}),
    ]
    check_function(fn, reference_de_embedding, cases, atol=1e-4, rtol=1e-4)


def check_influence_matrix(fn: Callable[[Tensor], Tensor]) -> None:
    """Check ``fn(adjacency) -> B = A_n (I - A_n)^{-1}`` with ``A_n`` the row-normalised
    ``|adjacency|`` (zero rows stay zero); ``adjacency[t, s]`` is the edge ``s -> t``."""
    from saebook.attribution_graphs import influence_matrix

    g = _generator(13)
    chain = torch.tensor([[0.0, 0, 0], [2.0, 0, 0], [0, -3.0, 0]])
    diamond = torch.zeros(4, 4)
    diamond[1, 0], diamond[2, 0], diamond[3, 1], diamond[3, 2] = 1.0, 2.0, 1.0, -3.0
    dag = torch.randn(7, 7, generator=g).tril(-1)
    cases: list[Case] = [
        ("chain 0 -> 1 -> 2", (chain,), {}),
        ("diamond with a negative edge", (diamond,), {}),
        ("random acyclic graph", (dag,), {}),
        ("no edges", (torch.zeros(3, 3),), {}),
        ("one node", (torch.zeros(1, 1),), {}),
        ("a node listed after its target", (chain.flip(0).flip(1),), {}),
    ]
    check_function(fn, influence_matrix, cases, atol=1e-5, rtol=1e-4)
