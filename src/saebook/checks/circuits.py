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


# --- Part 5, exercises added for issue 17 ---------------------------------------------------


def check_token_attribution(fn: Callable[..., Tensor], model, sae, tokens: Tensor) -> None:
    """Check ``fn(model, sae, tokens, pos, latent) -> (seq,)`` gradient x input against
    :func:`saebook.latent_gradients.token_attribution`.

    Entry ``p`` is the token embedding at ``p`` dotted with the gradient of the latent's
    activation at ``pos`` with respect to ``hook_embed`` at ``p``. Cases: the two most active
    latents of ``sae`` at the last position of ``tokens`` (a 1-D prompt), the most active one
    at the middle position, and a latent that is silent at the last position (all zeros).
    """
    from saebook.latent_gradients import token_attribution

    tokens = tokens.flatten()
    seq = tokens.numel()
    if seq < 3:
        raise ValueError(f"tokens must hold at least 3 positions, got {seq}")
    hook = sae.cfg.metadata.hook_name
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=hook)
        acts = sae.encode(cache[hook][0]).flatten(1)  # (seq, d_sae)
    last, middle = acts[-1], acts[seq // 2]
    cases: list[Case] = [
        (f"latent {int(i)} at the last position", (model, sae, tokens, seq - 1, int(i)), {})
        for i in last.topk(2).indices
    ]
    cases.append(("the middle position", (model, sae, tokens, seq // 2, int(middle.argmax())), {}))
    silent = torch.nonzero(last <= 0).flatten()
    if silent.numel():
        cases.append(("a silent latent", (model, sae, tokens, seq - 1, int(silent[0])), {}))
    ref = token_attribution(model, sae, tokens, seq - 1, int(last.argmax()))
    scale = float(ref.abs().max())

    def reader(*args):
        return torch.as_tensor(fn(*args)).detach().float().cpu()

    check_function(reader, token_attribution, cases, atol=1e-4 * max(scale, 1.0), rtol=1e-3)


def check_finite_difference(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(f, values, columns, eps) -> (n_out, len(columns))`` central differences
    against :func:`saebook.latent_gradients.finite_difference`.

    Column ``j`` is ``(f(values + eps e_c) - f(values - eps e_c)) / (2 eps)`` with
    ``c = columns[j]``. Cases use a random ReLU layer, a linear map (exact) and one column.
    """
    from saebook.latent_gradients import ActiveLatents, LatentMap, finite_difference

    g = _generator(16)
    w = torch.randn(5, 7, generator=g)
    b = torch.randn(7, generator=g)
    v = torch.rand(5, generator=g) + 0.5

    def relu_layer(x: Tensor) -> Tensor:
        return torch.relu(x @ w + b)

    def linear(x: Tensor) -> Tensor:
        return x @ w

    def squares(x: Tensor) -> Tensor:
        return torch.stack([x.pow(2).sum(), x[0] * x[1]])

    def reference(f, values, columns, eps):
        empty = ActiveLatents(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                              torch.zeros(0))  # fmt: skip
        lmap = LatentMap(f, values, empty, empty, torch.zeros(0, dtype=torch.long),
                         torch.zeros(0, dtype=torch.long), "up", "down", False)  # fmt: skip
        return finite_difference(lmap, columns, eps)

    cases: list[Case] = [
        ("ReLU layer, all columns", (relu_layer, v, [0, 1, 2, 3, 4], 1e-2), {}),
        ("linear map", (linear, v, [4, 0], 1e-1), {}),
        ("one column", (relu_layer, v, [2], 1e-3), {}),
        ("a quadratic (exact for central differences)", (squares, v, [0, 1], 0.5), {}),
    ]
    check_function(fn, reference, cases, atol=1e-4, rtol=1e-3)


def check_spliced_logits(fn: Callable[..., Tensor], model, transcoder, tokens: Tensor) -> None:
    """Check ``fn(model, transcoder, tokens) -> (batch, seq, d_vocab)`` logits against
    :func:`saebook.transcoders.spliced_logits` (SAELens' ``run_with_saes``).

    The transcoder reads its input hook and its output replaces the MLP output at every
    non-BOS position. Cases: the given tokens, one sequence, and the tokens with the BOS
    column dropped (so no position is exempt).
    """
    from saebook.transcoders import spliced_logits

    def reader(*args):
        return torch.as_tensor(fn(*args)).detach().float().cpu()

    def reference(*args):
        return spliced_logits(*args).float().cpu()

    cases: list[Case] = [
        ("the given tokens", (model, transcoder, tokens), {}),
        ("one sequence", (model, transcoder, tokens[:1]), {}),
        ("no BOS column", (model, transcoder, tokens[:, 1:]), {}),
    ]
    scale = float(reference(model, transcoder, tokens[:1]).abs().max())
    check_function(reader, reference, cases, atol=1e-4 * max(scale, 1.0), rtol=1e-4)


def check_salient_logits(fn: Callable[..., tuple[Tensor, Tensor]]) -> None:
    """Check ``fn(logits, max_n, prob_mass) -> (token ids, probabilities)`` against
    :func:`saebook.attribution_graphs.salient_logits`: the most likely tokens, most likely
    first, until their probabilities reach ``prob_mass`` (the token that crosses it
    included), at most ``max_n``."""
    from saebook.attribution_graphs import salient_logits

    g = _generator(14)
    logits = torch.randn(40, generator=g) * 2
    peaked = logits.clone()
    peaked[5] = 20.0
    cases: list[Case] = [
        ("random, 95%", (logits, 10, 0.95), {}),
        ("random, 50%", (logits, 10, 0.5), {}),
        ("max_n binds", (logits, 3, 0.99), {}),
        ("one dominant token", (peaked, 10, 0.95), {}),
        ("prob_mass 1", (logits, 40, 1.0), {}),
    ]
    check_function(lambda *a: tuple(fn(*a)), salient_logits, cases)


def check_logit_influence(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(adjacency, logit_weights) -> (n,)`` against
    :func:`saebook.attribution_graphs.logit_influence`: ``logit_weights @ B`` with ``B`` the
    influence matrix of the row-normalised ``|adjacency|``."""
    from saebook.attribution_graphs import logit_influence

    g = _generator(15)
    dag = torch.randn(6, 6, generator=g).tril(-1)
    w = torch.tensor([0.0, 0, 0, 0, 0.7, 0.3])
    chain = torch.tensor([[0.0, 0, 0], [2.0, 0, 0], [0, -3.0, 0]])
    cases: list[Case] = [
        ("random graph, two logits", (dag, w), {}),
        ("chain", (chain, torch.tensor([0.0, 0.0, 1.0])), {}),
        ("scaled weights scale the result", (dag, 3 * w), {}),
        ("no logit weight", (dag, torch.zeros(6)), {}),
    ]
    check_function(fn, logit_influence, cases)


def check_prediction_overlap(fn: Callable[..., tuple]) -> None:
    """Check ``fn(scores, fired, k) -> (overlap, chance)`` (two lists) against
    :func:`saebook.transcoders.prediction_overlap`: the share of each latent's activating
    tokens among its own top-``k`` scored tokens, and the mean share under every other
    latent's top ``k``."""
    from saebook.transcoders import prediction_overlap

    g = _generator(17)
    scores = torch.randn(4, 30, generator=g)
    top = scores.topk(5, dim=-1).indices
    fired = [top[0, :3].tolist() + [29, 28], top[1].tolist(), [0, 1, 2], top[3, :1].tolist() * 4]
    cases: list[Case] = [
        ("k=5", (scores, fired, 5), {}),
        ("k=1", (scores, fired, 1), {}),
        ("k = d_vocab (every token predicted)", (scores, fired, 30), {}),
        ("two latents", (scores[:2], fired[:2], 5), {}),
        ("repeated tokens count each time",
         (scores, [[top[0, 0].item()] * 3 + [29]] + fired[1:], 5), {}),
    ]  # fmt: skip
    check_function(lambda *a: tuple(fn(*a)), prediction_overlap, cases)


def _transcoder_latent_nodes(graph, transcoder):
    """The graph's latent nodes of ``transcoder`` after position 0; an AssertionError when it
    has none (no edge of the kind checked exists: the graph's content, not its code, is at
    fault, e.g. every latent pruned away)."""
    layer = int(transcoder.cfg.metadata.hook_name_out.split(".")[1])
    nodes = graph.nodes
    latents = nodes[(nodes["kind"] == "latent") & (nodes["layer"] == layer) & (nodes["pos"] > 0)]
    assert not latents.empty, (
        f"the graph has no active latent of the layer-{layer} transcoder after position 0: "
        "there is no edge of this kind to check"
    )
    return latents


def check_graph_edge(
    fn: Callable[..., float], model, transcoder, tokens: Tensor, graph=None
) -> None:
    """Check ``fn(model, transcoder, tokens, source_pos, source_feature, token) -> float``, one
    edge of an attribution graph: the direct effect of the transcoder latent
    ``source_feature`` at ``source_pos`` on the logit of ``token`` minus the mean logit at the
    last position, in the local replacement model of ``tokens`` (attention patterns,
    normalisation scales and every other MLP output frozen), as ``activation x gradient``.

    The expected values are entries of
    :func:`saebook.attribution_graphs.attribution_graph`'s adjacency matrix (``graph``, or one
    built here from ``model``, ``[transcoder]`` and ``tokens``). Cases: the strongest edge into
    the most likely token, the strongest from an earlier position (through attention only),
    the strongest at the last position, one into the second most likely token, and a weak one.
    """
    from saebook import attribution_graphs as ag

    tokens = tokens.reshape(-1)
    if graph is None:
        graph = ag.attribution_graph(model, [transcoder], tokens, max_logits=5, progress=False)
    nodes, latents = graph.nodes, _transcoder_latent_nodes(graph, transcoder)
    logits = nodes[nodes["kind"] == "logit"]
    last = int(tokens.numel()) - 1

    def edge(s: int, t: int) -> float:
        return float(graph.adjacency[t, s])

    def strongest(rows, t: int) -> int:
        return int(graph.adjacency[t, torch.tensor(rows.index.tolist())].abs().argmax())

    top = int(logits.index[0])
    picks: list[tuple[str, int, int]] = []
    picks.append(
        ("the strongest edge into the top logit", latents.index[strongest(latents, top)], top)
    )
    earlier = latents[latents["pos"] < last]
    if not earlier.empty:
        picks.append(
            ("an earlier position (through attention)", earlier.index[strongest(earlier, top)], top)
        )
    at_last = latents[latents["pos"] == last]
    if not at_last.empty:
        picks.append(("the last position", at_last.index[strongest(at_last, top)], top))
    if len(logits) > 1:
        second = int(logits.index[1])
        picks.append(("the second logit", latents.index[strongest(latents, second)], second))
    weights = graph.adjacency[top, torch.tensor(latents.index.tolist())].abs()
    nonzero = torch.nonzero(weights > 0).flatten()
    if nonzero.numel():
        weak = int(nonzero[weights[nonzero].argmin()])
        picks.append(("a weak edge", latents.index[weak], top))

    cases: list[Case] = []
    answers: dict[tuple, float] = {}
    for name, s, t in picks:
        src, tgt = nodes.loc[s], nodes.loc[t]
        key = (int(src["pos"]), int(src["feature"]), int(tgt["feature"]))
        answers[key] = edge(int(s), int(t))
        cases.append((name, (model, transcoder, tokens, *key), {}))

    def reference(model, transcoder, tokens, source_pos, source_feature, token) -> float:
        return answers[(source_pos, source_feature, token)]

    def reader(*args) -> float:
        return float(fn(*args))

    scale = float(graph.adjacency[torch.tensor(logits.index.tolist())].abs().max())
    check_function(reader, reference, cases, atol=1e-4 * max(1.0, scale), rtol=1e-3)


def check_embedding_edge(
    fn: Callable[..., float], model, transcoder, tokens: Tensor, graph=None
) -> None:
    """Check ``fn(model, transcoder, tokens, source_pos, target_pos, target_feature) -> float``,
    an edge into a latent: the direct effect of the embedding node at ``source_pos`` (token
    plus position embedding) on the pre-activation of transcoder latent ``target_feature`` at
    ``target_pos``, in the local replacement model of ``tokens`` (attention patterns,
    normalisation scales and MLP outputs frozen), as ``(embedding . gradient)``.

    The expected values are entries of
    :func:`saebook.attribution_graphs.attribution_graph`'s adjacency matrix (``graph``, or one
    built here from ``model``, ``[transcoder]`` and ``tokens``). Cases: the strongest edge
    from another position (through attention), the strongest from the latent's own position,
    one from position 0, and a weak one.
    """
    from saebook import attribution_graphs as ag

    tokens = tokens.reshape(-1)
    if graph is None:
        graph = ag.attribution_graph(model, [transcoder], tokens, max_logits=5, progress=False)
    nodes, latents = graph.nodes, _transcoder_latent_nodes(graph, transcoder)
    embeddings = nodes[nodes["kind"] == "embedding"]
    lat_idx = torch.tensor(latents.index.tolist())
    emb_idx = torch.tensor(embeddings.index.tolist())
    block = graph.adjacency[lat_idx[:, None], emb_idx[None, :]]  # (latents, positions)
    lat_pos = torch.tensor(latents["pos"].tolist())
    emb_pos = torch.tensor(embeddings["pos"].tolist())
    same = lat_pos[:, None] == emb_pos[None, :]

    def pick(mask: Tensor, weakest: bool = False) -> tuple[int, int] | None:
        scores = block.abs().masked_fill(~mask, float("nan"))
        if weakest:
            scores = scores.masked_fill(scores == 0, float("nan"))
            scores = -scores
        if torch.isnan(scores).all():
            return None
        flat = int(scores.nan_to_num(-float("inf")).argmax())
        return divmod(flat, block.shape[1])

    picks = [
        ("the strongest edge from another position (through attention)", pick(~same)),
        ("the strongest edge from the latent's own position", pick(same)),
        ("an edge from position 0", pick(emb_pos[None, :].expand_as(same) == 0)),
        ("a weak edge", pick(torch.ones_like(same), weakest=True)),
    ]
    cases: list[Case] = []
    answers: dict[tuple, float] = {}
    for name, found in picks:
        if found is None:
            continue
        t, s = found
        key = (int(emb_pos[s]), int(lat_pos[t]), int(latents["feature"].iloc[t]))
        answers[key] = float(block[t, s])
        cases.append((name, (model, transcoder, tokens, *key), {}))

    def reference(model, transcoder, tokens, source_pos, target_pos, target_feature) -> float:
        return answers[(source_pos, target_pos, target_feature)]

    def reader(*args) -> float:
        return float(fn(*args))

    scale = float(block.abs().max())
    check_function(reader, reference, cases, atol=1e-4 * max(1.0, scale), rtol=1e-3)


# --- Part 5, chapter 4: sparse feature circuits ----------------------------------------------


def check_error_node_splice(fn: Callable[..., tuple[Tensor, Tensor, Tensor]], sae) -> None:
    """Check ``fn(sae, x) -> (latents, error, output)`` against
    :func:`saebook.attribution.splice_site`: the values, and the gradients of a random
    projection of the output with respect to the returned latents (the decoder's only) and to
    ``x`` (the identity, through the error)."""
    from saebook.attribution import splice_site

    def run(f: Callable, x: Tensor, v: Tensor) -> tuple[Tensor, ...]:
        x = x.clone().requires_grad_(True)
        with torch.enable_grad():
            acts, error, out = f(sae, x)
            value = (out * v).sum()
            g_acts, g_x = torch.autograd.grad(value, (acts, x), allow_unused=True)
        zeros = torch.zeros_like
        g_acts = zeros(acts) if g_acts is None else g_acts
        g_x = zeros(x) if g_x is None else g_x
        error = error.reshape(*x.shape[:2], -1)  # a hook_z error may keep the heads axis
        return tuple(t.detach().float() for t in (acts, error, out, g_acts, g_x))

    # x shaped as at the SAE's hook: (batch, seq, n_heads, d_head) where the SAE reshapes
    # hook_z itself (gpt2's attention SAE), with the split it last saw (one head if none)
    shape: tuple[int, ...] = (sae.cfg.d_in,)
    if sae.cfg.reshape_activations == "hook_z":
        d_head = getattr(sae, "d_head", None) or sae.cfg.d_in
        shape = (sae.cfg.d_in // d_head, d_head)
    g = _generator(41)
    scale = float(sae.W_dec.detach().norm(dim=-1).mean()) * 4
    x = torch.randn(2, 5, *shape, generator=g) * scale
    v = torch.randn(2, 5, *shape, generator=g)
    cases: list[Case] = [
        ("two prompts", (x, v), {}),
        ("one position", (x[:1, :1], v[:1, :1]), {}),
        ("zero input", (torch.zeros(1, 3, *shape), v[:1, :3]), {}),
    ]
    check_function(
        lambda x, v: run(fn, x, v), lambda x, v: run(splice_site, x, v), cases, atol=1e-4
    )


def check_node_attribution(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(acts_grad, error_grad, delta_acts, delta_error) -> (d_sae + 1,)`` against
    :func:`saebook.feature_circuits.site_attribution`: per latent, gradient times change summed
    over positions and averaged over prompts; last, the error node's dot product, likewise."""
    from saebook.feature_circuits import site_attribution

    g = _generator(42)

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g)

    b, s, d_sae, d_in = 3, 4, 6, 5
    sparse = rand(b, s, d_sae) * (torch.rand(b, s, d_sae, generator=g) > 0.7)
    cases: list[Case] = [
        ("random", (rand(b, s, d_sae), rand(b, s, d_in), rand(b, s, d_sae), rand(b, s, d_in)), {}),
        ("sparse changes", (rand(b, s, d_sae), rand(b, s, d_in), sparse, rand(b, s, d_in)), {}),
        ("one prompt", (rand(1, s, d_sae), rand(1, s, d_in), rand(1, s, d_sae),
                        rand(1, s, d_in)), {}),
        ("no change", (rand(b, s, d_sae), rand(b, s, d_in), torch.zeros(b, s, d_sae),
                       torch.zeros(b, s, d_in)), {}),
    ]  # fmt: skip
    check_function(fn, site_attribution, cases)


def check_faithfulness(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(m_circuit, m_full, m_empty)`` against
    :func:`saebook.feature_circuits.faithfulness`, ``(m(C) - m(empty)) / (m(M) - m(empty))``."""
    from saebook.feature_circuits import faithfulness

    curve = torch.tensor([0.3, 1.0, 2.5, 4.0])
    cases: list[Case] = [
        ("a curve of circuits", (curve, 4.0, 0.3), {}),
        ("empty metric below zero", (curve, 4.0, -1.0), {}),
        ("full metric below empty", (torch.tensor([2.0, -1.0]), -2.0, 1.0), {}),
        ("one circuit", (torch.tensor(1.5), 3.0, 0.5), {}),
    ]

    def reader(*args) -> Tensor:
        return torch.as_tensor(fn(*args), dtype=torch.float32)

    def reference(*args) -> Tensor:
        return faithfulness(*args).float()

    check_function(reader, reference, cases)
