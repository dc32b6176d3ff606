"""Sparse feature circuits: SAE latents and error nodes at several sites, scored and pruned.

Following Marks et al. (2024), every SAE at every site is spliced into the model at once, with
its reconstruction error kept as a node (:func:`saebook.attribution.spliced_logits`), so that
the model's output is unchanged. A node is one latent, or one site's error, over all positions
of a prompt. Its indirect effect on a task metric is the change of the metric when the node
alone takes its value from the corrupted prompt:

* :func:`node_attributions` estimates every node's effect at once, by attribution patching
  (gradient times the clean-to-corrupted change) or by integrated gradients along that change,
  one site at a time, as the paper does;
* :func:`patching_effects` measures it exactly, one forward pass per node (batched);
* :func:`circuit_metrics` runs the model with every node outside a circuit mean-ablated, and
  :func:`faithfulness` turns that into the paper's ``(m(C) - m(empty)) / (m(M) - m(empty))``;
* :func:`edge_attributions` estimates the effect flowing along the edges from one site's nodes
  into another's, one backward pass per downstream node.

Nodes are numbered over the sites in order: site ``k`` holds ``d_sae_k`` latents then its error
node (:func:`node_names`). Sites come from :func:`order_sites`, which keeps the SAEs that
reconstruct the activation they read, in the order the forward pass reaches them.

Chapters: circuits/04
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from saebook.attribution import SiteNodes, node_gradients, spliced_logits
from saebook.hooks import check_sae_hooks
from saebook.tasks import LogitDiffTask
from saebook.validate import check_int

__all__ = [
    "order_sites",
    "node_names",
    "node_values",
    "site_attribution",
    "node_attributions",
    "patching_effects",
    "mean_nodes",
    "circuit_metrics",
    "faithfulness",
    "top_circuits",
    "random_circuits",
    "edge_attributions",
]


def order_sites(
    model: HookedSAETransformer, saes: Mapping[str, SAE]
) -> tuple[list[str], list[str]]:
    """``(kept, skipped)`` role names: the SAEs that read and write one hook, in the order a
    forward pass reaches their hooks, and the others (transcoders, or an SAE on a hook an
    earlier-listed SAE already holds)."""
    if not saes:
        raise ValueError("saes must hold at least one SAE, got none")
    order: list[str] = []
    hooks = {role: check_sae_hooks(model, sae) for role, sae in saes.items()}
    wanted = {h for h, o in hooks.values() if h == o}
    record = [(name, lambda x, hook: order.append(hook.name)) for name in wanted]
    with torch.no_grad():
        model.run_with_hooks(
            torch.zeros(1, 1, dtype=torch.long, device=model.cfg.device), fwd_hooks=record
        )
    kept, skipped, taken = [], [], set()
    for role, (h, o) in hooks.items():
        if h != o or h in taken:
            skipped.append(role)
        else:
            kept.append(role)
            taken.add(h)
    kept.sort(key=lambda role: order.index(hooks[role][0]))
    return kept, skipped


def node_names(saes: Sequence[SAE], roles: Sequence[str]) -> list[str]:
    """``"<role>/<latent>"`` for every latent and ``"<role>/error"`` for each site's error,
    in node order."""
    if len(saes) != len(roles):
        raise ValueError(f"roles must name each of the {len(saes)} SAEs, got {len(roles)}")
    names = []
    for sae, role in zip(saes, roles, strict=True):
        names += [f"{role}/{i}" for i in range(sae.cfg.d_sae)] + [f"{role}/error"]
    return names


def _sizes(saes: Sequence[SAE]) -> list[int]:
    return [sae.cfg.d_sae + 1 for sae in saes]


@torch.no_grad()
def node_values(
    model: HookedSAETransformer, saes: Sequence[SAE], tokens: Int[Tensor, "batch seq"]
) -> list[SiteNodes]:
    """Each site's latents ``(batch, seq, d_sae)`` and error ``(batch, seq, d_in)`` on
    ``tokens``, with every SAE spliced in (no gradient)."""
    nodes: list = [None] * len(saes)
    spliced_logits(model, saes, tokens, nodes=nodes)
    return [SiteNodes(a, e) for a, e in nodes]


def site_attribution(
    acts_grad: Float[Tensor, "batch seq d_sae"],
    error_grad: Float[Tensor, "batch seq d_in"],
    delta_acts: Float[Tensor, "batch seq d_sae"],
    delta_error: Float[Tensor, "batch seq d_in"],
) -> Float[Tensor, " d_sae_plus_1"]:
    """One site's node attributions: for each latent, the mean over prompts of the sum over
    positions of ``gradient * change``; last, the error node's, its ``gradient . change``
    summed over positions and dimensions, mean over prompts."""
    if acts_grad.shape != delta_acts.shape or error_grad.shape != delta_error.shape:
        raise ValueError(
            f"gradients and changes must have equal shapes, got {tuple(acts_grad.shape)} vs "
            f"{tuple(delta_acts.shape)} and {tuple(error_grad.shape)} vs {tuple(delta_error.shape)}"
        )
    batch = acts_grad.shape[0]
    latents = (acts_grad * delta_acts).sum((0, 1)) / batch
    error = (error_grad * delta_error).sum() / batch
    return torch.cat([latents, error.reshape(1)])


def _attribution(grad: SiteNodes, delta: SiteNodes) -> Tensor:
    return site_attribution(grad.acts_grad, grad.error_grad, delta.acts, delta.error)


def node_attributions(
    model: HookedSAETransformer,
    saes: Sequence[SAE],
    task: LogitDiffTask,
    method: str = "atp",
    steps: int = 10,
) -> Float[Tensor, " nodes"]:
    """Estimated change of the mean logit difference when each node alone is patched from the
    clean run to the corrupted run (at every position of every prompt).

    ``method="atp"`` (attribution patching): ``grad . (corrupted - clean)``, the gradient taken
    on the clean run, one backward pass in all. ``method="ig"`` (integrated gradients, as
    Marks et al.): for each site the gradient is averaged over ``steps`` midpoints
    ``alpha = (k + 1/2) / steps`` of the straight path where all of that site's nodes move
    together from clean towards corrupted, the other sites running normally; ``steps`` forward
    and backward passes per site. Gradients are of the sum of per-prompt logit differences,
    so each prompt's entry has one prompt's scale, and the result is the mean over prompts.
    """
    if method not in ("atp", "ig"):
        raise ValueError(f"method must be 'atp' or 'ig', got {method!r}")
    check_int("steps", steps)
    clean = node_values(model, saes, task.clean)
    corrupt = node_values(model, saes, task.corrupted)
    delta = [
        SiteNodes(c.acts - a.acts, c.error - a.error) for a, c in zip(clean, corrupt, strict=True)
    ]

    def metric(logits: Tensor) -> Tensor:
        return task.logit_diff(logits).sum()

    if method == "atp":
        grads = node_gradients(model, saes, task.clean, metric)
        return torch.cat([_attribution(g, d) for g, d in zip(grads, delta, strict=True)])
    per_site = []
    for site in range(len(saes)):
        total_a = torch.zeros_like(clean[site].acts)
        total_e = torch.zeros_like(clean[site].error)
        for k in range(steps):
            alpha = (k + 0.5) / steps

            def along(s, acts, error, site=site, alpha=alpha):
                if s != site:
                    return acts, error
                point = clean[site]
                return (point.acts + alpha * delta[site].acts).clone(), (
                    point.error + alpha * delta[site].error
                ).clone()

            grad = node_gradients(model, saes, task.clean, metric, edit=along)[site]
            total_a += grad.acts_grad
            total_e += grad.error_grad
        mean = SiteNodes(delta[site].acts, delta[site].error, total_a / steps, total_e / steps)
        per_site.append(_attribution(mean, delta[site]))
    return torch.cat(per_site)


def _locate(saes: Sequence[SAE], nodes: Tensor) -> tuple[Tensor, Tensor]:
    """``(site, index within site)`` of flat node numbers (index ``d_sae`` is the error)."""
    sizes = torch.tensor(_sizes(saes))
    starts = torch.cumsum(sizes, 0) - sizes
    if nodes.numel() and (nodes.min() < 0 or nodes.max() >= int(sizes.sum())):
        raise ValueError(
            f"nodes must lie in [0, {int(sizes.sum())}), got {nodes.min()}..{nodes.max()}"
        )
    site = torch.searchsorted(torch.cumsum(sizes, 0), nodes, right=True)
    return site, nodes - starts[site]


@torch.no_grad()
def patching_effects(
    model: HookedSAETransformer,
    saes: Sequence[SAE],
    task: LogitDiffTask,
    nodes: Int[Tensor, " n"],
    chunk: int = 64,
) -> Float[Tensor, " n"]:
    """Exact change of the mean logit difference when each node alone takes its corrupted-run
    value at every position of every prompt (later sites recompute). One batched forward pass
    per ``chunk`` nodes; the quantity :func:`node_attributions` estimates."""
    check_int("chunk", chunk)
    nodes = torch.as_tensor(nodes, dtype=torch.long).flatten()
    site_of, index = _locate(saes, nodes)
    batch = task.clean.shape[0]
    corrupt = node_values(model, saes, task.corrupted)
    base = task.logit_diff(spliced_logits(model, saes, task.clean)).mean()
    effects = []
    for start in range(0, nodes.numel(), chunk):
        sites, idx = site_of[start : start + chunk], index[start : start + chunk]
        reps = sites.numel()
        rows = torch.arange(reps * batch)
        row_site, row_idx = sites.repeat_interleave(batch), idx.repeat_interleave(batch)

        def patch(s, acts, error, row_site=row_site, row_idx=row_idx, rows=rows):
            acts, error = acts.clone(), error.clone()
            src = corrupt[s]
            here = rows[row_site == s]
            lat = here[row_idx[here] < acts.shape[-1]]
            err = here[row_idx[here] == acts.shape[-1]]
            acts[lat, :, row_idx[lat]] = src.acts[lat % batch, :, row_idx[lat]]
            error[err] = src.error[err % batch]
            return acts, error

        logits = spliced_logits(model, saes, task.clean.repeat(reps, 1), patch)
        diffs = task.logit_diff(logits, repeat=reps).view(reps, batch).mean(1)
        effects.append(diffs - base)
    return torch.cat(effects) if effects else torch.zeros(0)


@torch.no_grad()
def mean_nodes(
    model: HookedSAETransformer, saes: Sequence[SAE], tokens: Int[Tensor, "batch seq"]
) -> list[SiteNodes]:
    """Each site's latents and error averaged over the rows of ``tokens`` at each position,
    ``(1, seq, ...)``: the values a mean ablation puts in."""
    return [SiteNodes(n.acts.mean(0, keepdim=True), n.error.mean(0, keepdim=True))
            for n in node_values(model, saes, tokens)]  # fmt: skip


@torch.no_grad()
def circuit_metrics(
    model: HookedSAETransformer,
    saes: Sequence[SAE],
    task: LogitDiffTask,
    keep: Bool[Tensor, "circuits nodes"],
    means: Sequence[SiteNodes],
    chunk: int = 16,
) -> Float[Tensor, " circuits"]:
    """Mean clean logit difference of each circuit: the nodes of row ``c`` of ``keep`` run as
    usual, every other node is replaced by its value in ``means`` (:func:`mean_nodes`) at every
    position. A row of all True is the full model; all False ablates every node."""
    check_int("chunk", chunk)
    sizes = _sizes(saes)
    if keep.ndim != 2 or keep.shape[1] != sum(sizes) or keep.dtype != torch.bool:
        raise ValueError(
            f"keep must be a bool (circuits, {sum(sizes)}) tensor, got "
            f"{keep.dtype} {tuple(keep.shape)}"
        )
    batch, out = task.clean.shape[0], []
    for part in keep.split(chunk):
        rows = part.repeat_interleave(batch, 0).split(sizes, dim=1)

        def ablate(s, acts, error, rows=rows):
            kept = rows[s]
            acts = torch.where(kept[:, None, :-1], acts, means[s].acts)
            error = torch.where(kept[:, None, -1:], error, means[s].error)
            return acts, error

        logits = spliced_logits(model, saes, task.clean.repeat(part.shape[0], 1), ablate)
        out.append(task.logit_diff(logits, repeat=part.shape[0]).view(-1, batch).mean(1))
    return torch.cat(out)


def faithfulness(
    m_circuit: Tensor | float, m_full: float | Tensor, m_empty: float | Tensor
) -> Tensor:
    """``(m(C) - m(empty)) / (m(M) - m(empty))`` (Marks et al.): 1 when the circuit alone
    recovers the model's metric, 0 when it does no better than ablating everything."""
    gap = torch.as_tensor(m_full) - torch.as_tensor(m_empty)
    if gap.abs() < 1e-8:
        raise ValueError(
            f"m_full and m_empty must differ, got {float(m_full)} and {float(m_empty)}"
        )
    return (torch.as_tensor(m_circuit) - m_empty) / gap


def top_circuits(scores: Float[Tensor, " nodes"], sizes: Sequence[int]) -> Bool[Tensor, "k nodes"]:
    """One circuit per size: the ``size`` nodes of largest ``|score|`` (a node threshold)."""
    order = scores.abs().argsort(descending=True, stable=True)
    keep = torch.zeros(len(sizes), scores.numel(), dtype=torch.bool)
    for row, size in enumerate(sizes):
        check_int("sizes[]", size, minimum=0)
        if size > scores.numel():
            raise ValueError(f"sizes must be <= {scores.numel()} nodes, got {size}")
        keep[row, order[:size]] = True
    return keep


def random_circuits(
    candidates: Int[Tensor, " m"], n_nodes: int, sizes: Sequence[int], draws: int, seed: int = 0
) -> Bool[Tensor, "k nodes"]:
    """``draws`` random circuits per size (rows ordered size by size), each ``size`` nodes
    drawn without replacement from ``candidates`` (node numbers below ``n_nodes``)."""
    check_int("draws", draws)
    g = torch.Generator().manual_seed(seed)
    keep = torch.zeros(len(sizes) * draws, n_nodes, dtype=torch.bool)
    for i, size in enumerate(sizes):
        if not 0 <= size <= candidates.numel():
            raise ValueError(f"sizes must lie in [0, {candidates.numel()}], got {size}")
        for d in range(draws):
            pick = candidates[torch.randperm(candidates.numel(), generator=g)[:size]]
            keep[i * draws + d, pick] = True
    return keep


def edge_attributions(
    model: HookedSAETransformer,
    saes: Sequence[SAE],
    task: LogitDiffTask,
    downstream: Int[Tensor, " n"],
    upstream_site: int,
) -> Float[Tensor, "n up_nodes"]:
    """Attribution-patching estimate of the effect along each edge from the nodes of site
    ``upstream_site`` to each ``downstream`` node (a later site's node number).

    Edge ``u -> d``: ``sum over positions of (dm/dd) (dd/du) (corrupted u - clean u)``, mean
    over prompts (Marks et al.'s edge formula, first order): the part of ``d``'s attribution
    that flows from ``u``. One backward pass per downstream node.
    """
    site_of, index = _locate(saes, torch.as_tensor(downstream).flatten())
    if not 0 <= upstream_site < len(saes) or (site_of <= upstream_site).any():
        raise ValueError(
            f"downstream nodes must lie at sites after upstream_site={upstream_site}, "
            f"got sites {site_of.tolist()}"
        )
    clean = node_values(model, saes, task.clean)
    corrupt = node_values(model, saes, task.corrupted)
    grads = node_gradients(model, saes, task.clean, lambda lg: task.logit_diff(lg).sum())
    d_up = SiteNodes(corrupt[upstream_site].acts - clean[upstream_site].acts,
                     corrupt[upstream_site].error - clean[upstream_site].error)  # fmt: skip
    rows = []
    for s, i in zip(site_of.tolist(), index.tolist(), strict=True):
        g = grads[s]
        d_sae = saes[s].cfg.d_sae

        def value(site_nodes: list, s=s, i=i, g=g, d_sae=d_sae) -> Tensor:
            acts, error = site_nodes[s]
            if i < d_sae:
                return (acts[..., i] * g.acts_grad[..., i]).sum()
            return (error * g.error_grad).sum()

        nodes: list = [None] * len(saes)
        up = node_gradients(
            model, saes, task.clean, lambda lg, nodes=nodes: value(nodes), _capture(nodes)
        )[upstream_site]
        rows.append(_attribution(up, d_up))
    return torch.stack(rows)


def _capture(nodes: list):
    """An edit that changes nothing and records each site's nodes (with their graph)."""

    def edit(site: int, acts: Tensor, error: Tensor) -> tuple[Tensor, Tensor]:
        nodes[site] = (acts, error)
        return acts, error

    return edit
