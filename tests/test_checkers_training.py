"""Checkers of part 4 (training) reject stubs and plausible mistakes, and accept the book's
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

PART = "training"


@pytest.fixture(scope="session")
def tiny():
    from saebook import profiles

    return profiles.load("tiny")


# --- wrong implementations -------------------------------------------------------------------

#: the healthy run and the learning-rate run swapped
DIAGNOSIS_SWAPPED = {**checks.DIAGNOSIS_RUNS, "A": "healthy", "B": "learning rate too high"}
#: one run left out
DIAGNOSIS_INCOMPLETE = {k: v for k, v in checks.DIAGNOSIS_RUNS.items() if k != "F"}


def l2_ratio_of_means(x, x_hat):
    return x_hat.norm(dim=-1).mean() / x.norm(dim=-1).mean()


def l2_ratio_squared(x, x_hat):
    return (x_hat.pow(2).sum(-1) / x.pow(2).sum(-1).clamp(min=1e-8)).mean()


def top_k_largest_gap_signed(X, y, k):
    return (X[y].mean(0) - X[~y].mean(0)).topk(k).indices


def top_k_largest_means(X, y, k):
    return X[y].mean(0).abs().topk(k).indices


def standard_loss_without_decoder_norm(x, feature_acts, x_hat, W_dec, l1_coefficient):
    return (x - x_hat).pow(2).sum(-1).mean() + l1_coefficient * feature_acts.sum(-1).mean()


def standard_loss_mean_over_features(x, feature_acts, x_hat, W_dec, l1_coefficient):
    sparsity = (feature_acts * W_dec.norm(dim=1)).sum(-1).mean()
    return (x - x_hat).pow(2).mean() + l1_coefficient * sparsity


def _topk(x, W_enc, b_enc, W_dec, b_dec, k, centre=True, rescale=True, bias_out=True):
    norms = W_dec.norm(dim=-1) if rescale else torch.ones(W_dec.shape[0])
    pre = (((x - b_dec) if centre else x) @ W_enc + b_enc) * norms
    top = pre.topk(k, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    x_hat = acts @ (W_dec / norms[:, None]) + (b_dec if bias_out else 0)
    return (x_hat - x).pow(2).sum(-1).mean()


def topk_loss_without_subtracting_b_dec(*args):
    return _topk(*args, centre=False)


def topk_loss_without_decoder_norm_rescaling(*args):
    return _topk(*args, rescale=False)


def topk_loss_without_the_output_bias(*args):
    return _topk(*args, bias_out=False)


def _loop(x, params, k, lr, batch_size, optimizer=torch.optim.Adam, drop_last=False):
    p = {n: t.detach().clone().requires_grad_(True) for n, t in params.items()}
    opt = optimizer(list(p.values()), lr=lr)
    stop = x.shape[0] - (x.shape[0] % batch_size if drop_last else 0)
    for start in range(0, stop, batch_size):
        batch = x[start : start + batch_size]
        loss = _topk(batch, p["W_enc"], p["b_enc"], p["W_dec"], p["b_dec"], k)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {n: t.detach() for n, t in p.items()}


def loop_with_sgd(x, params, k, lr, batch_size):
    return _loop(x, params, k, lr, batch_size, optimizer=torch.optim.SGD)


def loop_dropping_the_last_partial_batch(x, params, k, lr, batch_size):
    return _loop(x, params, k, lr, batch_size, drop_last=True)


def loop_on_the_whole_data_each_step(x, params, k, lr, batch_size):
    steps = -(-x.shape[0] // batch_size)
    return _loop(x.repeat(steps, 1), params, k, lr, x.shape[0])


def _ce(model, sae, tokens, skip_bos=True, zero_everywhere=False):
    hook_name = sae.cfg.metadata.hook_name
    keep = (tokens != model.tokenizer.bos_token_id)[..., None]
    if not skip_bos:
        keep = torch.ones_like(keep)
    zkeep = torch.ones_like(keep) if zero_everywhere else keep

    def splice(act, hook):
        return torch.where(keep, sae.decode(sae.encode(act)), act)

    def zero(act, hook):
        return torch.where(zkeep, torch.zeros_like(act), act)

    with torch.no_grad():
        clean = float(model(tokens, return_type="loss"))
        with_sae = float(
            model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(hook_name, splice)])
        )
        zeroed = float(
            model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(hook_name, zero)])
        )
    return {"ce_clean": clean, "ce_with_sae": with_sae, "ce_zero_ablation": zeroed,
            "ce_loss_recovered": (zeroed - with_sae) / (zeroed - clean)}  # fmt: skip


def ce_splicing_at_bos_too(model, sae, tokens):
    return _ce(model, sae, tokens, skip_bos=False)


def ce_zero_ablating_bos_too(model, sae, tokens):
    return _ce(model, sae, tokens, zero_everywhere=True)


def ce_recovered_relative_to_clean(model, sae, tokens):
    out = _ce(model, sae, tokens)
    out["ce_loss_recovered"] = out["ce_clean"] / out["ce_with_sae"]
    return out


def _metrics(target, reconstruction, acts, centre=True, l0_sum=False):
    error = (target - reconstruction).pow(2).sum(-1)
    spread = (target - target.mean(0)).pow(2).sum() if centre else target.pow(2).sum()
    fires = acts > 0
    return {
        "explained_variance": float(1 - error.sum() / spread),
        "mse": float(error.mean()),
        "l0": float(fires.sum() if l0_sum else fires.sum(-1).float().mean()),
        "dead_fraction": float((~fires.any(0)).float().mean()),
        "l2_ratio": float((reconstruction.norm(dim=-1) / target.norm(dim=-1)).mean()),
    }


def metrics_ev_without_centering(t, r, a):
    return _metrics(t, r, a, centre=False)


def metrics_l0_summed(t, r, a):
    return _metrics(t, r, a, l0_sum=True)


def metrics_mse_per_element(t, r, a):
    return {**_metrics(t, r, a), "mse": float((t - r).pow(2).mean())}


def frequent_sparse_including_the_limit(density, limit):
    d = density.double().clone()
    d[(d > limit) | (d == 0)] = -1
    return int(d.argmax())


def frequent_sparse_rarest(density, limit):
    d = density.double().clone()
    d[(d >= limit) | (d == 0)] = 2.0
    return int(d.argmin())


def mean_active_largest_sum(sums, counts, min_count):
    s = sums.double().clone()
    s[counts < min_count] = float("-inf")
    return int(s.argmax())


def mean_active_without_the_count_filter(sums, counts, min_count):
    return int((sums.double() / counts.clamp(min=1)).argmax())


def selective_largest_max(max_act, mean_act, density, min_density):
    m = max_act.double().clone()
    m[density < min_density] = float("-inf")
    return int(m.argmax())


def selective_without_the_density_filter(max_act, mean_act, density, min_density):
    return int((max_act / mean_act.nan_to_num(0.0).clamp(min=1e-6)).argmax())


def _f1(acts, label, fires=None, precision_over_positions=False, pick="f1"):
    fires = acts > 0 if fires is None else fires
    tp = (fires & label[:, None]).sum(0).float()
    if precision_over_positions:
        precision = tp / acts.shape[0]
    else:
        precision = tp / fires.sum(0).clamp(min=1)
    recall = tp / label.sum()
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    best = int({"f1": f1, "precision": precision, "recall": recall}[pick].argmax())
    return best, float(f1[best]), float(precision[best]), float(recall[best])


def f1_firing_where_nonzero(acts, label):
    return _f1(acts, label, fires=acts != 0)


def f1_precision_over_all_positions(acts, label):
    return _f1(acts, label, precision_over_positions=True)


def f1_best_by_precision(acts, label):
    return _f1(acts, label, pick="precision")


def _corr(latents, features, centre=True):
    def unit(x):
        x = x.double() - x.double().mean(0) if centre else x.double()
        return x / x.norm(dim=0).clamp(min=1e-12)

    corr = unit(features).T @ unit(latents)
    return corr.max(1).values.float(), corr.max(1).indices


def correlations_uncentred(latents, features):
    return _corr(latents, features, centre=False)


def correlations_absolute(latents, features):
    def unit(x):
        x = x.double() - x.double().mean(0)
        return x / x.norm(dim=0).clamp(min=1e-12)

    corr = (unit(features).T @ unit(latents)).abs()
    return corr.max(1).values.float(), corr.max(1).indices


def correlations_per_latent(latents, features):
    values, indices = _corr(features, latents)  # the transposed question: best feature per latent
    return values, indices


def kl_reversed(clean, new, keep):
    log_p, log_q = clean.log_softmax(-1), new.log_softmax(-1)
    return (log_q.exp() * (log_q - log_p)).sum(-1)[keep].mean()


def kl_over_every_position(clean, new, keep):
    log_p, log_q = clean.log_softmax(-1), new.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def splice_everywhere(resid, reconstruction, keep):
    return reconstruction


def splice_inverted(resid, reconstruction, keep):
    return torch.where(keep[..., None], resid, reconstruction)


def downstream_mse_per_element(clean, new, keep):
    return torch.stack(
        [(n - c).pow(2)[keep].mean() for c, n in zip(clean, new, strict=True)]
    ).mean()


def downstream_mse_summed_over_layers(clean, new, keep):
    return torch.stack(
        [(n - c).pow(2).sum(-1)[keep].mean() for c, n in zip(clean, new, strict=True)]
    ).sum()


def dead_fraction_at_or_above_window(fired, window):
    since, out = torch.zeros(fired.shape[1]), []
    for row in fired:
        since = torch.where(row, torch.zeros_like(since), since + 1)
        out.append((since >= window).float().mean())
    return torch.stack(out)


def dead_fraction_never_fired(fired, window):
    return (fired.cumsum(0) == 0).float().mean(-1)


def join_chunks_dropping_middles(chunks):
    records, part = [], b""
    for kind, payload in chunks:
        if kind == 1:
            records.append(payload)
        elif kind == 2:
            part = payload
        elif kind == 4:
            records.append(part + payload)
    return records


def join_chunks_each_as_record(chunks):
    return [payload for _, payload in chunks]


def aux_loss_unscaled(sae_in, sae_out, hidden_pre, dead_mask, W_dec):
    from saebook.training import topk_aux_loss

    n_dead, k_aux = int(dead_mask.sum()), sae_in.shape[-1] // 2
    loss = topk_aux_loss(sae_in, sae_out, hidden_pre, dead_mask, W_dec)
    return loss / min(n_dead / k_aux, 1.0) if n_dead else loss


def aux_loss_all_dead_latents(sae_in, sae_out, hidden_pre, dead_mask, W_dec):
    n_dead = int(dead_mask.sum())
    if n_dead == 0:
        return torch.tensor(0.0)
    scale = min(n_dead / (sae_in.shape[-1] // 2), 1.0)
    acts = torch.where(dead_mask[None], hidden_pre, torch.zeros_like(hidden_pre))
    return scale * (acts @ W_dec - (sae_in - sae_out)).pow(2).sum(-1).mean()


WRONG: dict[str, list[Any]] = {
    "check_e2e_kl_loss": [kl_reversed, kl_over_every_position],
    "check_splice": [splice_everywhere, splice_inverted],
    "check_downstream_mse": [downstream_mse_per_element, downstream_mse_summed_over_layers],
    "check_diagnosis": [DIAGNOSIS_SWAPPED, DIAGNOSIS_INCOMPLETE],
    "check_l2_ratio": [l2_ratio_of_means, l2_ratio_squared],
    "check_top_k_by_mean_difference": [top_k_largest_gap_signed, top_k_largest_means],
    "check_standard_sae_loss": [
        standard_loss_without_decoder_norm,
        standard_loss_mean_over_features,
    ],
    "check_topk_sae_loss": [
        topk_loss_without_subtracting_b_dec,
        topk_loss_without_decoder_norm_rescaling,
        topk_loss_without_the_output_bias,
    ],
    "check_topk_training_loop": [
        loop_with_sgd,
        loop_dropping_the_last_partial_batch,
        loop_on_the_whole_data_each_step,
    ],
    "check_ce_loss_recovered": [
        ce_splicing_at_bos_too,
        ce_zero_ablating_bos_too,
        ce_recovered_relative_to_clean,
    ],
    "check_activation_metrics": [
        metrics_ev_without_centering,
        metrics_l0_summed,
        metrics_mse_per_element,
    ],
    "check_most_frequent_sparse": [
        frequent_sparse_including_the_limit,
        frequent_sparse_rarest,
    ],
    "check_largest_mean_active": [
        mean_active_largest_sum,
        mean_active_without_the_count_filter,
    ],
    "check_most_selective": [selective_largest_max, selective_without_the_density_filter],
    "check_best_latent_f1": [
        f1_firing_where_nonzero,
        f1_precision_over_all_positions,
        f1_best_by_precision,
    ],
    "check_max_correlations": [
        correlations_uncentred,
        correlations_absolute,
        correlations_per_latent,
    ],
    "check_dead_fraction_curve": [dead_fraction_at_or_above_window, dead_fraction_never_fired],
    "check_join_log_chunks": [join_chunks_dropping_middles, join_chunks_each_as_record],
    "check_topk_aux_loss": [aux_loss_unscaled, aux_loss_all_dead_latents],
}
#: checker -> (chapter, the name its solution cell defines)
SOLUTIONS: dict[str, tuple[str, str]] = {
    "check_e2e_kl_loss": ("book/training/05_end_to_end_saes", "my_kl_loss"),
    "check_splice": ("book/training/05_end_to_end_saes", "my_splice"),
    "check_downstream_mse": ("book/training/05_end_to_end_saes", "my_downstream_mse"),
    "check_standard_sae_loss": ("book/training/01_training_with_saelens", "standard_sae_loss"),
    "check_topk_sae_loss": ("book/training/01_training_with_saelens", "topk_sae_loss"),
    "check_topk_training_loop": ("book/training/01_training_with_saelens", "train_topk"),
    "check_l2_ratio": ("book/training/02_metrics_and_failure_modes", "my_l2_ratio"),
    "check_ce_loss_recovered": ("book/training/02_metrics_and_failure_modes", "loss_recovered"),
    "check_diagnosis": ("book/training/02_metrics_and_failure_modes", "diagnosis"),
    "check_most_frequent_sparse": ("book/training/03_case_studies", "pick_frequent_sparse"),
    "check_largest_mean_active": ("book/training/03_case_studies", "pick_largest_mean_active"),
    "check_most_selective": ("book/training/03_case_studies", "pick_most_selective"),
    "check_top_k_by_mean_difference": ("book/training/04_evaluation", "my_top_k"),
    "check_activation_metrics": ("book/training/04_evaluation", "recon_metrics"),
    "check_best_latent_f1": ("book/training/04_evaluation", "best_latent_f1"),
    "check_max_correlations": ("book/training/04_evaluation", "max_corr"),
    "check_dead_fraction_curve": ("book/training/06_training_case_studies", "my_dead_fraction"),
    "check_join_log_chunks": ("book/training/06_training_case_studies", "my_join_chunks"),
    "check_topk_aux_loss": ("book/training/06_training_case_studies", "my_aux_loss"),
}
#: the exercise notebook's stub of an answer that is data
STUBS: dict[str, Any] = {"check_diagnosis": NotImplemented}
#: checker -> its arguments after the reader's function, from the tiny profile
EXTRA_ARGS: dict[str, Callable[[Any], tuple]] = {
    "check_ce_loss_recovered": lambda p: (p.model, p.saes["resid"], p.tokens(3, 24, seed=2)),
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
    assert_stub_rejected(getattr(checks, name), STUBS.get(name, stub), *_args(name, request))


@pytest.mark.parametrize(
    "name, wrong",
    [(n, w) for n, ws in WRONG.items() for w in ws],
    ids=lambda v: getattr(v, "__name__", None) or str(v)[:20],
)
def test_a_wrong_implementation_is_rejected(name: str, wrong: Any, request) -> None:
    assert_wrong_rejected(getattr(checks, name), wrong, *_args(name, request))


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_the_books_solution_passes(name: str, request) -> None:
    chapter, defined = SOLUTIONS[name]
    getattr(checks, name)(load_solution(chapter, defined), *_args(name, request))
