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


def summary_counting_bos(model, sae, tokens, k, batch_size):
    hook = sae.cfg.metadata.hook_name
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hook)
        acts = sae.encode(cache[hook]).flatten(0, 1).cpu()
    count = (acts > 0).sum(0)
    mean = torch.where(count > 0, acts.sum(0) / count.clamp(min=1), 0.0)
    top = acts.T.topk(k, dim=1).values
    return {"count": count, "mean": mean, "max": acts.max(0).values, "top_values": top}


def summary_top_k_of_the_last_batch(model, sae, tokens, k, batch_size):
    """Keeps the top k of each batch instead of merging them."""
    hook, bos = sae.cfg.metadata.hook_name, model.tokenizer.bos_token_id
    d_sae = sae.cfg.d_sae
    count, total, peak = (
        torch.zeros(d_sae, dtype=torch.long),
        torch.zeros(d_sae),
        torch.zeros(d_sae),
    )
    top = torch.zeros(d_sae, k)
    for start in range(0, tokens.shape[0], batch_size):
        batch = tokens[start : start + batch_size]
        with torch.no_grad():
            _, cache = model.run_with_cache(batch, names_filter=hook)
            acts = sae.encode(cache[hook]).cpu()[batch.cpu() != bos]
        count += (acts > 0).sum(0)
        total += acts.sum(0)
        peak = torch.maximum(peak, acts.max(0).values)
        top = torch.cat([torch.zeros(d_sae, k), acts.T], dim=1).topk(k, dim=1).values
    mean = torch.where(count > 0, total / count.clamp(min=1), 0.0)
    return {"count": count, "mean": mean, "max": peak, "top_values": top}


def summary_mean_over_all_positions(model, sae, tokens, k, batch_size):
    out = _solution("check_latent_summary")(model, sae, tokens, k, batch_size)
    positions = int((tokens != model.tokenizer.bos_token_id).sum())
    out["mean"] = out["mean"] * out["count"] / positions
    return out


def logit_diff_every_pair(logits, answer, wrong):
    return (logits[:, -1, answer] - logits[:, -1, wrong]).mean(-1)


def logit_diff_first_position(logits, answer, wrong):
    rows = torch.arange(logits.shape[0])
    return logits[rows, 0, answer] - logits[rows, 0, wrong]


def ablation_without_error_term(model, sae, task, latents):
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    effects = []
    with torch.no_grad(), model.saes(saes=[sae], use_error_term=False):
        base = task.logit_diff(model(task.clean)).mean()
        for latent in latents.tolist():

            def zero(acts, hook, latent=latent):
                acts = acts.clone()
                acts[:, -1, latent] = 0.0
                return acts

            logits = model.run_with_hooks(task.clean, fwd_hooks=[(name, zero)])
            effects.append(task.logit_diff(logits).mean() - base)
    return torch.stack(effects)


def ablation_at_every_position(model, sae, task, latents):
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    effects = []
    with torch.no_grad(), model.saes(saes=[sae], use_error_term=True):
        base = task.logit_diff(model(task.clean)).mean()
        for latent in latents.tolist():

            def zero(acts, hook, latent=latent):
                acts = acts.clone()
                acts[..., latent] = 0.0
                return acts

            logits = model.run_with_hooks(task.clean, fwd_hooks=[(name, zero)])
            effects.append(task.logit_diff(logits).mean() - base)
    return torch.stack(effects)


def attribution_of_the_mean(model, sae, task):
    """Back-propagates the mean logit difference: every entry divided by the batch size."""
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    kept = {}

    def keep(acts, hook):
        acts.retain_grad()
        kept["acts"] = acts
        return acts

    with torch.enable_grad(), model.saes(saes=[sae], use_error_term=True):
        task.logit_diff(
            model.run_with_hooks(task.clean, fwd_hooks=[(name, keep)])
        ).mean().backward()
    model.zero_grad(set_to_none=True)
    sae.zero_grad(set_to_none=True)
    return (-kept["acts"] * kept["acts"].grad).detach()


def attribution_without_the_minus(model, sae, task):
    return -_solution("check_attribution_patching")(model, sae, task)


def contributions_ignoring_the_decoder_norm(model, sae, tokens, latent):
    out = _solution("check_source_contributions")(model, sae, tokens, latent)
    return out / sae.W_dec[latent].norm().item()


def contributions_with_the_pattern_transposed(model, sae, tokens, latent):
    out = _solution("check_source_contributions")(model, sae, tokens, latent)
    pattern_scaled = out.transpose(-1, -2)
    return pattern_scaled


def greedy_without_steering(model, prompts, hook_name, direction, coefficient, new_tokens):
    return _solution("check_steered_greedy")(model, prompts, hook_name, direction, 0.0, new_tokens)


def greedy_steering_the_last_position_only(model, prompts, hook_name, direction, coefficient,
                                           new_tokens):  # fmt: skip
    def steer(activation, hook):
        activation = activation.clone()
        activation[:, -1] += coefficient * direction
        return activation

    tokens = prompts
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, steer)])
            tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens


def greedy_returning_only_the_continuation(model, prompts, hook_name, direction, coefficient,
                                           new_tokens):  # fmt: skip
    out = _solution("check_steered_greedy")(model, prompts, hook_name, direction, coefficient,
                                            new_tokens)  # fmt: skip
    return out[:, prompts.shape[1] :]


def top_logits_without_the_layernorm(model, sae, latent, k):
    return (sae.W_dec[latent] @ model.W_U).topk(k)


def dla_without_the_layernorm_weight(model, sae, task):
    hook = sae.cfg.metadata.hook_name
    with torch.no_grad():
        _, cache = model.run_with_cache(task.clean, names_filter=[hook, "ln_final.hook_scale"])
        acts = sae.encode(cache[hook][:, -1])
        scale = cache["ln_final.hook_scale"][:, -1]
        diff = model.W_U[:, task.answer] - model.W_U[:, task.wrong]
        return acts * (sae.W_dec @ diff).T / scale


def dla_without_the_scale(model, sae, task):
    hook = sae.cfg.metadata.hook_name
    with torch.no_grad():
        _, cache = model.run_with_cache(task.clean, names_filter=[hook, "ln_final.hook_scale"])
        scale = cache["ln_final.hook_scale"][:, -1]
    return _solution("check_direct_logit_attribution")(model, sae, task) * scale


def kl_reversed(clean_logits, new_logits):
    log_p, log_q = clean_logits.log_softmax(-1), new_logits.log_softmax(-1)
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def kl_of_unnormalised_logits(clean_logits, new_logits):
    return (clean_logits.softmax(-1) * (clean_logits - new_logits)).sum(-1)


def explained_variance_against_zero(x, x_hat):
    return float(1 - (x - x_hat).pow(2).sum() / x.pow(2).sum())


def explained_variance_per_row_mean(x, x_hat):
    per_row = 1 - (x - x_hat).pow(2).sum(-1) / (x - x.mean(0)).pow(2).sum(-1)
    return float(per_row.mean())


def fluency_off_by_one(model, tokens, start):
    with torch.no_grad():
        log_probs = model(tokens)[:, :-1].log_softmax(-1)
    losses = -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]
    return float(losses[:, start:].mean())


def fluency_same_position(model, tokens, start):
    with torch.no_grad():
        log_probs = model(tokens).log_softmax(-1)
    losses = -log_probs.gather(-1, tokens[..., None])[..., 0]
    return float(losses[:, start:].mean())


def topk_rescaling_after_topk(x, W_enc, b_enc, W_dec, b_dec, k, rescale):
    pre = (x - b_dec) @ W_enc + b_enc
    values, indices = pre.topk(k, dim=-1)
    out = torch.zeros_like(pre).scatter(-1, indices, values.relu())
    return out * W_dec.norm(dim=-1) if rescale else out


def topk_without_b_dec(x, W_enc, b_enc, W_dec, b_dec, k, rescale):
    pre = x @ W_enc + b_enc
    if rescale:
        pre = pre * W_dec.norm(dim=-1)
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


def topk_rescaled_by_a_mean_norm(x, W_enc, b_enc, W_dec, b_dec, k, rescale):
    pre = ((x - b_dec) @ W_enc + b_enc).relu()
    if rescale:
        pre = pre * W_dec.norm(dim=0).mean()
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values)


def agreement_swapped(acts_a, acts_b):
    out = _solution("check_firing_agreement")(acts_a, acts_b)
    out["recall"], out["precision"] = out["precision"], out["recall"]
    return out


def agreement_correlating_everywhere(acts_a, acts_b):
    out = _solution("check_firing_agreement")(acts_a, acts_b)
    pair = torch.stack([acts_a.flatten().float(), acts_b.flatten().float()])
    out["value_corr"] = float(torch.corrcoef(pair)[0, 1])
    return out


def loss_with_the_error_term(model, sae, tokens):
    with torch.no_grad():
        return model.run_with_saes(tokens, saes=[sae], return_type="loss", use_error_term=True)


def loss_of_the_encoder_only(model, sae, tokens):
    name = sae.cfg.metadata.hook_name
    with torch.no_grad():
        return model.run_with_hooks(
            tokens, return_type="loss", fwd_hooks=[(name, lambda a, hook: a + sae.b_dec)]
        )


def bottom_logits_without_the_layernorm(model, sae, latent, k):
    found = (sae.W_dec[latent] @ model.W_U).topk(k, largest=False)
    return found.values, found.indices


def bottom_logits_reversed(model, sae, latent, k):
    values, ids = _solution("check_bottom_logits")(model, sae, latent, k)
    return values.flip(0), ids.flip(0)


def repeat_gain_counting_bos(model, sae, tokens):
    hook = sae.cfg.metadata.hook_name
    half = (tokens.shape[1] - 1) // 2
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hook)
        acts = sae.encode(cache[hook]).cpu()
    return acts[:, half + 1 :].mean(dim=(0, 1)) - acts[:, : half + 1].mean(dim=(0, 1))


def repeat_gain_reversed(model, sae, tokens):
    return -_solution("check_repeat_gain")(model, sae, tokens)


def _latents(model, sae, tokens):
    hook = sae.cfg.metadata.hook_name
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hook)
        return sae.encode(cache[hook])


def l0_counting_zeros(model, sae, tokens):
    acts = _latents(model, sae, tokens)[tokens != model.tokenizer.bos_token_id]
    return float((acts >= 0).sum(-1).float().mean())


def _thresholds(pre, acts, shift=0, from_acts=False, all_rows=True):
    n = pre.shape[0]
    counts = (acts > 0).sum(0)
    ordered = (acts if from_acts else pre).sort(dim=0, descending=True).values
    index = (counts + shift).clamp(min=0, max=n - 1)
    threshold = ordered.gather(0, index[None])[0]
    return torch.where(counts >= n, ordered[-1] - 1.0, threshold) if all_rows else threshold


def thresholds_at_the_c_th_largest(pre, acts):
    return _thresholds(pre, acts, shift=-1)


def thresholds_from_the_activations(pre, acts):
    return _thresholds(pre, acts, from_acts=True)


def thresholds_without_the_every_row_case(pre, acts):
    return _thresholds(pre, acts, all_rows=False)


def thresholds_by_quantile(pre, acts):
    share = (acts > 0).float().mean(0)
    return torch.stack([pre[:, i].quantile(1 - float(share[i])) for i in range(pre.shape[1])])


def l0_counting_bos(model, sae, tokens):
    acts = _latents(model, sae, tokens)
    return float((acts > 0).sum(-1).float().mean())


def l0_leaving_out_position_0_only(model, sae, tokens):
    acts = _latents(model, sae, tokens)[:, 1:]
    return float((acts > 0).sum(-1).float().mean())


def l0_summed_activations(model, sae, tokens):
    acts = _latents(model, sae, tokens)[tokens != model.tokenizer.bos_token_id]
    return float(acts.sum(-1).mean())


def dead_counting_bos(model, sae, tokens):
    acts = _latents(model, sae, tokens).flatten(0, 1)
    return float(((acts > 0).sum(0) == 0).float().mean())


def dead_as_a_count(model, sae, tokens):
    acts = _latents(model, sae, tokens)[tokens != model.tokenizer.bos_token_id]
    return float(((acts > 0).sum(0) == 0).sum())


def ce_splicing_bos_too(model, sae, tokens):
    with torch.no_grad():
        return float(model.run_with_saes(tokens, saes=[sae], return_type="loss"))


def ce_clean_model(model, sae, tokens):
    with torch.no_grad():
        return float(model(tokens, return_type="loss"))


def list_url_with_integer_indices(neuronpedia_id, indices, name):
    import json
    import urllib.parse

    model_id, source = neuronpedia_id.split("/", 1)
    items = [{"modelId": model_id, "layer": source, "index": i} for i in indices]
    return ("https://www.neuronpedia.org/quick-list/?name=" + urllib.parse.quote(name)
            + "&features=" + urllib.parse.quote(json.dumps(items)))  # fmt: skip


def list_url_with_an_unquoted_name(neuronpedia_id, indices, name):
    import json
    import urllib.parse

    model_id, source = neuronpedia_id.split("/", 1)
    items = [{"modelId": model_id, "layer": source, "index": str(i)} for i in indices]
    return ("https://www.neuronpedia.org/quick-list/?name=" + name
            + "&features=" + urllib.parse.quote(json.dumps(items)))  # fmt: skip


def top_activations_unsorted(payload, k):
    return [
        (r["tokens"][r["maxValueTokenIndex"]], r["maxValue"]) for r in payload["activations"][:k]
    ]


def top_activations_one_token_late(payload, k):
    records = sorted(payload["activations"], key=lambda r: -r["maxValue"])[:k]
    return [(r["tokens"][min(r["maxValueTokenIndex"] + 1, len(r["tokens"]) - 1)], r["maxValue"])
            for r in records]  # fmt: skip


def rank_hits_keeping_duplicates(payload, k):
    rows = [(r["layer"], int(r["index"]), r.get("cosine_similarity", r.get("score")))
            for r in payload["results"]]  # fmt: skip
    rows = [r for r in rows if r[2] is not None]
    return sorted(rows, key=lambda r: (-r[2], r[0], r[1]))[:k]


def rank_hits_first_score(payload, k):
    best = {}
    for r in payload["results"]:
        score = r.get("cosine_similarity", r.get("score"))
        if score is not None:
            best.setdefault((r["layer"], int(r["index"])), score)
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1]))
    return [(a, b, s) for (a, b), s in ranked[:k]]



def head_split_summed_over_prompts(delta, grad, W, n_heads):
    d_sae, d_in = W.shape
    g = grad.reshape(*grad.shape[:2], n_heads, d_in // n_heads)
    along = torch.einsum("bphd,ihd->bpih", g, W.reshape(d_sae, n_heads, -1))
    return (delta[..., None] * along).sum((0, 1))


def head_split_heads_transposed(delta, grad, W, n_heads):
    d_sae, d_in = W.shape
    g = grad.reshape(*grad.shape[:2], d_in // n_heads, n_heads).transpose(-1, -2)
    dec = W.reshape(d_sae, d_in // n_heads, n_heads).transpose(-1, -2)
    along = torch.einsum("bphd,ihd->bpih", g, dec)
    return (delta[..., None] * along).sum((0, 1)) / delta.shape[0]


WRONG: dict[str, list[Callable]] = {
    "check_list_url": [list_url_with_integer_indices, list_url_with_an_unquoted_name],
    "check_top_activations": [top_activations_unsorted, top_activations_one_token_late],
    "check_rank_hits": [rank_hits_keeping_duplicates, rank_hits_first_score],
    "check_top_logits": [
        top_logits_smallest,
        top_logits_from_the_encoder,
        top_logits_with_the_decoder_bias,
        top_logits_without_the_layernorm,
    ],
    "check_direct_logit_attribution": [
        dla_without_the_layernorm_weight,
        dla_without_the_scale,
    ],
    "check_head_norms": [head_norms_transposed, head_norms_squared],
    "check_head_split": [head_split_summed_over_prompts, head_split_heads_transposed],
    "check_steering_hook": [steering_normalising_the_direction, steering_the_last_position_only],
    "check_jumprelu_encode": [
        jumprelu_always_subtracting_b_dec,
        jumprelu_firing_at_the_threshold,
        jumprelu_without_relu,
    ],
    "check_latent_summary": [
        summary_counting_bos,
        summary_top_k_of_the_last_batch,
        summary_mean_over_all_positions,
    ],
    "check_kl_divergence": [kl_reversed, kl_of_unnormalised_logits],
    "check_explained_variance": [
        explained_variance_against_zero,
        explained_variance_per_row_mean,
    ],
    "check_generated_loss": [fluency_off_by_one, fluency_same_position],
    "check_topk_encode": [
        topk_rescaling_after_topk,
        topk_without_b_dec,
        topk_rescaled_by_a_mean_norm,
    ],
    "check_firing_agreement": [agreement_swapped, agreement_correlating_everywhere],
    "check_spliced_loss": [loss_with_the_error_term, loss_of_the_encoder_only],
    "check_bottom_logits": [bottom_logits_without_the_layernorm, bottom_logits_reversed],
    "check_repeat_gain": [repeat_gain_counting_bos, repeat_gain_reversed],
    "check_l0": [
        l0_counting_zeros,
        l0_summed_activations,
        l0_counting_bos,
        l0_leaving_out_position_0_only,
    ],
    "check_dead_fraction": [dead_counting_bos, dead_as_a_count],
    "check_topk_thresholds": [
        thresholds_at_the_c_th_largest,
        thresholds_from_the_activations,
        thresholds_without_the_every_row_case,
        thresholds_by_quantile,
    ],
    "check_ce_with_sae": [ce_splicing_bos_too, ce_clean_model],
    "check_logit_diff": [logit_diff_every_pair, logit_diff_first_position],
    "check_ablation_effects": [ablation_without_error_term, ablation_at_every_position],
    "check_attribution_patching": [attribution_of_the_mean, attribution_without_the_minus],
    "check_source_contributions": [
        contributions_ignoring_the_decoder_norm,
        contributions_with_the_pattern_transposed,
    ],
    "check_steered_greedy": [
        greedy_without_steering,
        greedy_steering_the_last_position_only,
        greedy_returning_only_the_continuation,
    ],
}
#: checker -> (chapter, the name its solution cell defines)
SOLUTIONS: dict[str, tuple[str, str]] = {
    "check_list_url": ("book/intro/08_neuronpedia", "quick_list_url"),
    "check_top_activations": ("book/intro/08_neuronpedia", "top_activations"),
    "check_rank_hits": ("book/intro/08_neuronpedia", "rank_hits"),
    "check_top_logits": ("book/intro/03_latent_dashboards", "top_logits"),
    "check_head_norms": ("book/intro/05_attention_saes", "head_norms"),
    "check_head_split": ("book/intro/05_attention_saes", "split_by_head_blocks"),
    "check_steering_hook": ("book/intro/06_steering", "make_steering_hook"),
    "check_jumprelu_encode": ("book/intro/07_architectures", "jumprelu_encode"),
    "check_latent_summary": ("book/intro/03_latent_dashboards", "latent_summary"),
    "check_logit_diff": ("book/intro/04_finding_latents", "logit_diff"),
    "check_l0": ("book/intro/02_loading_saes", "measure_l0"),
    "check_dead_fraction": ("book/intro/02_loading_saes", "dead_share"),
    "check_ce_with_sae": ("book/intro/02_loading_saes", "loss_with_sae_bos_clean"),
    "check_topk_thresholds": ("book/intro/07_architectures", "fit_thresholds"),
    "check_repeat_gain": ("book/intro/05_attention_saes", "repeat_gain"),
    "check_spliced_loss": ("book/intro/01_running_saes", "loss_with_sae"),
    "check_bottom_logits": ("book/intro/03_latent_dashboards", "bottom_logits"),
    "check_firing_agreement": ("book/intro/07_architectures", "agreement"),
    "check_topk_encode": ("book/intro/07_architectures", "topk_encode"),
    "check_kl_divergence": ("book/intro/01_running_saes", "kl_divergence"),
    "check_explained_variance": ("book/intro/01_running_saes", "explained_variance"),
    "check_generated_loss": ("book/intro/06_steering", "fluency_loss"),
    "check_direct_logit_attribution": ("book/intro/04_finding_latents", "my_dla"),
    "check_ablation_effects": ("book/intro/04_finding_latents", "ablation_loop"),
    "check_attribution_patching": (
        "book/intro/04_finding_latents",
        "attribution_patching_by_hand",
    ),
    "check_source_contributions": ("book/intro/05_attention_saes", "source_contributions"),
    "check_steered_greedy": ("book/intro/06_steering", "steered_greedy"),
}


def _solution(name: str) -> Callable:
    return load_solution(*SOLUTIONS[name])


#: checker -> its arguments after the reader's function, from the tiny profile
EXTRA_ARGS: dict[str, Callable[[Any], tuple]] = {
    "check_top_logits": lambda p: (p.model, p.saes["resid"]),
    "check_latent_summary": lambda p: (p.model, p.saes["resid"], p.tokens(8, 32)),
    "check_direct_logit_attribution": lambda p: (p.model, p.saes["resid"], p.task(n=4)),
    "check_spliced_loss": lambda p: (p.model, p.saes["resid"], p.tokens(2, 24)),
    "check_bottom_logits": lambda p: (p.model, p.saes["resid"]),
    "check_repeat_gain": lambda p: (p.model, p.saes["attn"], _repeated(p)),
    "check_l0": lambda p: (p.model, p.saes["resid"], p.tokens(4, 32)),
    "check_dead_fraction": lambda p: (p.model, p.saes["resid"], p.tokens(4, 32)),
    "check_ce_with_sae": lambda p: (p.model, p.saes["resid"], p.tokens(4, 32)),
    "check_generated_loss": lambda p: (p.model, p.tokens(2, 16)),
    "check_ablation_effects": lambda p: (p.model, p.saes["resid"], p.task(n=4)),
    "check_attribution_patching": lambda p: (p.model, p.saes["resid"], p.task(n=4)),
    "check_source_contributions": lambda p: (p.model, p.saes["attn"], p.tokens(4, 24)),
    "check_steered_greedy": lambda p: (p.model, p.saes["resid"], p.tokens(2, 8), 0, 5.0),
}


def _repeated(p: Any) -> torch.Tensor:
    from saebook.induction import repeated_tokens

    pool = torch.arange(1, min(200, p.model.cfg.d_vocab))
    bos = p.model.tokenizer.bos_token_id
    return repeated_tokens(4, 6, pool, bos, generator=torch.Generator().manual_seed(0))


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
