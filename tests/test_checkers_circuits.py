"""Checkers of part 5 (circuits) reject stubs and plausible mistakes, and accept the book's
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

PART = "circuits"


@pytest.fixture(scope="session")
def tiny():
    from saebook import profiles

    return profiles.load("tiny")


# --- wrong implementations -------------------------------------------------------------------


def jacobian_transposed(x0, directions, W_enc, b_enc, values):
    pre = (x0 + values @ directions) @ W_enc + b_enc
    return ((pre > 0).to(pre.dtype)[:, None] * (directions @ W_enc).T).T.contiguous()


def jacobian_ignoring_the_relu(x0, directions, W_enc, b_enc, values):
    return (directions @ W_enc).T


def de_embedding_with_position_0(W_E, W_pos, W_enc, b_enc, eps):
    x = W_E + W_pos.mean(0)
    x = x - x.mean(-1, keepdim=True)
    x = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return (x @ W_enc + b_enc).T


def de_embedding_without_centering(W_E, W_pos, W_enc, b_enc, eps):
    x = W_E + W_pos[1:].mean(0)
    x = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return (x @ W_enc + b_enc).T


def influence_first_order_only(adjacency):
    a = adjacency.abs()
    return a / a.sum(1, keepdim=True).clamp(min=1e-30)


def influence_without_normalising(adjacency):
    a = adjacency.abs().double()
    eye = torch.eye(a.shape[0], dtype=a.dtype)
    return (a @ torch.linalg.inv(eye - a)).to(adjacency.dtype)


def _attribution(model, sae, tokens, pos, latent, times_input=True):
    saved = {}

    def leaf(act, hook):
        saved["embed"] = act.detach().requires_grad_(True)
        return saved["embed"]

    def keep(act, hook):
        saved["x"] = act

    with torch.enable_grad():
        hooks = [("hook_embed", leaf), (sae.cfg.metadata.hook_name, keep)]
        model.run_with_hooks(tokens[None], fwd_hooks=hooks)
        value = sae.encode(saved["x"][0])[pos, latent]
        (grad,) = torch.autograd.grad(value, saved["embed"], allow_unused=True)
    if grad is None:
        return torch.zeros(tokens.numel())
    if not times_input:
        return grad[0].norm(dim=-1)
    return (grad[0] * saved["embed"][0]).sum(-1).detach()


def attribution_gradient_norm_only(model, sae, tokens, pos, latent):
    return _attribution(model, sae, tokens, pos, latent, times_input=False)


def attribution_at_the_last_position_always(model, sae, tokens, pos, latent):
    return _attribution(model, sae, tokens, -1, latent)


def forward_differences(f, values, columns, eps):
    out = []
    for c in columns:
        step = torch.zeros_like(values)
        step[c] = eps
        out.append((f(values + step) - f(values)) / eps)
    return torch.stack(out, dim=1)


def differences_stacked_as_rows(f, values, columns, eps):
    out = []
    for c in columns:
        step = torch.zeros_like(values)
        step[c] = eps
        out.append((f(values + step) - f(values - step)) / (2 * eps))
    return torch.stack(out, dim=0)


def _splice(model, transcoder, tokens, skip_bos=True, read_output=False):
    meta = transcoder.cfg.metadata
    keep = (tokens != model.tokenizer.bos_token_id)[..., None]
    if not skip_bos:
        keep = torch.ones_like(keep)
    stored = {}

    def read(act, hook):
        stored["x"] = act

    def write(act, hook):
        x = act if read_output else stored["x"]
        return torch.where(keep, transcoder.decode(transcoder.encode(x)), act)

    with torch.no_grad():
        return model.run_with_hooks(tokens, fwd_hooks=[(meta.hook_name, read),
                                                       (meta.hook_name_out, write)])  # fmt: skip


def splice_at_bos_too(model, transcoder, tokens):
    return _splice(model, transcoder, tokens, skip_bos=False)


def splice_reading_the_mlp_output(model, transcoder, tokens):
    return _splice(model, transcoder, tokens, read_output=True)


def salient_by_logit_order_of_ids(logits, max_n, prob_mass):
    probs = logits.float().softmax(-1)
    top = probs.topk(min(max_n, probs.numel()))
    n = min(int((top.values.cumsum(0) < prob_mass).sum()) + 1, top.values.numel())
    ids = top.indices[:n].sort().values
    return ids, probs[ids]


def salient_stopping_before_the_crossing_token(logits, max_n, prob_mass):
    probs = logits.float().softmax(-1)
    top = probs.topk(min(max_n, probs.numel()))
    n = max(1, int((top.values.cumsum(0) < prob_mass).sum()))
    return top.indices[:n], top.values[:n]


def logit_influence_one_step(adjacency, logit_weights):
    a = adjacency.abs()
    a = a / a.sum(1, keepdim=True).clamp(min=1e-30)
    return logit_weights @ a


def logit_influence_transposed(adjacency, logit_weights):
    return (_paths(adjacency) @ logit_weights.double()).to(adjacency.dtype)


def _paths(adjacency):
    a = adjacency.abs().double()
    a = torch.where(a.sum(1, keepdim=True) > 0, a / a.sum(1, keepdim=True).clamp(min=1e-30), 0 * a)
    eye = torch.eye(a.shape[0], dtype=a.dtype)
    return a @ torch.linalg.inv(eye - a)


def overlap_chance_including_itself(scores, fired, k):
    tops = [set(r.tolist()) for r in scores.topk(k, dim=-1).indices]
    share = [[sum(t in tops[b] for t in f) / len(f) for b in range(len(tops))] for f in fired]
    return [row[a] for a, row in enumerate(share)], [sum(row) / len(row) for row in share]


def overlap_of_unique_tokens(scores, fired, k):
    tops = [set(r.tolist()) for r in scores.topk(k, dim=-1).indices]
    n = len(fired)

    def share(top, toks):
        return len(set(toks) & top) / len(set(toks))

    overlap = [share(tops[a], fired[a]) for a in range(n)]
    chance = [sum(share(tops[b], fired[a]) for b in range(n) if b != a) / (n - 1) for a in range(n)]
    return overlap, chance


def _edge(model, tc, tokens, source_pos, source_feature, token, freeze=("attn.hook_pattern",
          "hook_scale"), freeze_mlps=True, times_activation=True, centre=True):  # fmt: skip
    hook_in, hook_out = tc.cfg.metadata.hook_name, tc.cfg.metadata.hook_name_out
    frozen = [h for h in model.hook_dict if freeze and h.endswith(tuple(freeze))]
    mlps = [h for h in model.hook_dict if freeze_mlps and h.endswith("hook_mlp_out")]
    mlps = [h for h in mlps if h != hook_out]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None])
        acts = tc.encode(cache[hook_in])[0]
        error = cache[hook_out][0] - tc.decode(acts)
    leaf = acts.clone().requires_grad_(True)
    hooks = [(h, lambda a, hook: cache[hook.name]) for h in frozen + mlps]
    hooks.append((hook_out, lambda a, hook: (tc.decode(leaf) + error)[None]))
    with torch.enable_grad():
        last = model.run_with_hooks(tokens[None], fwd_hooks=hooks)[0, -1]
        target = last[token] - (last.mean() if centre else 0)
        (grad,) = torch.autograd.grad(target, leaf)
    scale = acts[source_pos, source_feature] if times_activation else 1.0
    return float(grad[source_pos, source_feature] * scale)


def edge_with_live_attention(*args):
    return _edge(*args, freeze=("hook_scale",))


def edge_with_live_layernorm(*args):
    return _edge(*args, freeze=("attn.hook_pattern",))


def edge_with_the_other_mlps_live(*args):
    return _edge(*args, freeze_mlps=False)


def edge_gradient_only(*args):
    return _edge(*args, times_activation=False)


def edge_to_the_raw_logit(*args):
    return _edge(*args, centre=False)


def _embedding_edge(model, tc, tokens, source_pos, target_pos, target_feature,
                    freeze=("attn.hook_pattern", "hook_scale", "hook_mlp_out"),
                    with_position=True, dot=True):  # fmt: skip
    frozen = [h for h in model.hook_dict if h.endswith(freeze)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None])
    embed = cache["hook_embed"] + (cache["hook_pos_embed"] if with_position else 0)
    leaf = embed.clone().requires_grad_(True)
    read = {}
    hooks = [(h, lambda a, hook: cache[hook.name]) for h in frozen]
    hooks.append(("hook_embed", lambda a, hook: leaf))
    if with_position:
        hooks.append(("hook_pos_embed", lambda a, hook: torch.zeros_like(a)))
    hooks.append((tc.cfg.metadata.hook_name, lambda a, hook: read.update(x=a)))
    with torch.enable_grad():
        model.run_with_hooks(tokens[None], fwd_hooks=hooks)
        x = tc.process_sae_in(read["x"][0, target_pos])
        pre = x @ tc.W_enc[:, target_feature] + tc.b_enc[target_feature]
        (grad,) = torch.autograd.grad(pre, leaf)
    g, e = grad[0, source_pos], embed[0, source_pos]
    return float((g * e).sum() if dot else g.norm())


def embedding_edge_with_live_attention(*args):
    return _embedding_edge(*args, freeze=("hook_scale", "hook_mlp_out"))


def embedding_edge_with_live_layernorm(*args):
    return _embedding_edge(*args, freeze=("attn.hook_pattern", "hook_mlp_out"))


def embedding_edge_without_the_position_embedding(*args):
    return _embedding_edge(*args, with_position=False)


def embedding_edge_gradient_norm(*args):
    return _embedding_edge(*args, dot=False)


def splice_without_a_copy(sae, x):
    acts = sae.encode(x)
    error = x - sae.decode(acts)
    return acts, error, sae.decode(acts) + error


def splice_with_a_detached_error(sae, x):
    acts = sae.encode(x)
    error = (x - sae.decode(acts)).detach()
    acts = acts.clone()
    return acts, error, sae.decode(acts) + error


def attribution_averaged_over_positions(acts_grad, error_grad, delta_acts, delta_error):
    latents = (acts_grad * delta_acts).mean((0, 1))
    return torch.cat([latents, (error_grad * delta_error).sum((1, 2)).mean()[None]])


def attribution_summed_over_prompts(acts_grad, error_grad, delta_acts, delta_error):
    latents = (acts_grad * delta_acts).sum((0, 1))
    return torch.cat([latents, (error_grad * delta_error).sum()[None]])


def faithfulness_without_the_empty_baseline(m_circuit, m_full, m_empty):
    return m_circuit / m_full


def faithfulness_over_the_full_metric(m_circuit, m_full, m_empty):
    return (m_circuit - m_empty) / m_full


WRONG: dict[str, list[Callable]] = {
    "check_prediction_overlap": [overlap_chance_including_itself, overlap_of_unique_tokens],
    "check_latent_jacobian": [jacobian_transposed, jacobian_ignoring_the_relu],
    "check_de_embedding": [de_embedding_with_position_0, de_embedding_without_centering],
    "check_influence_matrix": [influence_first_order_only, influence_without_normalising],
    "check_token_attribution": [
        attribution_gradient_norm_only,
        attribution_at_the_last_position_always,
    ],
    "check_finite_difference": [forward_differences, differences_stacked_as_rows],
    "check_spliced_logits": [splice_at_bos_too, splice_reading_the_mlp_output],
    "check_salient_logits": [
        salient_by_logit_order_of_ids,
        salient_stopping_before_the_crossing_token,
    ],
    "check_logit_influence": [logit_influence_one_step, logit_influence_transposed],
    "check_graph_edge": [
        edge_with_live_attention,
        edge_with_live_layernorm,
        edge_with_the_other_mlps_live,
        edge_gradient_only,
        edge_to_the_raw_logit,
    ],
    "check_embedding_edge": [
        embedding_edge_with_live_attention,
        embedding_edge_with_live_layernorm,
        embedding_edge_without_the_position_embedding,
        embedding_edge_gradient_norm,
    ],
    "check_error_node_splice": [splice_without_a_copy, splice_with_a_detached_error],
    "check_node_attribution": [
        attribution_averaged_over_positions,
        attribution_summed_over_prompts,
    ],
    "check_faithfulness": [
        faithfulness_without_the_empty_baseline,
        faithfulness_over_the_full_metric,
    ],
}
#: checker -> (chapter, the name its solution cell defines)
SOLUTIONS: dict[str, tuple[str, str]] = {
    "check_latent_jacobian": ("book/circuits/01_latent_gradients", "latent_jacobian_1layer"),
    "check_token_attribution": ("book/circuits/01_latent_gradients", "latent_token_attribution"),
    "check_finite_difference": ("book/circuits/01_latent_gradients", "central_differences"),
    "check_spliced_logits": ("book/circuits/02_transcoders", "splice_logits"),
    "check_de_embedding": ("book/circuits/02_transcoders", "de_embedding_scores"),
    "check_prediction_overlap": ("book/circuits/02_transcoders", "overlap_and_chance"),
    "check_influence_matrix": ("book/circuits/03_attribution_graphs", "influence"),
    "check_salient_logits": ("book/circuits/03_attribution_graphs", "choose_logits"),
    "check_logit_influence": ("book/circuits/03_attribution_graphs", "influence_on_logits"),
    "check_graph_edge": ("book/circuits/03_attribution_graphs", "edge_to_logit"),
    "check_embedding_edge": ("book/circuits/03_attribution_graphs", "edge_from_embedding"),
    "check_error_node_splice": ("book/circuits/04_sparse_feature_circuits", "splice"),
    "check_node_attribution": ("book/circuits/04_sparse_feature_circuits", "node_attribution"),
    "check_faithfulness": ("book/circuits/04_sparse_feature_circuits", "faithfulness"),
}
#: checker -> its arguments after the reader's function, from the tiny profile
EXTRA_ARGS: dict[str, Callable[[Any], tuple]] = {
    "check_token_attribution": lambda p: (p.model, p.saes["resid"], p.tokens(1, 12, seed=1)[0]),
    "check_spliced_logits": lambda p: (p.model, p.saes["transcoder"], p.tokens(2, 16, seed=1)),
    "check_graph_edge": lambda p: _edge_args(p),
    "check_embedding_edge": lambda p: _edge_args(p),
    "check_error_node_splice": lambda p: (p.saes["mlp"],),
}
_EDGE_ARGS: dict[int, tuple] = {}


def _edge_args(p) -> tuple:
    """The tiny model, its transcoder, a short prompt and its graph (built once)."""
    if id(p) not in _EDGE_ARGS:
        from saebook import attribution_graphs as ag

        tokens = p.tokens(1, 10, seed=1)[0]
        tc = p.saes["transcoder"]
        graph = ag.attribution_graph(p.model, [tc], tokens, max_logits=3, progress=False)
        _EDGE_ARGS[id(p)] = (p.model, tc, tokens, graph)
    return _EDGE_ARGS[id(p)]


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


@pytest.mark.parametrize("name", ["check_graph_edge", "check_embedding_edge"])
def test_edge_checkers_fail_as_content_on_a_graph_without_latents(name: str, tiny) -> None:
    import dataclasses

    model, tc, tokens, graph = _edge_args(tiny)
    assert (graph.nodes["kind"] == "latent").any()
    bare = dataclasses.replace(graph, nodes=graph.nodes[graph.nodes["kind"] != "latent"])
    chapter, defined = SOLUTIONS[name]
    with pytest.raises(AssertionError, match="no active latent of the layer-.* transcoder"):
        getattr(checks, name)(load_solution(chapter, defined), model, tc, tokens, bare)


@pytest.mark.parametrize("d_head", [None, 4])
def test_error_node_splice_on_an_sae_that_reshapes_hook_z(d_head) -> None:
    """gpt2's attention SAE takes (batch, seq, n_heads, d_head) and flattens it itself: the
    checker feeds it that shape (issue 15); the book's solution passes, wrong ones still fail."""
    from sae_lens import StandardSAE, StandardSAEConfig

    sae = StandardSAE(StandardSAEConfig(d_in=12, d_sae=20, reshape_activations="hook_z"))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    if d_head is not None:  # the split a forward pass at the hook left (else: one head)
        sae.encode(torch.zeros(1, 1, 12 // d_head, d_head))
        assert sae.d_head == d_head
    chapter, defined = SOLUTIONS["check_error_node_splice"]
    checks.check_error_node_splice(load_solution(chapter, defined), sae)
    for wrong in WRONG["check_error_node_splice"]:
        assert_wrong_rejected(checks.check_error_node_splice, wrong, sae)
