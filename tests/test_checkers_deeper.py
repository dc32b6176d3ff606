"""Checkers of part 3 (deeper) reject stubs and plausible mistakes, and accept the book's
solutions (see tests/checker_harness.py). Checkers that need a model and SAEs get the tiny
profile's (loaded once per session)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import scipy.stats as sps
import torch
from checker_harness import assert_stub_rejected, assert_wrong_rejected, part_checkers, stub
from exercise_cells import load_solution

from saebook import checks

PART = "deeper"
F = torch.nn.functional


@pytest.fixture(scope="session")
def tiny():
    from saebook import profiles

    return profiles.load("tiny")


# --- wrong implementations -------------------------------------------------------------------


def matches_without_normalising(narrow, wide):
    best = (wide @ narrow.T).max(dim=-1)
    return best.values, best.indices


def matches_per_narrow_row(narrow, wide):
    a, b = F.normalize(narrow, dim=-1), F.normalize(wide, dim=-1)
    best = (a @ b.T).max(dim=-1)
    return best.values, best.indices


def within_including_self_pairs(directions, codes):
    unit = F.normalize(directions.float(), dim=-1)
    same = (codes[:, None] == codes[None, :]) & (codes[:, None] >= 0)
    return float((unit @ unit.T)[same].mean()) if bool(same.any()) else float("nan")


def within_counting_unlabelled(directions, codes):
    unit = F.normalize(directions.float(), dim=-1)
    same = codes[:, None] == codes[None, :]
    same.fill_diagonal_(False)
    return float((unit @ unit.T)[same].mean()) if bool(same.any()) else float("nan")


def absorption_ignoring_the_main_latent(main, label, absorbers):
    n = int(label.sum())
    return float((absorbers.any(-1) & label).sum()) / n if n else float("nan")


def absorption_over_all_positions(main, label, absorbers):
    return float((~main & label & absorbers.any(-1)).float().mean())


def ve_without_centering(x, x_hat):
    return 1 - float((x - x_hat).pow(2).sum()) / float(x.pow(2).sum())


def ve_per_feature_mean(x, x_hat):
    total = (x - x.mean(0)).pow(2).sum(0)
    return float((1 - (x - x_hat).pow(2).sum(0) / total).mean())


def hypergeom_p_of_more_than(logits, in_set, k):
    hits = in_set[logits.topk(k, dim=-1).indices].sum(-1).numpy()
    p = sps.hypergeom.sf(hits, logits.shape[1], int(in_set.sum()), k)  # P(X > hits)
    return torch.as_tensor(p, dtype=torch.float64)


def hypergeom_p_of_bottom_k(logits, in_set, k):
    hits = in_set[logits.topk(k, dim=-1, largest=False).indices].sum(-1).numpy()
    p = sps.hypergeom.sf(hits - 1, logits.shape[1], int(in_set.sum()), k)
    return torch.as_tensor(p, dtype=torch.float64)


def detection_accuracy_not_balanced(predicted, truth):
    p, t = torch.tensor(predicted), torch.tensor(truth)
    tp, fp = float((p & t).sum()), float((p & ~t).sum())
    return {
        "balanced_accuracy": float((p == t).float().mean()),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / float(t.sum()) if bool(t.any()) else float("nan"),
    }


def detection_precision_recall_swapped(predicted, truth):
    out = checks.reference_detection_scores(predicted, truth)
    return {**out, "precision": out["recall"], "recall": out["precision"]}


def set_probability_of_log_probs(log_probs, in_set):
    return log_probs[..., in_set].sum(-1)


def set_probability_of_the_complement(log_probs, in_set):
    return log_probs.exp()[..., ~in_set].sum(-1)


def coverage_per_child_over_all_positions(parent_fires, child_fires):
    parent, kids = parent_fires.bool(), child_fires.bool()
    n_parent = int(parent.sum())
    per_child = kids.float().mean(0).tolist()
    union = kids.any(1)
    covered = int((union & parent).sum())
    return {"per_child": per_child, "best_single": max(per_child, default=0.0),
            "union": covered / n_parent,
            "union_precision": covered / max(int(union.sum()), 1)}  # fmt: skip


def coverage_precision_as_recall(parent_fires, child_fires):
    parent, kids = parent_fires.bool(), child_fires.bool()
    n_parent = int(parent.sum())
    per_child = [int((kids[:, j] & parent).sum()) / n_parent for j in range(kids.shape[1])]
    covered = int((kids.any(1) & parent).sum())
    return {"per_child": per_child, "best_single": max(per_child, default=0.0),
            "union": covered / n_parent, "union_precision": covered / n_parent}  # fmt: skip


def leaves_one_level_only(decoders, threshold):
    a, b = F.normalize(decoders[0], dim=-1), F.normalize(decoders[1], dim=-1)
    best = (b @ a.T).max(-1)
    linked = best.values >= threshold
    return torch.zeros(a.shape[0], dtype=torch.long).index_add(
        0, best.indices[linked], torch.ones(int(linked.sum()), dtype=torch.long)
    )


def leaves_ignoring_the_threshold(decoders, threshold):
    counts = torch.ones(decoders[-1].shape[0], dtype=torch.long)
    for level in range(len(decoders) - 2, -1, -1):
        a = F.normalize(decoders[level], dim=-1)
        b = F.normalize(decoders[level + 1], dim=-1)
        parent = (b @ a.T).argmax(-1)
        counts = torch.zeros(a.shape[0], dtype=torch.long).index_add(0, parent, counts)
    return counts


def labels_by_recall(latent_acts, labels, min_f1=0.0):
    fires = latent_acts > 0
    names = list(labels)
    rec = torch.stack([(fires & labels[n][:, None]).sum(0) / labels[n].sum() for n in names])
    best, which = rec.max(0)
    return [(names[i] if v > 0 and v >= min_f1 else None, v)
            for v, i in zip(best.tolist(), which.tolist(), strict=True)]  # fmt: skip


def labels_with_activation_weights(latent_acts, labels, min_f1=0.0):
    acts = latent_acts.clamp(min=0)
    names = list(labels)
    f1s = []
    for n in names:
        lab = labels[n].float()[:, None]
        tp = (acts * lab).sum(0)
        precision = tp / acts.sum(0).clamp(min=1e-12)
        recall = tp / lab.sum().clamp(min=1)
        f1s.append(2 * precision * recall / (precision + recall).clamp(min=1e-12))
    best, which = torch.stack(f1s).max(0)
    return [(names[i] if v > 0 and v >= min_f1 else None, v)
            for v, i in zip(best.tolist(), which.tolist(), strict=True)]  # fmt: skip


def neighbours_by_dot_product(directions, k):
    return tuple((directions @ directions.T).topk(k, dim=-1))


def neighbours_excluding_self(directions, k):
    unit = F.normalize(directions, dim=-1)
    sims = (unit @ unit.T).fill_diagonal_(-2.0)
    out = sims.topk(k, dim=-1)
    return out.values, out.indices


def meta_groups_without_normalising(meta_sae, directions, min_size=2):
    codes = meta_sae.encode(directions.float()).detach()
    out = {}
    for m in range(codes.shape[1]):
        rows = torch.nonzero(codes[:, m] > 0).flatten()
        if len(rows) >= min_size:
            out[m] = rows[codes[rows, m].argsort(descending=True)].tolist()
    return out


def meta_groups_in_index_order(meta_sae, directions, min_size=2):
    codes = meta_sae.encode(F.normalize(directions.float(), dim=-1)).detach()
    out = {}
    for m in range(codes.shape[1]):
        rows = torch.nonzero(codes[:, m] > 0).flatten()
        if len(rows) >= min_size:
            out[m] = rows.tolist()
    return out


def agreement_counting_unlabelled_pairs(groups, labels):
    same = total = 0
    for group in groups:
        for a, b in itertools.combinations(group, 2):
            total += 1
            same += labels[a] is not None and labels[a] == labels[b]
    return same / total if total else float("nan")


def agreement_over_unique_pairs(groups, labels):
    pairs = {
        tuple(sorted(p))
        for g in groups
        for p in itertools.combinations([i for i in g if labels[i] is not None], 2)
    }
    same = sum(labels[a] == labels[b] for a, b in pairs)
    return same / len(pairs) if pairs else float("nan")


def logit_weights_without_the_fold(model, sae, latents):
    return (sae.W_dec[torch.as_tensor(latents)].float() @ model.W_U.float()).detach()


def logit_weights_from_the_encoder(model, sae, latents):
    d = sae.W_enc[:, torch.as_tensor(latents)].T.float()
    d = d - d.mean(-1, keepdim=True)
    return (d @ model.W_U.float()).detach()


def moments_unbiased_variance(x):
    c = x.double() - x.double().mean(-1, keepdim=True)
    m2 = c.pow(2).sum(-1) / (x.shape[-1] - 1)
    return c.pow(3).mean(-1) / m2**1.5, c.pow(4).mean(-1) / m2**2 - 3


def moments_plain_kurtosis(x):
    c = x.double() - x.double().mean(-1, keepdim=True)
    m2 = c.pow(2).mean(-1)
    return c.pow(3).mean(-1) / m2**1.5, c.pow(4).mean(-1) / m2**2


def _scope(model, tokens, directions, scales, hook, position, unit=True, add=False):
    dirs = F.normalize(directions.float(), dim=-1) if unit else directions.float()
    out = torch.empty(len(dirs), len(scales), model.cfg.d_vocab)
    for i, d in enumerate(dirs):
        for j, s in enumerate(scales):

            def patch(act, hook, v=d * s):
                act[:, position] = act[:, position] + v if add else v
                return act

            with torch.no_grad():
                logits = model.run_with_hooks(tokens[None], fwd_hooks=[(hook, patch)])
            out[i, j] = logits[0, -1].float().log_softmax(-1)
    return out


def scope_one_position_early(model, tokens, directions, scales, hook, position):
    return _scope(model, tokens, directions, scales, hook, position - 1)


def scope_adding_instead_of_replacing(*args):
    return _scope(*args, add=True)


def scope_without_normalising(*args):
    return _scope(*args, unit=False)


def scope_returning_logits(model, tokens, directions, scales, hook, position):
    return _scope(model, tokens, directions, scales, hook, position).exp()


def entropy_in_bits(log_probs):
    p = log_probs.exp()
    return torch.where(p > 0, -p * log_probs, torch.zeros_like(p)).sum(-1) / torch.log(
        torch.tensor(2.0)
    )


def entropy_nan_at_zero(log_probs):
    return -(log_probs.exp() * log_probs).sum(-1)


def _full(
    acts,
    model_acts,
    label,
    main,
    decoder,
    reference,
    full_cosine,
    min_proportion,
    use_top_cosine=True,
    need_silent=True,
    sign_check=True,
    projection_by_cosine=False,
):
    u = reference / reference.norm()
    cos = F.normalize(decoder, dim=-1) @ u
    proj = acts * (cos if projection_by_cosine else decoder @ u)
    total = model_acts @ u
    silent = (acts[:, main] < 1e-8).all(-1) if need_silent else torch.ones_like(label)
    top_proj, top = proj.max(-1)
    ok = cos[top] >= full_cosine if use_top_cosine else torch.ones_like(label)
    signs = (total >= 0) & (total != 0) if sign_check else torch.ones_like(label)
    return label & silent & ok & signs & (top_proj >= min_proportion * total)


def full_absorption_ignoring_the_main_latents(*args):
    return _full(*args, need_silent=False)


def full_absorption_without_the_cosine_test(*args):
    return _full(*args, use_top_cosine=False)


def full_absorption_without_the_sign_test(*args):
    return _full(*args, sign_check=False)


def full_absorption_projecting_with_cosines(*args):
    return _full(*args, projection_by_cosine=True)


def sublabels_over_all_positions(label, missed, sublabels):
    n = label.numel()
    return {k: (float(s.sum()) / n, float((s & missed).sum()) / max(int(missed.sum()), 1))
            for k, s in sublabels.items()}  # fmt: skip


def sublabels_swapped(label, missed, sublabels):
    def share(sub, among):
        c = int(among.sum())
        return int((sub & among).sum()) / c if c else float("nan")

    return {k: (share(s, missed), share(s, label)) for k, s in sublabels.items()}


def keyword_case_sensitive(explanation, context):
    out = []
    for i, t in enumerate(context.tokens):
        hit = t.strip() != "" and t.strip() in explanation.tokens
        if not hit and explanation.label and context.labels is not None:
            hit = explanation.label in context.labels[i]
        out.append(hit)
    return out


def keyword_ignoring_labels(explanation, context):
    return [t.strip().lower() in explanation.tokens for t in context.tokens]


def detection_by_every_token(explanation, contexts, simulator):
    held = contexts.held_out_firing + contexts.held_out_silent
    predicted = [all(simulator.predict(explanation, c)) for c in held]
    return predicted, [True] * len(contexts.held_out_firing) + [False] * len(
        contexts.held_out_silent
    )


def detection_truth_from_the_prediction(explanation, contexts, simulator):
    held = contexts.held_out_firing + contexts.held_out_silent
    predicted = [any(simulator.predict(explanation, c)) for c in held]
    return predicted, [c.fires and p for c, p in zip(held, predicted, strict=True)]


def span_with_the_decoder_bias(sae, acts, latents):
    feats = sae.encode(acts)
    return feats[:, latents] @ sae.W_dec[latents] + sae.b_dec


def span_of_every_latent(sae, acts, latents):
    return sae.encode(acts) @ sae.W_dec


def span_with_encoder_directions(sae, acts, latents):
    feats = sae.encode(acts)
    return feats[:, latents] @ sae.W_enc[:, latents].T


WRONG: dict[str, list[Callable]] = {
    "check_full_absorption": [
        full_absorption_ignoring_the_main_latents,
        full_absorption_without_the_cosine_test,
        full_absorption_without_the_sign_test,
        full_absorption_projecting_with_cosines,
    ],
    "check_sublabel_shares": [sublabels_over_all_positions, sublabels_swapped],
    "check_keyword_simulator": [keyword_case_sensitive, keyword_ignoring_labels],
    "check_detection_samples": [detection_by_every_token, detection_truth_from_the_prediction],
    "check_max_cosine_matches": [matches_without_normalising, matches_per_narrow_row],
    "check_within_label_cosine": [within_including_self_pairs, within_counting_unlabelled],
    "check_absorption_rate": [absorption_ignoring_the_main_latent, absorption_over_all_positions],
    "check_variance_explained": [ve_without_centering, ve_per_feature_mean],
    "check_hypergeometric_p": [hypergeom_p_of_more_than, hypergeom_p_of_bottom_k],
    "check_detection_scores": [
        detection_accuracy_not_balanced,
        detection_precision_recall_swapped,
    ],
    "check_set_probability": [set_probability_of_log_probs, set_probability_of_the_complement],
    "check_split_coverage": [coverage_per_child_over_all_positions, coverage_precision_as_recall],
    "check_leaf_counts": [leaves_one_level_only, leaves_ignoring_the_threshold],
    "check_latent_labels": [labels_by_recall, labels_with_activation_weights],
    "check_cosine_neighbours": [neighbours_by_dot_product, neighbours_excluding_self],
    "check_meta_groups": [meta_groups_without_normalising, meta_groups_in_index_order],
    "check_pair_agreement": [agreement_counting_unlabelled_pairs, agreement_over_unique_pairs],
    "check_latent_logit_weights": [logit_weights_without_the_fold, logit_weights_from_the_encoder],
    "check_skew_kurtosis": [moments_unbiased_variance, moments_plain_kurtosis],
    "check_patch_scope": [
        scope_one_position_early,
        scope_adding_instead_of_replacing,
        scope_returning_logits,
        scope_without_normalising,
    ],
    "check_entropy": [entropy_in_bits, entropy_nan_at_zero],
    "check_span_reconstruction": [
        span_with_the_decoder_bias,
        span_of_every_latent,
        span_with_encoder_directions,
    ],
}
#: checker -> (chapter, the name its solution cell defines)
SOLUTIONS: dict[str, tuple[str, str]] = {
    "check_max_cosine_matches": ("book/deeper/01_feature_splitting", "max_cosine_matches"),
    "check_split_coverage": ("book/deeper/01_feature_splitting", "children_coverage"),
    "check_leaf_counts": ("book/deeper/01_feature_splitting", "count_leaves"),
    "check_within_label_cosine": ("book/deeper/02_latent_geometry", "within_label_cosine"),
    "check_cosine_neighbours": ("book/deeper/02_latent_geometry", "nearest_by_cosine"),
    "check_latent_labels": ("book/deeper/02_latent_geometry", "best_labels"),
    "check_span_reconstruction": ("book/deeper/02_latent_geometry", "rebuild_from_latents"),
    "check_absorption_rate": ("book/deeper/03_feature_absorption", "absorption_rate"),
    "check_full_absorption": ("book/deeper/03_feature_absorption", "fully_absorbed"),
    "check_sublabel_shares": ("book/deeper/03_feature_absorption", "sublabel_table"),
    "check_variance_explained": ("book/deeper/04_meta_saes", "variance_explained"),
    "check_meta_groups": ("book/deeper/04_meta_saes", "group_by_meta_latent"),
    "check_pair_agreement": ("book/deeper/04_meta_saes", "shared_label_share"),
    "check_hypergeometric_p": ("book/deeper/05_logit_lens", "hypergeometric_p"),
    "check_latent_logit_weights": ("book/deeper/05_logit_lens", "logit_weights_folded"),
    "check_skew_kurtosis": ("book/deeper/05_logit_lens", "shape_moments"),
    "check_detection_scores": ("book/deeper/06_autointerp", "detection_metrics"),
    "check_keyword_simulator": ("book/deeper/06_autointerp", "keyword_predict"),
    "check_detection_samples": ("book/deeper/06_autointerp", "detection_pairs"),
    "check_set_probability": ("book/deeper/07_patch_scoping", "set_probability_mass"),
    "check_patch_scope": ("book/deeper/07_patch_scoping", "scope_directions"),
    "check_entropy": ("book/deeper/07_patch_scoping", "entropy_nats"),
}
#: globals a chapter's solution cell relies on besides torch, np and F
NAMESPACE: dict[str, dict[str, Any]] = {"check_hypergeometric_p": {"sps": sps}}


def _patch_args(p) -> tuple:
    from saebook.patch_scoping import identity_prompt, placeholder_position

    prompt = identity_prompt()
    hook = p.saes["resid"].cfg.metadata.hook_name
    return (p.model, p.model.to_tokens(prompt)[0], hook, placeholder_position(p.model, prompt))


#: checker -> its arguments after the reader's function, from the tiny profile
EXTRA_ARGS: dict[str, Callable[[Any], tuple]] = {
    "check_latent_logit_weights": lambda p: (p.model, p.saes["resid"], [0, 3, 7, 11]),
    "check_patch_scope": _patch_args,
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
    solution = load_solution(chapter, defined, NAMESPACE.get(name))
    getattr(checks, name)(solution, *_args(name, request))
