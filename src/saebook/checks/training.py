"""Checkers for the exercises of part 4, "Training and evaluating SAEs"."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from saebook.checks.core import Case, _generator, check_function, require_answer

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

    require_answer(answers, "the diagnosis", "your diagnosis")
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
