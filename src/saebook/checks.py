"""Checkers for the book's exercises.

An exercise asks the reader to write a function; its checker runs the reader's function and
the reference implementation on the same named cases (ordinary inputs and edge cases) and
compares the outputs. On the first case where they differ it raises ``AssertionError`` naming
the case, the largest absolute difference and both shapes; when every case matches it prints
one line, ``✓ all N cases match``.

:func:`check_function` is the general tool. Each exercise of the book has a named checker
(``check_<exercise>(fn)``) that builds its own cases and calls it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from saebook import toy_models, toy_saes

__all__ = [
    "Case",
    "check_function",
    "check_toy_forward",
    "check_feature_dimensionality",
    "check_sae_loss",
    "check_max_cosine_similarity",
    "check_topk_activation",
    "check_jumprelu_function",
    "check_top_logits",
    "check_max_cosine_matches",
    "check_within_label_cosine",
    "check_absorption_rate",
    "check_variance_explained",
    "reference_toy_forward",
    "reference_sae_loss",
    "reference_max_cosine_similarity",
    "check_hypergeometric_p",
    "check_detection_scores",
    "check_set_probability",
    "check_head_norms",
    "reference_head_norms",
    "check_steering_hook",
    "reference_steering_hook",
    "check_jumprelu_encode",
    "reference_jumprelu_encode",
    "reference_hypergeometric_p",
    "reference_detection_scores",
    "reference_latent_jacobian",
    "check_latent_jacobian",
    "reference_de_embedding",
    "check_de_embedding",
    "check_influence_matrix",
    "check_diagnosis",
    "reference_l2_ratio",
    "check_l2_ratio",
    "check_top_k_by_mean_difference",
    "check_standard_sae_loss",
]

#: A named case: ``(name, args, kwargs)`` passed as ``fn(*args, **kwargs)``.
Case = tuple[str, tuple, dict]


def _clone(value: Any) -> Any:
    """Deep-copy tensors inside ``value``, so neither function can change the other's inputs."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_clone(v) for v in value)
    if isinstance(value, list):
        return [_clone(v) for v in value]
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def _shape(value: Any) -> str:
    if isinstance(value, Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (int, float, bool)):
        return "scalar"
    return type(value).__name__


def _mismatch(got: Any, expected: Any, where: str, atol: float, rtol: float) -> str | None:
    """A description of the first difference between ``got`` and ``expected``, or None."""
    label = f"output{where}"
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping) or set(got) != set(expected):
            keys = sorted(map(str, got)) if isinstance(got, Mapping) else type(got).__name__
            return f"{label}: expected a dict with keys {sorted(map(str, expected))}, got {keys}"
        for key in expected:
            found = _mismatch(got[key], expected[key], f"{where}[{key!r}]", atol, rtol)
            if found:
                return found
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            length = len(got) if isinstance(got, (tuple, list)) else type(got).__name__
            return f"{label}: expected a sequence of {len(expected)} values, got {length}"
        for index, (g, e) in enumerate(zip(got, expected, strict=True)):
            found = _mismatch(g, e, f"{where}[{index}]", atol, rtol)
            if found:
                return found
        return None
    if expected is None:
        return None if got is None else f"{label}: expected None, got {type(got).__name__}"
    if not isinstance(expected, (Tensor, int, float, bool)):
        return None if got == expected else f"{label}: expected {expected!r}, got {got!r}"
    if not isinstance(got, (Tensor, int, float, bool)):
        return f"{label}: expected a tensor or number, got {type(got).__name__}"
    exp_t = torch.as_tensor(expected).detach().cpu()
    got_t = torch.as_tensor(got).detach().cpu()
    shapes = f"shapes: yours {_shape(got)}, expected {_shape(expected)}"
    if exp_t.shape != got_t.shape:
        if exp_t.numel() == 1 and got_t.numel() == 1:  # 0-d tensor vs float, (1,) vs ()
            exp_t, got_t = exp_t.reshape(()), got_t.reshape(())
        else:
            return f"{label} has the wrong shape; {shapes}"
    if exp_t.dtype == torch.bool or got_t.dtype == torch.bool:
        if exp_t.dtype != got_t.dtype:
            return f"{label}: expected dtype {exp_t.dtype}, got {got_t.dtype}; {shapes}"
        wrong = int((exp_t != got_t).sum())
        return None if wrong == 0 else f"{label}: {wrong} entries differ; {shapes}"
    exp_f, got_f = exp_t.double(), got_t.double()
    both_nan = exp_f.isnan() & got_f.isnan()
    diff = (got_f - exp_f).abs().masked_fill(both_nan, 0.0)
    diff = diff.masked_fill(exp_f.isinf() & (got_f == exp_f), 0.0)
    bad = diff.isnan() | (diff > atol + rtol * exp_f.abs().nan_to_num(0.0, 0.0, 0.0))
    if not bad.any():
        return None
    worst = math.nan if diff.isnan().any() else float(diff.max())
    if bad.ndim:
        first = tuple(int(i) for i in bad.nonzero()[0])
        values = f"first at index {first}: yours {got_f[first].item():.6g}, "
    else:
        first = ()
        values = f"yours {got_f.item():.6g}, "
    values += f"expected {exp_f[first].item():.6g}"
    return (
        f"{label} differs: max abs difference {worst:.3g} ({values}; atol {atol:g}, "
        f"rtol {rtol:g}); {shapes}"
    )


def check_function(
    reader_fn: Callable[..., Any],
    reference_fn: Callable[..., Any],
    cases: Sequence[Case],
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """Run ``reader_fn`` and ``reference_fn`` on every case and compare their outputs.

    Each case is ``(name, args, kwargs)``; both functions get their own copy of the inputs.
    Outputs may be tensors, numbers, ``None``, or tuples, lists and dicts of them; tensors
    must have the same shape (a number and a one-element tensor compare equal) and agree
    within ``atol + rtol * |expected|`` elementwise (NaN matches NaN; bool tensors must be
    equal).

    Raises:
        AssertionError: naming the first case on which the outputs differ (or on which
            ``reader_fn`` raised), with the largest absolute difference and both shapes.
        ValueError: if ``cases`` is empty or a case is not ``(str, tuple, dict)``.

    On success prints ``✓ all N cases match``.
    """
    if not cases:
        raise ValueError("cases must hold at least one (name, args, kwargs) case, got none")
    for case in cases:
        if (
            not isinstance(case, tuple)
            or len(case) != 3
            or not isinstance(case[0], str)
            or not isinstance(case[1], tuple)
            or not isinstance(case[2], dict)
        ):
            raise ValueError(
                f"each case must be (name: str, args: tuple, kwargs: dict), got {case!r}"
            )
    for name, args, kwargs in cases:
        expected = reference_fn(*_clone(args), **_clone(kwargs))
        try:
            got = reader_fn(*_clone(args), **_clone(kwargs))
        except Exception as exc:
            raise AssertionError(
                f"case {name!r}: your function raised {type(exc).__name__}: {exc}"
            ) from exc
        problem = _mismatch(got, expected, "", atol, rtol)
        if problem:
            raise AssertionError(f"case {name!r}: {problem}")
    print(f"✓ all {len(cases)} cases match")


# --- Part 0, chapter 1: superposition -------------------------------------------------------


def reference_toy_forward(W: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """``ReLU(x W^T W + b)`` for one toy model; W is (hidden, features), x (batch, features)."""
    return torch.relu(x @ W.T @ W + b)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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


# --- Part 1, chapter 3: latent dashboards ---------------------------------------------------


def check_top_logits(fn: Callable[..., tuple[Tensor, Tensor]], model: Any, sae: Any) -> None:
    """Check ``fn(model, sae, latent, k) -> (values, token_ids)`` for a residual-stream SAE.

    The reference is :func:`saebook.dashboards.top_logits`: the ``k`` largest entries of the
    direct logit effect ``W_dec[latent] @ W_U``, largest first, and their token ids. Cases:
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


# --- Part 2, chapters 5-7: logit lens, autointerp, patch scoping ----------------------------


def reference_hypergeometric_p(logits: Tensor, in_set: Tensor, k: int) -> Tensor:
    """One-sided hypergeometric p-value of the set tokens among each row's ``k`` top logits."""
    from saebook.logit_lens import hypergeometric_enrichment

    return hypergeometric_enrichment(logits, in_set, k)[1]


def check_hypergeometric_p(fn: Callable[[Tensor, Tensor, int], Tensor]) -> None:
    """Check ``fn(logits, in_set, k) -> (n,)`` p-values ``P(X >= hits)`` (hypergeometric).

    ``logits`` is ``(n, d_vocab)``, ``in_set`` a ``(d_vocab,)`` bool mask; ``hits`` counts the
    set tokens among each row's ``k`` largest logits. Cases include an empty set (p = 1), a
    set that is the whole vocabulary, ``k = 1`` and ``k = d_vocab``.
    """
    g = _generator(6)
    logits = torch.randn(6, 50, generator=g)
    in_set = torch.rand(50, generator=g) < 0.2
    planted = logits.clone()
    planted[:3, in_set] += 3.0  # three rows strongly enriched
    cases: list[Case] = [
        ("random, k=10", (logits, in_set, 10), {}),
        ("three enriched rows, k=10", (planted, in_set, 10), {}),
        ("k=1", (planted, in_set, 1), {}),
        ("k = d_vocab", (logits, in_set, 50), {}),
        ("empty set", (logits, torch.zeros(50, dtype=torch.bool), 5), {}),
        ("whole vocabulary", (logits, torch.ones(50, dtype=torch.bool), 5), {}),
        ("one row", (planted[:1], in_set, 7), {}),
    ]
    check_function(fn, reference_hypergeometric_p, cases, atol=1e-9, rtol=1e-6)


def reference_detection_scores(predicted: list[bool], truth: list[bool]) -> dict[str, float]:
    """Balanced accuracy, precision and recall of boolean predictions (NaN where undefined)."""
    from saebook.autointerp import binary_scores

    out = binary_scores(predicted, truth)
    return {k: out[k] for k in ("balanced_accuracy", "precision", "recall")}


def check_detection_scores(fn: Callable[[list[bool], list[bool]], dict[str, float]]) -> None:
    """Check ``fn(predicted, truth) -> {"balanced_accuracy", "precision", "recall"}``.

    Balanced accuracy is the mean of recall and specificity (of the defined ones when a class
    is missing); a ratio with a zero denominator is NaN. Cases include perfect, inverted and
    all-negative predictions and truths of a single class.
    """
    g = _generator(7)
    truth = (torch.rand(30, generator=g) < 0.5).tolist()
    noisy = [t if torch.rand(1, generator=g).item() < 0.8 else not t for t in truth]
    cases: list[Case] = [
        ("noisy", (noisy, truth), {}),
        ("perfect", (truth, truth), {}),
        ("inverted", ([not t for t in truth], truth), {}),
        ("predicts nothing", ([False] * 30, truth), {}),
        ("predicts everything", ([True] * 30, truth), {}),
        ("only positive contexts", ([True, False, True], [True, True, True]), {}),
        ("only negative contexts", ([True, False, False], [False, False, False]), {}),
    ]
    check_function(fn, reference_detection_scores, cases)


def check_set_probability(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(log_probs, in_set) -> (*batch,)``: the probability mass on the set's tokens.

    ``log_probs`` is ``(*batch, d_vocab)`` log-probabilities, ``in_set`` a ``(d_vocab,)`` bool
    mask. Cases include an empty set (0), the whole vocabulary (1), one token and extra batch
    axes.
    """
    from saebook.patch_scoping import set_probability

    g = _generator(8)
    log_probs = torch.randn(4, 30, generator=g).log_softmax(-1)
    in_set = torch.rand(30, generator=g) < 0.3
    one = torch.zeros(30, dtype=torch.bool)
    one[7] = True
    cases: list[Case] = [
        ("random set", (log_probs, in_set), {}),
        ("empty set", (log_probs, torch.zeros(30, dtype=torch.bool)), {}),
        ("whole vocabulary", (log_probs, torch.ones(30, dtype=torch.bool)), {}),
        ("one token", (log_probs, one), {}),
        ("one distribution", (log_probs[0], in_set), {}),
        ("two batch axes", (torch.randn(2, 3, 30, generator=g).log_softmax(-1), in_set), {}),
    ]
    check_function(fn, set_probability, cases)


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


__all__ += [
    "check_latent_jacobian",
    "check_de_embedding",
    "check_influence_matrix",
    "reference_latent_jacobian",
    "reference_de_embedding",
]
# --- Part 3 (deeper), chapters 1-4: splitting, geometry, absorption, meta-SAEs ---------------


def check_max_cosine_matches(fn: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]) -> None:
    """Check ``fn(narrow_decoder, wide_decoder) -> (values, indices)`` per wide row.

    The reference is :func:`saebook.splitting.max_cosine_matches`: for every row of
    ``wide_decoder`` the largest cosine with a row of ``narrow_decoder`` and that row's index.
    Cases include unnormalised rows, exact copies, a zero wide row (cosine 0, index 0) and a
    single narrow latent.
    """
    from saebook import splitting

    g = _generator(30)
    narrow = torch.randn(6, 5, generator=g)
    wide = torch.randn(11, 5, generator=g)
    children = torch.cat([narrow[[2]] + 0.1 * torch.randn(3, 5, generator=g), narrow[[4]]])
    with_zero = wide.clone()
    with_zero[3] = 0
    cases: list[Case] = [
        ("random", (narrow, wide), {}),
        ("unnormalised rows", (narrow * 4.0, wide * 0.2), {}),
        ("children of narrow latents 2 and 4", (narrow, children), {}),
        ("wide is a copy of narrow", (narrow, narrow.clone()), {}),
        ("a zero wide row", (narrow, with_zero), {}),
        ("one narrow latent", (narrow[:1], wide), {}),
    ]
    check_function(lambda a, b: tuple(fn(a, b)), splitting.max_cosine_matches, cases)


def check_within_label_cosine(fn: Callable[[Tensor, Tensor], float]) -> None:
    """Check ``fn(directions, codes) -> float``: mean cosine of same-label pairs.

    The reference is :func:`saebook.geometry.within_label_cosine`: pairs ``i != j`` with
    ``codes[i] == codes[j] >= 0``; negative codes are unlabelled; NaN when there is no pair.
    """
    from saebook import geometry

    g = _generator(31)
    dirs = torch.randn(10, 4, generator=g)
    codes = torch.tensor([0, 1, 0, 2, 1, 0, -1, 2, -1, 1])
    cases: list[Case] = [
        ("random", (dirs, codes), {}),
        ("unnormalised rows", (dirs * torch.arange(1, 11)[:, None], codes), {}),
        ("one label for all", (dirs, torch.zeros(10, dtype=torch.long)), {}),
        ("unlabelled rows are ignored", (dirs, torch.tensor([0, 0] + [-1] * 6 + [1, 1])), {}),
        ("no pair shares a label (NaN)", (dirs[:3], torch.tensor([0, 1, 2])), {}),
        (
            "identical pair",
            (torch.stack([dirs[0], 3 * dirs[0], dirs[1]]), torch.tensor([5, 5, 6])),
            {},
        ),
    ]
    check_function(fn, geometry.within_label_cosine, cases)


def check_absorption_rate(fn: Callable[[Tensor, Tensor, Tensor], float]) -> None:
    """Check ``fn(main_fires, label, absorber_fires) -> float``.

    The reference is :func:`saebook.absorption.absorption_rate`: the share of the ``label``
    positions where the main latent is silent and at least one absorber fires (NaN when the
    label never holds).
    """
    from saebook import absorption

    g = _generator(32)
    label = torch.rand(40, generator=g) < 0.5
    main = torch.rand(40, generator=g) < 0.5
    absorbers = torch.rand(40, 3, generator=g) < 0.3
    cases: list[Case] = [
        ("random", (main, label, absorbers), {}),
        ("main latent always fires", (torch.ones(40, dtype=torch.bool), label, absorbers), {}),
        ("main latent never fires", (torch.zeros(40, dtype=torch.bool), label, absorbers), {}),
        ("absorbers fire only off the label", (main, label, absorbers & ~label[:, None]), {}),
        ("no absorber candidates (k = 0)", (main, label, absorbers[:, :0]), {}),
        ("label never holds (NaN)", (main, torch.zeros(40, dtype=torch.bool), absorbers), {}),
    ]
    check_function(fn, absorption.absorption_rate, cases)


def check_variance_explained(fn: Callable[[Tensor, Tensor], float]) -> None:
    """Check ``fn(x, x_hat) -> float``: ``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``.

    The reference is :func:`saebook.meta_saes.variance_explained` (NaN when all rows of ``x``
    are equal).
    """
    from saebook import meta_saes

    g = _generator(33)
    x = torch.randn(12, 5, generator=g)
    noisy = x + 0.3 * torch.randn(12, 5, generator=g)
    cases: list[Case] = [
        ("noisy reconstruction", (x, noisy), {}),
        ("perfect reconstruction", (x, x.clone()), {}),
        ("predicting the mean row", (x, x.mean(0, keepdim=True).expand(12, 5).clone()), {}),
        ("predicting zeros (can go below 0)", (x + 3.0, torch.zeros(12, 5)), {}),
        ("a single feature column", (x[:, :1], noisy[:, :1]), {}),
        ("all rows equal (NaN)", (torch.ones(4, 3), torch.zeros(4, 3)), {}),
    ]
    check_function(fn, meta_saes.variance_explained, cases)


# --- Part 4: training and evaluating SAEs (chapters 2 and 4) --------------------------------

# The planted-fault runs of Part 4 chapter 2, shown to the reader under these letters.
DIAGNOSIS_RUNS: dict[str, str] = {
    "A": "learning rate too high",
    "B": "healthy",
    "C": "bad input normalisation",
    "D": "sparsity coefficient too large",
    "E": "no warm-up",
    "F": "sparsity coefficient too small",
}


def check_diagnosis(answers: Mapping[str, str]) -> None:
    """Check a reader's diagnosis: ``answers`` maps each run letter to a fault name.

    Fault names are those of :data:`saebook.training.FAULTS` (case-insensitive). Raises an
    AssertionError naming the first wrongly diagnosed run, or the missing or unknown letters.
    """
    from saebook.training import FAULTS

    got = {str(k).upper(): str(v).strip().lower() for k, v in answers.items()}
    missing = sorted(set(DIAGNOSIS_RUNS) - set(got))
    extra = sorted(set(got) - set(DIAGNOSIS_RUNS))
    if missing or extra:
        raise AssertionError(
            f"answers must name runs {sorted(DIAGNOSIS_RUNS)}; missing {missing}, unknown {extra}"
        )
    names = {f.lower() for f in FAULTS}
    for letter in sorted(DIAGNOSIS_RUNS):
        if got[letter] not in names:
            raise AssertionError(f"run {letter}: {got[letter]!r} is not one of {list(FAULTS)}")
        if got[letter] != DIAGNOSIS_RUNS[letter].lower():
            raise AssertionError(
                f"run {letter}: {got[letter]!r} is not right; look at its curves again"
            )
    print(f"✓ all {len(DIAGNOSIS_RUNS)} runs diagnosed correctly")


def reference_l2_ratio(x: Tensor, x_hat: Tensor) -> Tensor:
    """Mean over rows of ``||x_hat|| / ||x||``, dividing by 1 where ``||x|| < 1e-4``."""
    norm_in = x.norm(dim=-1)
    norm_in = torch.where(norm_in < 1e-4, torch.ones_like(norm_in), norm_in)
    return (x_hat.norm(dim=-1) / norm_in).mean()


def check_l2_ratio(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(x, x_hat) -> scalar`` against :func:`reference_l2_ratio`."""
    g = _generator(41)
    x = torch.randn(32, 8, generator=g)
    cases: list[Case] = [
        ("random", (x, x + 0.1 * torch.randn(32, 8, generator=g)), {}),
        ("perfect reconstruction", (x, x.clone()), {}),
        ("shrunk by half", (x, 0.5 * x), {}),
        ("zero reconstruction", (x, torch.zeros_like(x)), {}),
        ("a zero input row", (torch.cat([x[:3], torch.zeros(1, 8)]), x[:4]), {}),
        ("one row", (x[:1], 2 * x[:1]), {}),
    ]
    check_function(fn, reference_l2_ratio, cases)


def check_top_k_by_mean_difference(fn: Callable[[Tensor, Tensor, int], Tensor]) -> None:
    """Check ``fn(X, y, k) -> indices`` against :func:`saebook.probing.top_k_by_mean_difference`.

    Indices are compared as sets, sorted (the order of the chosen features does not matter).
    """
    from saebook.probing import top_k_by_mean_difference

    def sorted_reference(X: Tensor, y: Tensor, k: int) -> Tensor:
        return top_k_by_mean_difference(X, y, k).sort().values

    def sorted_reader(X: Tensor, y: Tensor, k: int) -> Tensor:
        return torch.as_tensor(fn(X, y, k)).long().sort().values

    g = _generator(43)
    X = torch.randn(200, 12, generator=g)
    y = torch.rand(200, generator=g) < 0.3
    X[y, 3] += 2.0  # a feature that separates the classes
    X[y, 7] -= 3.0  # a negative difference counts too
    cases: list[Case] = [
        ("k=1", (X, y, 1), {}),
        ("k=2 (a negative gap)", (X, y, 2), {}),
        ("k=5", (X, y, 5), {}),
        ("all features", (X, y, 12), {}),
        ("non-negative latents", (X.relu(), y, 3), {}),
    ]
    check_function(sorted_reader, sorted_reference, cases)


# --- Part 4, chapter 1: training with SAELens -----------------------------------------------


def _saelens_standard_step(seed: int, l1: float, batch: int = 16) -> dict[str, Tensor]:
    """One SAELens ``StandardTrainingSAE`` forward pass on random weights and inputs."""
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    g = _generator(seed)
    torch.manual_seed(seed)
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=6, d_sae=12, l1_coefficient=l1))
    with torch.no_grad():  # decoder rows of uneven norms, so the norm weighting matters
        sae.W_dec.mul_(torch.rand(12, 1, generator=g) * 3 + 0.1)
        sae.b_enc.add_(torch.randn(12, generator=g) * 0.1)
    x = torch.randn(batch, 6, generator=g)
    out = sae.training_forward_pass(
        TrainStepInput(
            sae_in=x,
            coefficients={"l1": l1},
            dead_neuron_mask=None,
            n_training_steps=0,
            is_logging_step=False,
        )
    )
    return {
        "x": x,
        "feature_acts": out.feature_acts.detach(),
        "x_hat": out.sae_out.detach(),
        "W_dec": sae.W_dec.detach().clone(),
        "loss": out.loss.detach(),
    }


def check_standard_sae_loss(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(x, feature_acts, x_hat, W_dec, l1_coefficient) -> scalar`` against SAELens.

    The reference is the ``loss`` SAELens' own ``StandardTrainingSAE.training_forward_pass``
    returns for random weights and inputs (several seeds, a zero coefficient, one input).
    """
    cases: list[Case] = []
    expected: dict[str, Tensor] = {}
    for name, seed, l1, batch in [
        ("seed 0, l1=1", 0, 1.0, 16),
        ("seed 1, l1=5", 1, 5.0, 16),
        ("no penalty (l1=0)", 2, 0.0, 16),
        ("one input", 3, 2.0, 1),
    ]:
        step = _saelens_standard_step(seed, l1, batch)
        expected[name] = step["loss"]
        args = (step["x"], step["feature_acts"], step["x_hat"], step["W_dec"], l1)
        cases.append((name, args, {"_case": name}))

    def reference(*args: Any, _case: str) -> Tensor:
        return expected[_case]

    def reader(*args: Any, _case: str) -> Tensor:
        return fn(*args)

    check_function(reader, reference, cases, atol=1e-4, rtol=1e-4)
