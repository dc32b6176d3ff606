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
    """Mean over rows of ``||x_hat|| / ||x||``, dividing by 1 where ``||x|| < 1e-4``
    (:func:`saebook.metrics.l2_ratio`, as a tensor)."""
    from saebook.metrics import l2_ratio

    return torch.tensor(l2_ratio(x, x_hat), dtype=x.dtype)


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


# --- Part 4, exercises added for issue 17 ---------------------------------------------------


def _saelens_topk_step(seed: int, k: int, batch: int, d_in: int = 6, d_sae: int = 16) -> dict:
    """One SAELens ``TopKTrainingSAE`` forward and backward pass on random weights and inputs."""
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    g = _generator(seed)
    torch.manual_seed(seed)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k))
    with torch.no_grad():  # uneven decoder norms and a non-zero b_dec, so both matter
        sae.W_dec.mul_(torch.rand(d_sae, 1, generator=g) * 3 + 0.1)
        sae.b_dec.copy_(torch.randn(d_in, generator=g) * 0.5)
        sae.b_enc.copy_(torch.randn(d_sae, generator=g) * 0.1)
    x = torch.randn(batch, d_in, generator=g)
    names = ("W_enc", "b_enc", "W_dec", "b_dec")
    params = {n: getattr(sae, n).detach().clone() for n in names}
    out = sae.training_forward_pass(
        TrainStepInput(
            sae_in=x,
            coefficients={},
            dead_neuron_mask=None,
            n_training_steps=0,
            is_logging_step=False,
        )
    )
    out.loss.backward()
    grads = {f"grad_{n}": getattr(sae, n).grad.detach().clone() for n in params}
    return {"x": x, "params": params, "loss": out.loss.detach(), **grads}


def check_topk_sae_loss(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(x, W_enc, b_enc, W_dec, b_dec, k) -> scalar`` against SAELens' TopK SAE.

    The reference is the ``loss`` (and, through autograd on your function, its gradient with
    respect to every parameter) of SAELens' ``TopKTrainingSAE.training_forward_pass`` with its
    default configuration (decoder bias subtracted from the input, pre-activations scaled by
    the decoder row norms, no dead latents so no auxiliary loss), on random weights and inputs.
    """
    cases: list[Case] = []
    expected: dict[str, tuple] = {}
    for name, seed, k, batch in [
        ("seed 0, k=3", 0, 3, 12),
        ("seed 1, k=1", 1, 1, 12),
        ("k = d_sae (no sparsity)", 2, 16, 12),
        ("one input", 3, 4, 1),
    ]:
        step = _saelens_topk_step(seed, k, batch)
        expected[name] = (step["loss"], *(step[f"grad_{n}"] for n in step["params"]))
        p = step["params"]
        cases.append(
            (name, (step["x"], p["W_enc"], p["b_enc"], p["W_dec"], p["b_dec"], k), {"_case": name})
        )

    def reference(*args: Any, _case: str) -> tuple:
        return expected[_case]

    def reader(x, W_enc, b_enc, W_dec, b_dec, k, _case: str) -> tuple:
        params = [t.clone().requires_grad_(True) for t in (W_enc, b_enc, W_dec, b_dec)]
        loss = fn(x, *params, k)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise TypeError(f"the loss must be a one-element tensor, got {loss!r:.60}")
        grads = torch.autograd.grad(loss.reshape(()), params, allow_unused=True)
        grads = [
            torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
        ]
        return (loss.detach(), *grads)

    check_function(reader, reference, cases, atol=1e-4, rtol=1e-4)


def check_ce_loss_recovered(fn: Callable[..., dict], model, sae, tokens: Tensor) -> None:
    """Check ``fn(model, sae, tokens) -> {"ce_clean", "ce_with_sae", "ce_zero_ablation",
    "ce_loss_recovered"}`` against :func:`saebook.metrics.reconstruction_metrics`.

    The SAE's reconstruction (no error term) replaces its hook at every non-BOS position; zero
    ablation sets the hook to zero at the same positions. Cases: the reader's tokens, their
    first row, and the tokens without their last position.
    """
    from saebook.metrics import reconstruction_metrics

    keys = ("ce_clean", "ce_with_sae", "ce_zero_ablation", "ce_loss_recovered")

    def reference(m, s, t) -> dict:
        out = reconstruction_metrics(m, s, t).as_dict()
        return {k: out[k] for k in keys}

    def reader(m, s, t) -> dict:
        out = fn(m, s, t)
        return {k: float(v) for k, v in dict(out).items()}

    cases: list[Case] = [
        ("the given tokens", (model, sae, tokens), {}),
        ("one sequence", (model, sae, tokens[:1]), {}),
        ("shorter sequences", (model, sae, tokens[:, :-1]), {}),
    ]
    check_function(reader, reference, cases, atol=1e-4, rtol=1e-4)


def check_activation_metrics(fn: Callable[[Tensor, Tensor, Tensor], dict]) -> None:
    """Check ``fn(target, reconstruction, acts) -> {"explained_variance", "mse", "l0",
    "dead_fraction", "l2_ratio"}`` against :func:`saebook.metrics.activation_metrics`."""
    from saebook.metrics import activation_metrics

    g = _generator(44)
    x = torch.randn(40, 6, generator=g) + 1.0
    acts = torch.relu(torch.randn(40, 10, generator=g) - 0.5)
    acts[:, 7] = 0  # a dead latent
    recon = x + 0.3 * torch.randn(40, 6, generator=g)
    cases: list[Case] = [
        ("noisy reconstruction", (x, recon, acts), {}),
        ("perfect reconstruction", (x, x.clone(), acts), {}),
        ("shrunk reconstruction", (x, 0.6 * x, acts), {}),
        ("every latent dead", (x, torch.zeros_like(x), torch.zeros(40, 10)), {}),
        ("dense codes", (x, recon, acts + 0.1), {}),
    ]
    check_function(lambda *a: {k: float(v) for k, v in dict(fn(*a)).items()},
                   activation_metrics, cases)  # fmt: skip


def check_most_frequent_sparse(fn: Callable[[Tensor, float], int]) -> None:
    """Check ``fn(density, limit) -> int`` against
    :func:`saebook.latent_selection.most_frequent_sparse`: among latents with
    ``0 < density < limit``, the densest (ties: the lowest index)."""
    from saebook.latent_selection import most_frequent_sparse

    # values exact in binary, so "below the limit" is not blurred by float32 rounding
    density = torch.tensor([0.5, 0.03125, 0.0, 0.125, 0.25, 0.375, 0.125])
    cases: list[Case] = [
        ("limit 0.25", (density, 0.25), {}),
        ("the limit itself is excluded", (density, 0.125), {}),
        ("limit 0.4", (density, 0.4), {}),
        ("ties go to the lowest index", (torch.tensor([0.5, 0.0625, 0.0625]), 0.25), {}),
        ("dead latents do not count", (torch.tensor([0.0, 0.0, 0.001]), 0.1), {}),
    ]
    check_function(lambda d, lim: int(fn(d, lim)), most_frequent_sparse, cases)


def check_largest_mean_active(fn: Callable[[Tensor, Tensor, int], int]) -> None:
    """Check ``fn(sums, counts, min_count) -> int`` against
    :func:`saebook.latent_selection.largest_mean_active`: the largest ``sums / counts``
    among latents with ``counts >= min_count``."""
    from saebook.latent_selection import largest_mean_active

    sums = torch.tensor([10.0, 90.0, 300.0, 50.0, 0.0])
    counts = torch.tensor([5, 30, 100, 10, 0])
    cases: list[Case] = [
        ("min_count 20", (sums, counts, 20), {}),
        ("min_count 1", (sums, counts, 1), {}),
        ("rare latents are ignored", (torch.tensor([100.0, 6.0]), torch.tensor([2, 3]), 3), {}),
        ("mean, not sum", (torch.tensor([100.0, 60.0]), torch.tensor([50, 20]), 1), {}),
    ]
    check_function(lambda s, c, m: int(fn(s, c, m)), largest_mean_active, cases)


def check_most_selective(fn: Callable[[Tensor, Tensor, Tensor, float], int]) -> None:
    """Check ``fn(max_act, mean_act, density, min_density) -> int`` against
    :func:`saebook.latent_selection.most_selective`: the largest ``max / mean`` among latents
    with ``density >= min_density``."""
    from saebook.latent_selection import most_selective

    mx = torch.tensor([5.0, 9.0, 4.0, 30.0, 8.0])
    mean = torch.tensor([1.0, 1.0, 0.1, 1.0, 2.0])
    density = torch.tensor([0.01, 0.002, 0.05, 0.0005, 0.2])
    cases: list[Case] = [
        ("min_density 1e-3", (mx, mean, density, 1e-3), {}),
        ("min_density 1e-4", (mx, mean, density, 1e-4), {}),
        ("min_density 0.1", (mx, mean, density, 0.1), {}),
        ("ratio, not max", (torch.tensor([10.0, 3.0]), torch.tensor([5.0, 0.5]),
                            torch.tensor([0.1, 0.1]), 1e-3), {}),
    ]  # fmt: skip
    check_function(lambda a, b, c, d: int(fn(a, b, c, d)), most_selective, cases)


def check_topk_training_loop(fn: Callable[..., dict]) -> None:
    """Check ``fn(x, params, k, lr, batch_size) -> trained params`` against
    :func:`saebook.training.topk_adam_steps`: one ``torch.optim.Adam`` step per consecutive
    batch of ``x`` on SAELens' TopK training loss, starting from ``params`` (``W_enc``,
    ``b_enc``, ``W_dec``, ``b_dec``; your function must not change the dict it is given).
    Cases: several batches, one batch, a last partial batch, a larger learning rate.
    """
    from saebook.training import topk_adam_steps

    g = _generator(46)
    d_in, d_sae = 6, 12
    params = {
        "W_enc": torch.randn(d_in, d_sae, generator=g) * 0.4,
        "b_enc": torch.randn(d_sae, generator=g) * 0.1,
        "W_dec": torch.randn(d_sae, d_in, generator=g) * 0.4,
        "b_dec": torch.randn(d_in, generator=g) * 0.2,
    }
    x = torch.randn(40, d_in, generator=g)
    cases: list[Case] = [
        ("five batches of 8, k=3", (x, params, 3, 1e-2, 8), {}),
        ("one batch", (x[:8], params, 2, 1e-2, 8), {}),
        ("a last partial batch", (x[:20], params, 3, 1e-2, 8), {}),
        ("larger learning rate", (x, params, 4, 5e-2, 10), {}),
    ]

    def reader(x, p, k, lr, batch_size):
        out = fn(x, p, k, lr, batch_size)
        return {n: torch.as_tensor(out[n]).detach() for n in ("W_enc", "b_enc", "W_dec", "b_dec")}

    check_function(reader, topk_adam_steps, cases, atol=1e-4, rtol=1e-3)


# --- Part 4, chapter 4: scoring latents against ground truth --------------------------------


def _recovery_cases() -> list[Case]:
    """Latent activations and a label with a planted detector, and the edge cases of F1."""
    g = _generator(47)
    n, d_sae = 300, 10
    label = torch.rand(n, generator=g) < 0.25
    acts = torch.rand(n, d_sae, generator=g) * (torch.rand(n, d_sae, generator=g) < 0.15)
    # latent 4 detects the label with some misses and a few false alarms: the best F1
    acts[:, 4] = (label & (torch.rand(n, generator=g) < 0.8)).float() * 2.0
    acts[torch.arange(0, n, 37), 4] += 1.0
    # latent 7 is perfectly precise but fires on a fifth of the label only: the best precision
    acts[:, 7] = (label & (torch.rand(n, generator=g) < 0.2)).float()
    acts[:, 2] = 0.0  # dead: precision 0/0 must count as 0, not NaN
    acts[:, 9] = 1.0  # fires everywhere: the best recall
    signed = acts - 0.5 * (torch.rand(n, d_sae, generator=g) < 0.5).float()  # negatives never fire
    rare = torch.zeros(n, dtype=torch.bool)
    rare[[3, 50, 200]] = True
    return [
        ("a planted detector", (acts, label), {}),
        ("negative activations do not fire", (signed, label), {}),
        ("a rare label", (acts, rare), {}),
        ("the label everywhere", (acts, torch.ones(n, dtype=torch.bool)), {}),
        ("without the planted detector", (acts[:, 5:], label), {}),
    ]


def check_best_latent_f1(fn: Callable[[Tensor, Tensor], tuple]) -> None:
    """Check ``fn(acts, label) -> (best latent, F1, precision, recall)`` against
    :func:`saebook.groundtruth.label_recovery` (its ``best_*`` columns): a latent predicts the
    label where its activation is > 0; the best latent has the largest F1 (the first one on a
    tie); a latent that never fires has precision 0."""
    from saebook.groundtruth import label_recovery

    def reference(acts: Tensor, label: Tensor) -> tuple[int, float, float, float]:
        row = label_recovery(acts, {"label": label}, min_count=1).iloc[0]
        return (
            int(row["best_latent"]),
            float(row["best_f1"]),
            float(row["best_precision"]),
            float(row["best_recall"]),
        )

    def reader(acts: Tensor, label: Tensor) -> tuple[int, float, float, float]:
        out = fn(acts, label)
        if not isinstance(out, (tuple, list)) or len(out) != 4:
            raise TypeError(f"expected (latent, f1, precision, recall), got {out!r}")
        return (int(out[0]), *(float(v) for v in out[1:]))

    check_function(reader, reference, _recovery_cases())


def check_max_correlations(fn: Callable[[Tensor, Tensor], tuple]) -> None:
    """Check ``fn(latent_acts, feature_acts) -> (values, indices)`` against
    :func:`saebook.evaluation.max_correlations`: for each true feature, the largest Pearson
    correlation of any latent with it, and which latent; a constant column correlates 0."""
    from saebook.evaluation import max_correlations

    g = _generator(48)
    n, d_sae, n_features = 400, 9, 5
    features = torch.rand(n, n_features, generator=g) * (
        torch.rand(n, n_features, generator=g) < 0.2
    )
    mix = torch.randn(n_features, d_sae, generator=g)
    latents = (features @ mix + 0.3 * torch.randn(n, d_sae, generator=g)).relu()
    latents[:, 3] = 5.0 * features[:, 1] + 3.0  # an affine copy of feature 1: correlation 1
    flipped = latents.clone()
    flipped[:, 6] = -4.0 * features[:, 2]  # anticorrelated: a *negative* correlation is not max
    dead = latents.clone()
    dead[:, 0] = 0.0
    absent = features.clone()
    absent[:, 4] = 0.0  # a feature never present: every correlation 0, latent 0 wins
    cases: list[Case] = [
        ("mixed features", (latents, features), {}),
        ("anticorrelated latent", (flipped, features), {}),
        ("a dead latent", (dead, features), {}),
        ("a feature never present", (latents, absent), {}),
        ("different scales", (latents * 100.0, features * 0.01), {}),
    ]

    def reader(latent_acts: Tensor, feature_acts: Tensor) -> tuple[Tensor, Tensor]:
        values, indices = fn(latent_acts, feature_acts)
        return torch.as_tensor(values).float(), torch.as_tensor(indices).long()

    check_function(reader, max_correlations, cases, atol=1e-4)


# --- Part 4 chapter 5: end-to-end SAEs -----------------------------------------------------


def _e2e_inputs(seed: int, rows: int, seq: int, width: int, bos: bool) -> tuple:
    g = _generator(seed)
    a = torch.randn(rows, seq, width, generator=g) * 2
    b = a + torch.randn(rows, seq, width, generator=g)
    keep = torch.rand(rows, seq, generator=g) > 0.3
    keep[:, 0] = not bos
    keep[0, 1] = True  # at least one kept position
    return a, b, keep


def check_e2e_kl_loss(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(clean_logits, new_logits, keep) -> scalar`` against
    :func:`saebook.e2e.kl_loss`: the mean over kept positions of KL(p_clean || p_new)."""
    from saebook.e2e import kl_loss

    cases: list[Case] = [
        ("random logits, BOS column dropped", _e2e_inputs(0, 3, 5, 11, True), {}),
        ("every position kept", _e2e_inputs(1, 2, 4, 7, False), {}),
        (
            "identical logits",
            (lambda a, _, k: (a, a.clone(), k))(*_e2e_inputs(2, 2, 3, 5, True)),
            {},
        ),
    ]
    check_function(lambda *a: torch.as_tensor(fn(*a)).float(), kl_loss, cases, atol=1e-5)


def check_splice(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(resid, reconstruction, keep) -> (rows, seq, d)`` against
    :func:`saebook.e2e.splice`: the reconstruction at kept positions, the original elsewhere."""
    from saebook.e2e import splice

    cases: list[Case] = [
        ("BOS column kept original", _e2e_inputs(3, 3, 5, 4, True), {}),
        ("every position spliced", _e2e_inputs(4, 2, 4, 3, False), {}),
    ]
    check_function(fn, splice, cases)


def check_downstream_mse(fn: Callable[[list, list, Tensor], Tensor]) -> None:
    """Check ``fn(clean, new, keep) -> scalar`` against :func:`saebook.e2e.downstream_mse`:
    per layer the squared error summed over ``d`` and averaged over kept positions, then the
    mean over layers."""
    from saebook.e2e import downstream_mse

    def layers(seed: int, n: int) -> tuple:
        pairs = [_e2e_inputs(seed + i, 2, 5, 6, True) for i in range(n)]
        return [p[0] * (i + 1) for i, p in enumerate(pairs)], [p[1] for p in pairs], pairs[0][2]

    cases: list[Case] = [
        ("one layer", layers(5, 1), {}),
        ("three layers of different scale", layers(6, 3), {}),
    ]
    check_function(lambda *a: torch.as_tensor(fn(*a)).float(), downstream_mse, cases, atol=1e-4)


# --- Part 4 chapter 6: training case studies with SAELens' runner ---------------------------


def check_dead_fraction_curve(fn: Callable[[Tensor, int], Tensor]) -> None:
    """Check ``fn(fired, window) -> (steps,)`` against
    :func:`saebook.training.dead_fraction_curve`: the fraction of latents whose count of
    steps since they last fired exceeds ``window`` after each step."""
    from saebook.training import dead_fraction_curve

    g = _generator(0)
    fired = torch.rand(12, 6, generator=g) < 0.3
    cases: list[Case] = [
        ("window 2", (fired, 2), {}),
        ("window 0", (fired, 0), {}),
        ("a latent that never fires", (torch.zeros(5, 3, dtype=torch.bool), 1), {}),
        ("a latent that fires late", (torch.tensor([[False]] * 4 + [[True]]), 2), {}),
    ]
    check_function(lambda f, w: fn(f, w).float(), dead_fraction_curve, cases)


def check_join_log_chunks(fn: Callable[[list], list]) -> None:
    """Check ``fn(chunks) -> list[bytes]`` against :func:`saebook.training.join_log_chunks`:
    FULL (1) chunks are records; FIRST (2), MIDDLE (3)... and LAST (4) join into one."""
    from saebook.training import join_log_chunks

    cases: list[Case] = [
        ("full chunks only", ([(1, b"ab"), (1, b"c")],), {}),
        ("one split record", ([(2, b"ab"), (3, b"cd"), (4, b"e")],), {}),
        ("first then last", ([(1, b"x"), (2, b"ab"), (4, b"c"), (1, b"y")],), {}),
        ("no chunks", ([],), {}),
    ]
    check_function(lambda c: [bytes(r) for r in fn(c)], join_log_chunks, cases)


def check_topk_aux_loss(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(sae_in, sae_out, hidden_pre, dead_mask, W_dec) -> scalar`` against
    SAELens' TopK auxiliary loss (:func:`saebook.training.topk_aux_loss`)."""
    from saebook.training import topk_aux_loss

    g = _generator(1)
    n, d_in, d_sae = 5, 6, 10
    x, out = torch.randn(n, d_in, generator=g), torch.randn(n, d_in, generator=g)
    pre, W = torch.randn(n, d_sae, generator=g), torch.randn(d_sae, d_in, generator=g)
    many = torch.arange(d_sae) % 2 == 0  # 5 dead: more than d_in // 2 = 3
    few = torch.zeros(d_sae, dtype=torch.bool)
    few[[1, 7]] = True  # 2 dead: fewer than d_in // 2, so the loss is scaled down
    cases: list[Case] = [
        ("more dead latents than d_in // 2", (x, out, pre, many, W), {}),
        ("few dead latents", (x, out, pre, few, W), {}),
        ("no dead latent", (x, out, pre, torch.zeros(d_sae, dtype=torch.bool), W), {}),
        ("negative pre-activations", (x, out, -pre.abs(), many, W), {}),
    ]
    check_function(lambda *a: torch.as_tensor(fn(*a)).float(), topk_aux_loss, cases)
