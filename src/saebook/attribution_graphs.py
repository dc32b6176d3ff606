"""Attribution graphs: one prediction explained as a graph of transcoder latents.

The **local replacement model** of a prompt is the model with

* every attention pattern and every LayerNorm scale frozen at their values on the prompt, so
  attention and LayerNorm become linear maps;
* each MLP that has a transcoder replaced by the transcoder's active latents (their
  activations are fixed inputs: gradients stop there) plus an **error node** per position
  holding what the transcoder misses;
* each MLP without a transcoder replaced by its own output on the prompt, one node per
  position (a pure error node: the graph does not explain what happens inside it).

With every node at its value on the prompt the replacement model computes exactly the real
logits, and it is linear in its nodes, so the effect of a node on a later one is a sum over
paths that one backward pass computes. Nodes: token embeddings (embedding plus positional
embedding) at each position, active transcoder latents, error nodes and the salient output
logits. An edge ``s -> t`` is ``value_s * d(target_t)/d(value_s)`` in the replacement model:
for a latent target, ``target_t`` is its pre-activation; for a logit, the logit minus the mean
logit. Edges into a target plus a bias constant add up to the target exactly.

Influence (:func:`influence_matrix`) follows the normalised absolute adjacency matrix through
all path lengths, ``B = A (I - A)^{-1}``; pruning keeps the nodes and edges that carry most
of the influence on the logits. :func:`edit_latents` runs the real model with transcoder
latents edited, to test what a graph claims.

Chapters: circuits/03
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor
from tqdm import tqdm

from saebook.directions import check_latent
from saebook.hooks import check_sae_hooks, encode, sae_hooks, starts_with_bos
from saebook.latent_gradients import pre_activations
from saebook.validate import check_prompt

__all__ = [
    "AttributionGraph",
    "PrunedGraph",
    "salient_logits",
    "logit_influence",
    "attribution_graph",
    "influence_matrix",
    "node_influence",
    "prune_graph",
    "plot_graph",
    "edit_latents",
    "KINDS",
]

#: Node kinds, in the order nodes are listed in a graph.
KINDS = ("embedding", "latent", "error", "mlp", "logit")


@torch.no_grad()
def salient_logits(
    logits: Float[Tensor, " d_vocab"], max_n: int = 10, prob_mass: float = 0.95
) -> tuple[Int[Tensor, " n"], Float[Tensor, " n"]]:
    """The most likely next tokens until they cover ``prob_mass`` of probability (at most
    ``max_n``): ``(token ids, probabilities)``, most likely first."""
    if logits.ndim != 1:
        raise ValueError(
            f"logits must be one position's (d_vocab,) logits, got {tuple(logits.shape)}"
        )
    if not 0 < prob_mass <= 1 or max_n < 1:
        raise ValueError(f"need 0 < prob_mass <= 1 and max_n >= 1, got {prob_mass}, {max_n}")
    probs = logits.float().softmax(-1)
    top = probs.topk(min(max_n, probs.numel()))
    n = int((top.values.cumsum(0) < prob_mass).sum()) + 1
    n = min(n, top.values.numel())
    return top.indices[:n].cpu(), top.values[:n].cpu()


@dataclass
class AttributionGraph:
    """Nodes, direct-effect adjacency matrix and what is needed to check and draw them.

    ``nodes`` has one row per node: ``kind`` (one of :data:`KINDS`), ``layer`` (-1 for
    embeddings, ``n_layers`` for logits), ``pos``, ``feature`` (latent index, token id of a
    logit, else -1), ``activation`` (latent activation; probability of a logit; else the
    norm of the node's vector) and ``label``. ``adjacency[t, s]`` is the direct effect of node
    ``s`` on node ``t`` (zero unless ``t`` is a latent or a logit). ``target_values[t]`` is the
    target's value on the prompt and ``bias[t]`` the part no node explains (biases), so
    ``adjacency.sum(1) + bias == target_values`` on latent and logit rows.
    """

    nodes: pd.DataFrame
    adjacency: Float[Tensor, "n n"]
    target_values: Float[Tensor, " n"]
    bias: Float[Tensor, " n"]
    logit_weights: Float[Tensor, " n"]  # probability of each logit node (0 elsewhere)
    tokens: Int[Tensor, " seq"]
    token_strings: list[str]
    replacement_logits: Float[Tensor, "seq d_vocab"]
    model_logits: Float[Tensor, "seq d_vocab"]

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    def index_of(self, kind: str) -> Int[Tensor, " n"]:
        """Indices of the nodes of one ``kind``."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return torch.tensor(self.nodes.index[self.nodes["kind"] == kind].tolist(), dtype=torch.long)


def _node_label(kind: str, layer: int, pos: int, feature: int, tok: str, model) -> str:
    if kind == "embedding":
        return f"emb {tok!r}@{pos}"
    if kind == "latent":
        return f"L{layer} #{feature} @{pos}"
    if kind == "error":
        return f"L{layer} error @{pos}"
    if kind == "mlp":
        return f"MLP{layer} (no transcoder) @{pos}"
    return f"logit {model.to_string([feature])!r}"


def _transcoders_by_layer(model: HookedSAETransformer, transcoders: list[SAE]) -> dict[int, SAE]:
    """The transcoders keyed by the layer whose ``blocks.L.hook_mlp_out`` they write."""
    by_layer: dict[int, SAE] = {}
    for tc in transcoders:
        _, hook_out = check_sae_hooks(model, tc)
        parts = hook_out.split(".")
        if len(parts) != 3 or parts[0] != "blocks" or parts[2] != "hook_mlp_out":
            raise ValueError(
                f"each transcoder must write blocks.L.hook_mlp_out, got one writing {hook_out!r}"
            )
        if int(parts[1]) in by_layer:
            raise ValueError(
                f"transcoders must cover each layer once, got two for layer {parts[1]}"
            )
        by_layer[int(parts[1])] = tc
    return by_layer


class _ReplacementModel:
    """The local replacement model of one prompt (see the module docstring).

    Holds the frozen attention patterns and normalisation scales and the value of every leaf
    on the prompt: ``embed`` (token plus position), each transcoder layer's ``latents`` and
    ``errors``, and each other layer's MLP output (``mlp_nodes``).
    """

    def __init__(
        self,
        model: HookedSAETransformer,
        by_layer: dict[int, SAE],
        tokens: Tensor,
        skip_bos: bool,
    ) -> None:
        self.model, self.by_layer, self.tokens = model, by_layer, tokens
        self.n_layers = n_layers = model.cfg.n_layers
        # every attention pattern and every normalisation scale (LayerNorm/RMSNorm, pre and post)
        self.frozen = [
            h for h in model.hook_dict if h.endswith(("attn.hook_pattern", "hook_scale"))
        ]
        self.has_pos = "hook_pos_embed" in model.hook_dict
        reads = [sae_hooks(tc)[0] for tc in by_layer.values()]
        self.outs = outs = [f"blocks.{li}.hook_mlp_out" for li in range(n_layers)]
        wanted = set(self.frozen + reads + outs + ["hook_embed", "hook_pos_embed"])
        with torch.no_grad():
            logits, cache = model.run_with_cache(tokens[None], names_filter=lambda n: n in wanted)
        self.model_logits, self.cache = logits[0], cache
        skip = skip_bos and starts_with_bos(model, tokens)
        embed = cache["hook_embed"][0]  # (seq, d_model); plus positions when they are embedded
        self.embed = embed + cache["hook_pos_embed"][0] if self.has_pos else embed
        self.latents: dict[int, Tensor] = {}
        self.errors: dict[int, Tensor] = {}
        for layer, tc in by_layer.items():
            with torch.no_grad():
                acts = encode(tc, cache[sae_hooks(tc)[0]][0], batched=False)
                if skip:
                    acts[0] = 0
                self.latents[layer] = acts
                self.errors[layer] = cache[outs[layer]][0] - tc.decode(acts)
        self.mlp_nodes = {li: cache[outs[li]][0] for li in range(n_layers) if li not in by_layer}

    def leaves(self, batch: int, scale: float = 1.0) -> dict[str, Tensor]:
        """``batch`` copies of every leaf times ``scale``, each requiring grad."""
        leaves = {"embed": self.embed * scale}
        for layer in range(self.n_layers):
            if layer in self.by_layer:
                leaves[f"lat{layer}"] = self.latents[layer] * scale
                leaves[f"err{layer}"] = self.errors[layer] * scale
            else:
                leaves[f"mlp{layer}"] = self.mlp_nodes[layer] * scale
        return {
            k: v.detach().expand(batch, *v.shape).clone().requires_grad_(True)
            for k, v in leaves.items()
        }

    def run(self, leaves: dict[str, Tensor], batch: int) -> tuple[Tensor, dict[int, Tensor]]:
        """Run the replacement model on ``batch`` copies; returns logits and transcoder inputs."""
        reads_out: dict[int, Tensor] = {}
        hooks = [("hook_embed", lambda a, hook: leaves["embed"])]
        if self.has_pos:  # the embedding node holds token + position
            hooks.append(("hook_pos_embed", lambda a, hook: torch.zeros_like(a)))
        for name in self.frozen:
            value = self.cache[name]
            hooks.append((name, lambda a, hook, v=value: v.expand_as(a)))
        for layer in range(self.n_layers):
            if layer in self.by_layer:
                tc = self.by_layer[layer]

                def read(a, hook, layer=layer):
                    reads_out[layer] = a

                def write(a, hook, layer=layer, tc=tc):
                    return tc.decode(leaves[f"lat{layer}"]) + leaves[f"err{layer}"]

                hooks += [(sae_hooks(tc)[0], read), (self.outs[layer], write)]
            else:
                hooks.append((self.outs[layer], lambda a, hook, layer=layer: leaves[f"mlp{layer}"]))
        logits = self.model.run_with_hooks(self.tokens[None].expand(batch, -1), fwd_hooks=hooks)
        return logits, reads_out

    def target_values(
        self, nodes: pd.DataFrame, logits: Tensor, reads_out: dict[int, Tensor], rows: Tensor
    ) -> Tensor:
        """Value of target node ``rows[b]`` in batch row ``b``: a latent's pre-activation, or
        a logit minus the mean logit."""
        out = []
        for b, t in enumerate(rows.tolist()):
            r = nodes.iloc[t]
            if r.kind == "latent":
                x = reads_out[int(r.layer)][b]
                p, i = torch.tensor([int(r.pos)]), torch.tensor([int(r.feature)])
                out.append(
                    pre_activations(self.by_layer[int(r.layer)], x, p.to(x.device), i.to(x.device))[
                        0
                    ]
                )
            else:
                last = logits[b, -1]
                out.append(last[int(r.feature)] - last.mean())
        return torch.stack(out)


def _node_table(
    rm: _ReplacementModel, strings: list[str], max_logits: int, prob_mass: float
) -> tuple[pd.DataFrame, Tensor]:
    """The graph's nodes in :data:`KINDS` order, and the probabilities of the logit nodes."""
    seq, n_layers = rm.tokens.numel(), rm.n_layers
    rows = [("embedding", -1, p, -1, float(rm.embed[p].norm())) for p in range(seq)]
    for layer in range(n_layers):
        if layer in rm.by_layer:
            latents = rm.latents[layer]
            pos, lat = torch.nonzero(latents, as_tuple=True)
            vals = latents[pos, lat].tolist()
            rows += [
                ("latent", layer, int(p), int(i), v)
                for p, i, v in zip(pos.tolist(), lat.tolist(), vals, strict=True)
            ]
            rows += [("error", layer, p, -1, float(rm.errors[layer][p].norm())) for p in range(seq)]
        else:
            rows += [
                ("mlp", layer, p, -1, float(rm.mlp_nodes[layer][p].norm())) for p in range(seq)
            ]
    logit_ids, logit_probs = salient_logits(rm.model_logits[-1], max_logits, prob_mass)
    rows += [
        ("logit", n_layers, seq - 1, int(t), float(q))
        for t, q in zip(logit_ids, logit_probs, strict=True)
    ]
    nodes = pd.DataFrame(rows, columns=["kind", "layer", "pos", "feature", "activation"])
    order = {k: i for i, k in enumerate(KINDS)}
    nodes = nodes.assign(_k=nodes["kind"].map(order)).sort_values(
        ["_k", "layer", "pos", "feature"], kind="stable"
    )
    nodes = nodes.drop(columns="_k").reset_index(drop=True)
    nodes["label"] = [
        _node_label(r.kind, r.layer, r.pos, r.feature, strings[r.pos], rm.model)
        for r in nodes.itertuples()
    ]
    return nodes, logit_probs


def _direct_effects(
    rm: _ReplacementModel,
    nodes: pd.DataFrame,
    targets: Tensor,
    batch_size: int,
    progress: bool,
) -> Tensor:
    """``adjacency[t, s] = value_s * d(target_t)/d(value_s)`` for every target row ``t``,
    one batched backward pass per ``batch_size`` targets."""
    n = len(nodes)
    kind = nodes["kind"].to_numpy()
    emb_idx = torch.tensor(nodes.index[kind == "embedding"].tolist(), dtype=torch.long)
    adjacency = torch.zeros(n, n)
    latent_slot = {}
    for layer in rm.by_layer:
        sel = nodes[(nodes["kind"] == "latent") & (nodes["layer"] == layer)]
        latent_slot[layer] = (
            torch.tensor(sel.index.tolist(), dtype=torch.long),  # long even when empty
            torch.tensor(sel["pos"].tolist(), dtype=torch.long),
            torch.tensor(sel["feature"].tolist(), dtype=torch.long),
        )
    err_slot = {
        li: torch.tensor(
            nodes.index[(kind == "error") & (nodes["layer"] == li).to_numpy()].tolist(),
            dtype=torch.long,
        )
        for li in rm.by_layer
    }
    mlp_slot = {
        li: torch.tensor(
            nodes.index[(kind == "mlp") & (nodes["layer"] == li).to_numpy()].tolist(),
            dtype=torch.long,
        )
        for li in rm.mlp_nodes
    }
    bar = tqdm(
        total=len(targets),
        desc="attribution graph",
        unit="target",
        disable=not progress,
        leave=False,
    )
    for chunk in targets.split(batch_size):
        leaves = rm.leaves(len(chunk))
        with torch.enable_grad():
            logits, reads_out = rm.run(leaves, len(chunk))
            values = rm.target_values(nodes, logits, reads_out, chunk)
            names = list(leaves)
            grads = torch.autograd.grad(values.sum(), [leaves[k] for k in names], allow_unused=True)
        grads = {
            k: (g if g is not None else torch.zeros_like(leaves[k]))
            for k, g in zip(names, grads, strict=True)
        }
        rows_t = chunk
        adjacency[rows_t[:, None], emb_idx[None, :]] = (
            (grads["embed"] * rm.embed).sum(-1).detach().cpu()
        )
        for layer in rm.by_layer:
            slot, pos, lat = latent_slot[layer]
            g = grads[f"lat{layer}"][:, pos, lat] * rm.latents[layer][pos, lat]
            adjacency[rows_t[:, None], slot[None, :]] = g.detach().cpu()
            e = (grads[f"err{layer}"] * rm.errors[layer]).sum(-1)
            adjacency[rows_t[:, None], err_slot[layer][None, :]] = e.detach().cpu()
        for layer, value in rm.mlp_nodes.items():
            e = (grads[f"mlp{layer}"] * value).sum(-1)
            adjacency[rows_t[:, None], mlp_slot[layer][None, :]] = e.detach().cpu()
        bar.update(len(chunk))
    bar.close()
    return adjacency


def attribution_graph(
    model: HookedSAETransformer,
    transcoders: list[SAE],
    tokens: Int[Tensor, " seq"],
    *,
    max_logits: int = 10,
    prob_mass: float = 0.95,
    skip_bos: bool = True,
    batch_size: int = 32,
    progress: bool = True,
) -> AttributionGraph:
    """Build the attribution graph of the next-token prediction at the last position.

    Args:
        transcoders: transcoders of some MLP layers (``hook_name_out`` must be
            ``blocks.L.hook_mlp_out``); the other layers' MLPs become per-position nodes.
        tokens: one prompt, ``(seq,)`` or ``(1, seq)``.
        max_logits, prob_mass: which output logits are nodes (:func:`salient_logits`).
        skip_bos: no latent nodes at a BOS position 0 (its MLP output goes to the error node).
        batch_size: targets per batched backward pass.
    """
    tokens = check_prompt(tokens, model, min_len=2)
    rm = _ReplacementModel(model, _transcoders_by_layer(model, transcoders), tokens, skip_bos)
    strings = model.to_str_tokens(tokens)
    nodes, logit_probs = _node_table(rm, strings, max_logits, prob_mass)
    n = len(nodes)
    kind = nodes["kind"].to_numpy()
    idx = {k: torch.tensor(nodes.index[kind == k].tolist(), dtype=torch.long) for k in KINDS}
    targets = torch.cat([idx["latent"], idx["logit"]])
    with torch.no_grad():
        logits0, reads0 = rm.run(rm.leaves(1), 1)
        zero_logits, zero_reads = rm.run(rm.leaves(len(targets), 0.0), len(targets))
        bias_t = rm.target_values(nodes, zero_logits, zero_reads, targets)
        clean_t = rm.target_values(
            nodes,
            logits0.expand(len(targets), -1, -1),
            {k: v.expand(len(targets), *v.shape[1:]) for k, v in reads0.items()},
            targets,
        )
    adjacency = _direct_effects(rm, nodes, targets, batch_size, progress)
    target_vals = torch.zeros(n)
    bias = torch.zeros(n)
    target_vals[targets] = clean_t.detach().cpu()
    bias[targets] = bias_t.detach().cpu()
    weights = torch.zeros(n)
    weights[idx["logit"]] = logit_probs / logit_probs.sum()
    return AttributionGraph(
        nodes=nodes,
        adjacency=adjacency,
        target_values=target_vals,
        bias=bias,
        logit_weights=weights,
        tokens=tokens.cpu(),
        token_strings=strings,
        replacement_logits=logits0[0].detach().cpu(),
        model_logits=rm.model_logits.detach().cpu(),
    )


def influence_matrix(adjacency: Float[Tensor, "n n"]) -> Float[Tensor, "n n"]:
    """Total influence through paths of every length: ``B = A_n (I - A_n)^{-1}``.

    ``A_n`` is ``|adjacency|`` with each row divided by its sum (rows that sum to 0 stay 0),
    so row ``t`` says which share of ``t``'s direct input comes from each node.
    ``B = A_n + A_n^2 + ...``; the series is finite for a graph without cycles (a matrix
    with a nonzero diagonal or a cycle raises ``ValueError``).
    """
    if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
        raise ValueError(f"adjacency must be a square (n, n) matrix, got {tuple(adjacency.shape)}")
    a = adjacency.abs().double()
    total = a.sum(1, keepdim=True)
    a_n = torch.where(total > 0, a / total.clamp(min=1e-30), torch.zeros_like(a))
    eye = torch.eye(a.shape[0], dtype=a.dtype)
    result = torch.linalg.solve((eye - a_n).T, a_n.T).T  # A_n (I - A_n)^{-1}
    if not torch.isfinite(result).all():
        raise ValueError("adjacency must describe a graph without cycles (I - A_n is singular)")
    return result.to(adjacency.dtype)


def logit_influence(
    adjacency: Float[Tensor, "n n"], logit_weights: Float[Tensor, " n"]
) -> Float[Tensor, " n"]:
    """``logit_weights @ B``: each node's influence on the logit nodes through paths of every
    length (``B`` from :func:`influence_matrix`), weighted by ``logit_weights`` (each logit
    node's probability, 0 on other nodes)."""
    if logit_weights.shape != (adjacency.shape[0],):
        raise ValueError(
            f"logit_weights must have shape ({adjacency.shape[0]},), "
            f"got {tuple(logit_weights.shape)}"
        )
    return logit_weights.to(adjacency.dtype) @ influence_matrix(adjacency)


def node_influence(graph: AttributionGraph, adjacency: Tensor | None = None) -> Float[Tensor, " n"]:
    """Each node's total influence on the logits, weighted by the logits' probabilities."""
    a = graph.adjacency if adjacency is None else adjacency
    return logit_influence(a, graph.logit_weights)


@dataclass
class PrunedGraph:
    """A pruned attribution graph: kept nodes and edges, and how much influence they carry."""

    graph: AttributionGraph
    node_mask: Tensor  # (n,) bool
    edge_mask: Tensor  # (n, n) bool
    influence: Tensor  # (n,) influence of each node in the full graph
    kept_influence: float  # share of the logits' influence that reaches inputs in the pruned graph
    error_share: float  # share of the full graph's input influence that comes from error/MLP nodes

    @property
    def adjacency(self) -> Tensor:
        return self.graph.adjacency * self.edge_mask

    def kept_nodes(self) -> pd.DataFrame:
        """The kept nodes with their influence, most influential first."""
        frame = self.graph.nodes.assign(influence=self.influence.numpy())
        return frame[self.node_mask.numpy()].sort_values("influence", ascending=False)


def _input_mass(graph: AttributionGraph, adjacency: Tensor) -> Tensor:
    """Influence of each input node (no incoming edge in the *full* graph) on the logits."""
    a = adjacency.abs().double()
    total = graph.adjacency.abs().double().sum(1, keepdim=True)  # normalise by the full graph
    a_n = torch.where(total > 0, a / total.clamp(min=1e-30), torch.zeros_like(a))
    eye = torch.eye(a.shape[0], dtype=a.dtype)
    b = torch.linalg.solve((eye - a_n).T, a_n.T).T
    return graph.logit_weights.double() @ b


def prune_graph(
    graph: AttributionGraph, node_threshold: float = 0.8, edge_threshold: float = 0.98
) -> PrunedGraph:
    """Keep the latents that carry ``node_threshold`` of the latents' influence on the logits,
    then the edges that carry ``edge_threshold`` of the remaining edge influence.

    Embedding, error, MLP and logit nodes are always kept (they are where the explanation
    starts and ends). An edge ``s -> t`` scores ``A_n[t, s] * (influence of t + weight of t)``.
    ``kept_influence`` is the share of the logits' influence that still reaches input nodes
    through kept edges (edges are normalised as in the full graph, so pruning only loses
    mass); in the full graph it is 1.
    """
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0 < value <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    influence = node_influence(graph)
    kinds = graph.nodes["kind"].to_numpy()
    is_latent = torch.tensor(kinds == "latent")
    node_mask = ~is_latent
    lat_idx = torch.nonzero(is_latent).flatten()
    if lat_idx.numel():
        order = lat_idx[influence[lat_idx].argsort(descending=True)]
        cum = influence[order].cumsum(0)
        total = cum[-1]
        n_keep = int((cum < node_threshold * total).sum()) + 1 if total > 0 else 0
        node_mask[order[:n_keep]] = True
    a = graph.adjacency.abs()
    a_n = a / a.sum(1, keepdim=True).clamp(min=1e-30)
    keep_pair = node_mask[:, None] & node_mask[None, :]
    score = a_n * (influence + graph.logit_weights)[:, None] * keep_pair
    flat = score.flatten()
    order = flat.argsort(descending=True)
    cum = flat[order].cumsum(0)
    n_edges = int((cum < edge_threshold * cum[-1]).sum()) + 1 if cum[-1] > 0 else 0
    edge_mask = torch.zeros_like(flat, dtype=torch.bool)
    edge_mask[order[:n_edges]] = True
    edge_mask = edge_mask.view_as(score) & (graph.adjacency != 0)
    # drop latents left without an edge in or out
    connected = edge_mask.any(0) | edge_mask.any(1)
    node_mask = node_mask & (connected | ~is_latent)
    edge_mask = edge_mask & node_mask[:, None] & node_mask[None, :]
    inputs = torch.tensor([k in ("embedding", "error", "mlp") for k in kinds])
    full = _input_mass(graph, graph.adjacency)
    pruned = _input_mass(graph, graph.adjacency * edge_mask)
    errors = torch.tensor([k in ("error", "mlp") for k in kinds])
    return PrunedGraph(
        graph=graph,
        node_mask=node_mask,
        edge_mask=edge_mask,
        influence=influence,
        kept_influence=float(pruned[inputs].sum() / full[inputs].sum()),
        error_share=float(full[errors].sum() / full[inputs].sum()),
    )


_COLOURS = {
    "embedding": "#7f8c8d",
    "latent": "#2e86de",
    "error": "#e67e22",
    "mlp": "#d35400",
    "logit": "#27ae60",
}


def plot_graph(
    pruned: PrunedGraph, labels: dict[int, str] | None = None, title: str | None = None
) -> go.Figure:
    """An interactive plotly drawing of a pruned graph.

    x is the token position (the prompt along the bottom), y the layer (embeddings at the
    bottom, logits on top); nodes that share a cell are spread sideways. Edges are blue
    (positive) or red (negative), wider when larger; hovering a node shows its kind, value,
    influence and ``labels[node]`` when given (e.g. a latent's top tokens).
    """
    graph = pruned.graph
    nodes = graph.nodes
    keep = torch.nonzero(pruned.node_mask).flatten().tolist()
    n_layers = int(nodes["layer"].max())
    xy: dict[int, tuple[float, float]] = {}
    cells: dict[tuple[int, float], list[int]] = {}
    for i in keep:
        r = nodes.iloc[i]
        y = (
            -1.0
            if r.kind == "embedding"
            else float(r.layer) + (0.0 if r.kind == "latent" else 0.35)
        )
        if r.kind == "logit":
            y = float(n_layers)
        cells.setdefault((int(r.pos), y), []).append(i)
    for (pos, y), members in cells.items():
        members.sort(key=lambda i: -float(pruned.influence[i]))
        for j, i in enumerate(members):
            offset = 0.0 if len(members) == 1 else -0.4 + 0.8 * j / (len(members) - 1)
            xy[i] = (pos + offset, y)
    fig = go.Figure()
    edges = torch.nonzero(pruned.edge_mask).tolist()
    weights = [float(graph.adjacency[t, s]) for t, s in edges]
    top = max((abs(w) for w in weights), default=1.0) or 1.0
    for sign, colour in ((1, "rgba(46,134,222,{a})"), (-1, "rgba(214,48,49,{a})")):
        for lo, hi, width in ((0.0, 0.1, 1.0), (0.1, 0.4, 2.5), (0.4, 1.01, 5.0)):
            xs, ys = [], []
            for (t, s), w in zip(edges, weights, strict=True):
                if (w > 0) == (sign > 0) and lo <= abs(w) / top < hi and s in xy and t in xy:
                    xs += [xy[s][0], xy[t][0], None]
                    ys += [xy[s][1], xy[t][1], None]
            if xs:
                line = {"width": width, "color": colour.format(a=0.3 + 0.5 * hi)}
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip",
                                         showlegend=False, line=line))  # fmt: skip
    labels = labels or {}
    for kind in KINDS:
        members = [i for i in keep if nodes.iloc[i]["kind"] == kind]
        if not members:
            continue
        infl = [float(pruned.influence[i]) for i in members]
        size = [8 + 30 * (v / max(max(infl), 1e-12)) ** 0.5 for v in infl]
        text = []
        for i, v in zip(members, infl, strict=True):
            r = nodes.iloc[i]
            extra = f"<br>{labels[i]}" if i in labels else ""
            text.append(
                f"{r.label}<br>{kind} · value {r.activation:.3g} · influence {v:.3g}{extra}"
            )
        fig.add_trace(go.Scatter(
            x=[xy[i][0] for i in members], y=[xy[i][1] for i in members], mode="markers",
            marker={"size": size if kind != "logit" else 18, "color": _COLOURS[kind],
                    "line": {"width": 1, "color": "white"}},
            name=kind, hovertext=text, hoverinfo="text",
        ))  # fmt: skip
    seq = len(graph.token_strings)
    fig.update_layout(
        title=title or "Attribution graph (pruned)",
        xaxis={"tickmode": "array", "tickvals": list(range(seq)),
               "ticktext": [repr(t)[1:-1] for t in graph.token_strings], "tickangle": -60},
        yaxis={"tickmode": "array", "tickvals": [-1] + list(range(n_layers + 1)),
               "ticktext": ["embeddings"] + [f"layer {li}" for li in range(n_layers)] + ["logits"]},
        height=520, margin={"l": 60, "r": 20, "t": 50, "b": 90}, plot_bgcolor="white",
    )  # fmt: skip
    return fig


@torch.no_grad()
def edit_latents(
    model: HookedSAETransformer,
    transcoder: SAE,
    tokens: Int[Tensor, "batch seq"],
    edits: list[tuple[int, int, float | None, float]],
) -> Float[Tensor, "batch seq d_vocab"]:
    """Logits of the real model with the transcoder spliced in (with its error term) and some
    latents edited.

    Each edit is ``(pos, latent, value, scale)``: at position ``pos`` the latent's activation
    becomes ``value`` (``None``: keep it) times ``scale``. ``(p, i, None, 0.0)`` ablates,
    ``(p, i, v, 1.0)`` patches in a value from another prompt, ``(p, i, None, 3.0)`` steers.
    With no edits the logits equal the clean model's (the error term makes the splice exact).
    """
    _, hook_out = check_sae_hooks(model, transcoder)
    if tokens.ndim == 1:
        tokens = tokens[None]
    for edit in edits:
        if len(edit) != 4:
            raise ValueError(f"each edit must be (pos, latent, value or None, scale), got {edit!r}")
        check_latent(transcoder, int(edit[1]), arg="edit latent")

    def apply(acts: Tensor, hook: object) -> Tensor:
        acts = acts.clone()
        for pos, latent, value, scale in edits:
            current = (
                acts[:, pos, latent]
                if value is None
                else torch.full_like(acts[:, pos, latent], value)
            )
            acts[:, pos, latent] = current * scale
        return acts

    with model.saes(saes=[transcoder], use_error_term=True):
        return model.run_with_hooks(tokens, fwd_hooks=[(f"{hook_out}.hook_sae_acts_post", apply)])
