"""Checkers of part 2 (intro) reject stubs and plausible mistakes, and accept the book's
solutions (see tests/checker_harness.py). Checkers that need a model and SAEs get the tiny
profile's (loaded once per session)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from checker_harness import assert_stub_rejected, assert_wrong_rejected, part_checkers, stub
from exercise_cells import load_solution

from saebook import checks

PART = "intro"


@pytest.fixture(scope="session")
def tiny():
    from saebook import profiles

    return profiles.load("tiny")


# --- wrong implementations -------------------------------------------------------------------


def top_logits_smallest(model, sae, latent, k):
    return (sae.W_dec[latent] @ model.W_U).topk(k, largest=False)


def top_logits_from_the_encoder(model, sae, latent, k):
    return (sae.W_enc[:, latent] @ model.W_U).topk(k)


def top_logits_with_the_decoder_bias(model, sae, latent, k):
    return ((sae.W_dec[latent] + sae.b_dec) @ model.W_U).topk(k)


def head_norms_transposed(W_dec, n_heads):
    return W_dec.reshape(W_dec.shape[0], -1, n_heads).norm(dim=1)


def head_norms_squared(W_dec, n_heads):
    return W_dec.reshape(W_dec.shape[0], n_heads, -1).pow(2).sum(-1)


def steering_normalising_the_direction(direction, coefficient):
    unit = torch.nn.functional.normalize(direction, dim=0)
    return lambda activation, hook=None: activation + coefficient * unit


def steering_the_last_position_only(direction, coefficient):
    def hook(activation, hook=None):
        out = activation.clone()
        out[:, -1] += coefficient * direction
        return out

    return hook


def jumprelu_always_subtracting_b_dec(x, W_enc, b_enc, b_dec, threshold, apply_b_dec):
    pre = (x - b_dec) @ W_enc + b_enc
    return pre.relu() * (pre > threshold)


def jumprelu_firing_at_the_threshold(x, W_enc, b_enc, b_dec, threshold, apply_b_dec):
    pre = (x - b_dec if apply_b_dec else x) @ W_enc + b_enc
    return pre.relu() * (pre >= threshold)


def jumprelu_without_relu(x, W_enc, b_enc, b_dec, threshold, apply_b_dec):
    pre = (x - b_dec if apply_b_dec else x) @ W_enc + b_enc
    return pre * (pre > threshold)


WRONG: dict[str, list[Callable]] = {
    "check_top_logits": [
        top_logits_smallest,
        top_logits_from_the_encoder,
        top_logits_with_the_decoder_bias,
    ],
    "check_head_norms": [head_norms_transposed, head_norms_squared],
    "check_steering_hook": [steering_normalising_the_direction, steering_the_last_position_only],
    "check_jumprelu_encode": [
        jumprelu_always_subtracting_b_dec,
        jumprelu_firing_at_the_threshold,
        jumprelu_without_relu,
    ],
}
#: checker -> (chapter, the name its solution cell defines)
SOLUTIONS: dict[str, tuple[str, str]] = {
    "check_top_logits": ("book/intro/03_latent_dashboards", "top_logits"),
    "check_head_norms": ("book/intro/05_attention_saes", "head_norms"),
    "check_steering_hook": ("book/intro/06_steering", "make_steering_hook"),
    "check_jumprelu_encode": ("book/intro/07_architectures", "jumprelu_encode"),
}
#: checker -> its arguments after the reader's function, from the tiny profile
EXTRA_ARGS: dict[str, Callable[[Any], tuple]] = {
    "check_top_logits": lambda p: (p.model, p.saes["resid"]),
}


def _args(name: str, request) -> tuple:
    if name not in EXTRA_ARGS:
        return ()
    return EXTRA_ARGS[name](request.getfixturevalue("tiny"))


def test_every_checker_of_the_part_is_covered() -> None:
    assert sorted(WRONG) == part_checkers(PART)
    assert sorted(SOLUTIONS) == part_checkers(PART)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_stub_is_not_implemented(name: str, request) -> None:
    assert_stub_rejected(getattr(checks, name), stub, *_args(name, request))


@pytest.mark.parametrize(
    "name, wrong",
    [(n, w) for n, ws in WRONG.items() for w in ws],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_a_wrong_implementation_is_rejected(name: str, wrong: Callable, request) -> None:
    assert_wrong_rejected(getattr(checks, name), wrong, *_args(name, request))


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_the_books_solution_passes(name: str, request) -> None:
    chapter, defined = SOLUTIONS[name]
    getattr(checks, name)(load_solution(chapter, defined), *_args(name, request))
