"""Checkers of part 1 (toy models) reject stubs and plausible mistakes, and accept the book's
solutions (see tests/checker_harness.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from checker_harness import assert_stub_rejected, assert_wrong_rejected, part_checkers, stub
from exercise_cells import load_solution

from saebook import checks, toy_saes

PART = "toy_models"
CHAPTER_1 = "book/toy_models/01_superposition"
CHAPTER_2 = "book/toy_models/02_saes_from_scratch"
CHAPTER_3 = "book/toy_models/03_sae_variants"
CHAPTER_4 = "book/toy_models/04_privileged_basis"


# --- wrong implementations -------------------------------------------------------------------


def forward_without_relu(W, b, x):
    return x @ W.T @ W + b


def forward_relu_before_bias(W, b, x):
    return torch.relu(x @ W.T @ W) + b


def dimensionality_without_zero_guard(W):
    norms = W.norm(dim=0)
    overlap = ((W / norms).T @ W) ** 2
    return norms**2 / overlap.sum(dim=1)


def dimensionality_summing_the_wrong_axis(W):
    norms = W.norm(dim=0)
    overlap = ((W / norms.clamp_min(1e-8)).T @ W) ** 2
    return norms**2 / overlap.sum(dim=0).clamp_min(1e-8)


def loss_forgetting_the_decoder_bias_in_the_encoder(x, W_enc, b_enc, W_dec, b_dec, l1_coeff):
    latents = torch.relu(x @ W_enc + b_enc)
    recon = latents @ W_dec + b_dec
    return ((x - recon).pow(2).sum(-1) + l1_coeff * latents.sum(-1)).mean()


def loss_summed_over_the_batch(x, W_enc, b_enc, W_dec, b_dec, l1_coeff):
    latents = torch.relu((x - b_dec) @ W_enc + b_enc)
    recon = latents @ W_dec + b_dec
    return ((x - recon).pow(2).sum(-1) + l1_coeff * latents.sum(-1)).sum()


def loss_mean_squared_error(x, W_enc, b_enc, W_dec, b_dec, l1_coeff):
    latents = torch.relu((x - b_dec) @ W_enc + b_enc)
    recon = latents @ W_dec + b_dec
    return (x - recon).pow(2).mean() + l1_coeff * latents.sum(-1).mean()


def cosine_without_normalising_the_decoder(decoder, features):
    feat = torch.nn.functional.normalize(features, dim=-1)
    return (feat @ decoder.T).max(dim=-1).values


def cosine_max_over_features(decoder, features):
    dec = torch.nn.functional.normalize(decoder, dim=-1)
    feat = torch.nn.functional.normalize(features, dim=-1)
    return (feat @ dec.T).max(dim=0).values


def topk_without_relu(z, k):
    values, indices = z.topk(k, dim=-1)
    return torch.zeros_like(z).scatter(-1, indices, values)


def topk_smallest(z, k):
    values, indices = z.topk(k, dim=-1, largest=False)
    return torch.zeros_like(z).scatter(-1, indices, values.clamp_min(0))


def topk_off_by_one(z, k):
    return toy_saes.topk_activation(z, max(k - 1, 1))


class JumpReLUStraightThrough(torch.autograd.Function):
    """Passes the gradient straight through to theta with the wrong sign and no kernel."""

    @staticmethod
    def forward(ctx, z, theta, bandwidth):
        ctx.save_for_backward(z, theta)
        return z * (z > theta).float()

    @staticmethod
    def backward(ctx, grad_output):
        z, theta = ctx.saved_tensors
        grad_z = grad_output * (z > theta).float()
        return grad_z, grad_output.sum_to_size(theta.shape), None


class JumpReLUWholeWindow(torch.autograd.Function):
    """Uses a window of width 2 * bandwidth (|z - theta| < bandwidth) instead of bandwidth."""

    @staticmethod
    def forward(ctx, z, theta, bandwidth):
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return z * (z > theta).float()

    @staticmethod
    def backward(ctx, grad_output):
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        window = ((z - theta).abs() < eps).float()
        grad_theta = grad_output * (-theta / eps) * window
        return grad_output * (z > theta).float(), grad_theta.sum_to_size(theta.shape), None


class JumpReLUStub(torch.autograd.Function):
    """The exercise notebook's stub of the class exercise."""

    @staticmethod
    def forward(ctx, z, theta, bandwidth):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad_output):
        raise NotImplementedError


def weighted_mse_summed_over_features(output, target, importance):
    return (importance * (output - target) ** 2).sum(-1).mean(0)


def weighted_mse_unweighted(output, target, importance):
    return ((output - target) ** 2).mean(dim=(0, 2))


def dead_latents_strict(last_fired, step, window):
    return (step - last_fired) > window


def dead_latents_never_fired_only(last_fired, step, window):
    return last_fired < 0


def rectangle_closed(u):
    return ((u >= -0.5) & (u <= 0.5)).to(u.dtype)


def rectangle_as_bool(u):
    return (u > -0.5) & (u < 0.5)


def rectangle_in_float32(u):
    return ((u > -0.5) & (u < 0.5)).float()


def _gated(x, params, l1_coeff, freeze=True, l1_on_magnitude=False, exp=True, gate_relu=False):
    centred = x - params["b_dec"]
    pi_gate = centred @ params["W_enc"] + params["b_enc"]
    scale = params["r_mag"].exp() if exp else params["r_mag"]
    pi_mag = centred @ (params["W_enc"] * scale) + params["b_mag"]
    gate = pi_gate.relu() if gate_relu else (pi_gate > 0).float()
    latents = gate * pi_mag.relu()
    recon = latents @ params["W_dec"] + params["b_dec"]
    gate_acts = pi_gate.relu()
    W, b = (params["W_dec"].detach(), params["b_dec"].detach()) if freeze else (
        params["W_dec"], params["b_dec"])  # fmt: skip
    frozen = gate_acts @ W + b
    penalised = latents if l1_on_magnitude else gate_acts
    loss = (x - recon).pow(2).sum(-1).mean() + l1_coeff * penalised.sum(-1).mean()
    return latents, loss + (x - frozen).pow(2).sum(-1).mean()


def gated_with_a_live_decoder_in_the_aux_loss(x, params, l1_coeff):
    return _gated(x, params, l1_coeff, freeze=False)


def gated_penalising_the_magnitudes(x, params, l1_coeff):
    return _gated(x, params, l1_coeff, l1_on_magnitude=True)


def gated_without_the_exp(x, params, l1_coeff):
    return _gated(x, params, l1_coeff, exp=False)


def gated_relu_gate(x, params, l1_coeff):
    return _gated(x, params, l1_coeff, gate_relu=True)


def _greedy(decoder, features, by_feature=False, dot=False):
    unit = (lambda t: t) if dot else (lambda t: F.normalize(t.float(), dim=-1))
    cosine = unit(features) @ unit(decoder).T
    n_features, n_latents = cosine.shape
    latent = torch.full((n_features,), -1, dtype=torch.long)
    similarity = torch.zeros(n_features)
    work = cosine.clone()
    for step in range(min(n_features, n_latents)):
        if by_feature:  # each feature in index order takes its best free latent
            i, j = step, int(work[step].argmax())
        else:
            i, j = divmod(int(work.argmax()), n_latents)
        latent[i], similarity[i] = j, cosine[i, j]
        work[i, :] = -torch.inf
        work[:, j] = -torch.inf
    return latent, similarity


def greedy_feature_by_feature(decoder, features):
    return _greedy(decoder, features, by_feature=True)


def greedy_by_dot_product(decoder, features):
    return _greedy(decoder, features, dot=True)


def matching_not_one_to_one(decoder, features):
    cosine = F.normalize(features, dim=-1) @ F.normalize(decoder, dim=-1).T
    best = cosine.max(dim=-1)
    return best.indices, best.values


def matching_optimal(decoder, features):
    from saebook.toy_saes import match_features

    match = match_features(decoder, features, method="hungarian")
    return match.latent, match.similarity


def _superposition(W, normalise="i", include_self=False, square=True):
    unit = W / W.norm(dim=0, keepdim=True).clamp_min(1e-8)
    overlap = {"i": unit.T @ W, "both": unit.T @ unit, "none": W.T @ W}[normalise]
    overlap = overlap**2 if square else overlap.abs()
    return overlap.sum(1) - (0 if include_self else overlap.diagonal())


def superposition_including_self(W):
    return _superposition(W, include_self=True)


def superposition_both_normalised(W):
    return _superposition(W, normalise="both")


def superposition_unnormalised(W):
    return _superposition(W, normalise="none")


def superposition_not_squared(W):
    return _superposition(W, square=False)


def relu_hidden_without_hidden_relu(W, b, x):
    return torch.relu(x @ W.T @ W + b)


def relu_hidden_bias_inside(W, b, x):
    return torch.relu(torch.relu(x @ W.T) @ W) + b


def top_share_unsquared(W):
    return W.abs().max(dim=0).values / W.abs().sum(dim=0).clamp_min(1e-8)


def top_share_of_signed_max(W):
    return W.max(dim=0).values.clamp_min(0) ** 2 / W.pow(2).sum(dim=0).clamp_min(1e-8)


def abs_loss_against_x(output, x, importance):
    return (importance * (output - x) ** 2).mean(dim=(0, 2))


def abs_loss_unweighted(output, x, importance):
    return ((output - x.abs()) ** 2).mean(dim=(0, 2))


def _phase(W, threshold=0.5, strict=True, apart_sign=-1, neither=3):
    norms = W.norm(dim=-2)
    stored = norms > threshold if strict else norms >= threshold
    one, two = stored[..., 0], stored[..., 1]
    apart = apart_sign * (W[..., 0] * W[..., 1]).sum(-1) > 0
    code = torch.full(W.shape[:-2], 3, dtype=torch.int64)
    code[~one & ~two] = neither
    code[one & ~two] = 0
    code[two & ~one] = 1
    code[one & two & apart] = 2
    return code


def phase_counting_the_threshold_as_stored(W, threshold=0.5):
    return _phase(W, threshold, strict=False)


def phase_with_the_sign_backwards(W, threshold=0.5):
    return _phase(W, threshold, apart_sign=1)


def phase_calling_an_empty_model_feature_1(W, threshold=0.5):
    return _phase(W, threshold, neither=0)


def phase_ignoring_the_threshold(W, threshold=0.5):
    return _phase(W, 0.5)


WRONG: dict[str, list[Callable]] = {
    "check_toy_forward": [forward_without_relu, forward_relu_before_bias],
    "check_two_feature_phase": [
        phase_counting_the_threshold_as_stored,
        phase_with_the_sign_backwards,
        phase_calling_an_empty_model_feature_1,
        phase_ignoring_the_threshold,
    ],
    "check_feature_dimensionality": [
        dimensionality_without_zero_guard,
        dimensionality_summing_the_wrong_axis,
    ],
    "check_sae_loss": [
        loss_forgetting_the_decoder_bias_in_the_encoder,
        loss_summed_over_the_batch,
        loss_mean_squared_error,
    ],
    "check_max_cosine_similarity": [
        cosine_without_normalising_the_decoder,
        cosine_max_over_features,
    ],
    "check_topk_activation": [topk_without_relu, topk_smallest, topk_off_by_one],
    "check_jumprelu_function": [JumpReLUStraightThrough, JumpReLUWholeWindow],
    "check_weighted_mse": [weighted_mse_summed_over_features, weighted_mse_unweighted],
    "check_dead_latents": [dead_latents_strict, dead_latents_never_fired_only],
    "check_rectangle": [rectangle_closed, rectangle_as_bool, rectangle_in_float32],
    "check_gated_loss": [
        gated_with_a_live_decoder_in_the_aux_loss,
        gated_penalising_the_magnitudes,
        gated_without_the_exp,
        gated_relu_gate,
    ],
    "check_greedy_matching": [
        greedy_feature_by_feature,
        greedy_by_dot_product,
        matching_not_one_to_one,
        matching_optimal,
    ],
    "check_relu_hidden_forward": [relu_hidden_without_hidden_relu, relu_hidden_bias_inside],
    "check_top_neuron_share": [top_share_unsquared, top_share_of_signed_max],
    "check_abs_loss": [abs_loss_against_x, abs_loss_unweighted],
    "check_superposition_measure": [
        superposition_including_self,
        superposition_both_normalised,
        superposition_unnormalised,
        superposition_not_squared,
    ],
}
STUBS: dict[str, Callable] = {"check_jumprelu_function": JumpReLUStub}
#: checker -> (chapter, the name its solution cell defines)
SOLUTIONS: dict[str, tuple[str, str]] = {
    "check_gated_loss": (CHAPTER_3, "gated_loss"),
    "check_relu_hidden_forward": (CHAPTER_4, "relu_hidden_forward"),
    "check_top_neuron_share": (CHAPTER_4, "top_neuron_share"),
    "check_abs_loss": (CHAPTER_4, "abs_loss"),
    "check_superposition_measure": (CHAPTER_1, "superposition"),
    "check_greedy_matching": (CHAPTER_2, "greedy_match"),
    "check_toy_forward": (CHAPTER_1, "toy_forward"),
    "check_two_feature_phase": (CHAPTER_1, "phase_of"),
    "check_feature_dimensionality": (CHAPTER_1, "feature_dimensionality"),
    "check_sae_loss": (CHAPTER_2, "sae_loss"),
    "check_max_cosine_similarity": (CHAPTER_2, "max_cosine_similarity"),
    "check_topk_activation": (CHAPTER_3, "topk_activation"),
    "check_jumprelu_function": (CHAPTER_3, "JumpReLU"),
    "check_weighted_mse": (CHAPTER_1, "weighted_mse"),
    "check_dead_latents": (CHAPTER_2, "dead_latents"),
    "check_rectangle": (CHAPTER_3, "rectangle"),
}


def test_every_checker_of_the_part_is_covered() -> None:
    assert sorted(WRONG) == part_checkers(PART)
    assert sorted(SOLUTIONS) == part_checkers(PART)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_stub_is_not_implemented(name: str) -> None:
    assert_stub_rejected(getattr(checks, name), STUBS.get(name, stub))


@pytest.mark.parametrize(
    "name, wrong",
    [(n, w) for n, ws in WRONG.items() for w in ws],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_a_wrong_implementation_is_rejected(name: str, wrong: Callable) -> None:
    assert_wrong_rejected(getattr(checks, name), wrong)


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_the_books_solution_passes(name: str) -> None:
    chapter, defined = SOLUTIONS[name]
    getattr(checks, name)(load_solution(chapter, defined))
