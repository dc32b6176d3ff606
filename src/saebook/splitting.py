"""Feature splitting: following one latent through a family of SAEs of growing width.

SAEs trained on the same hook with more latents tend to refine a coarse latent into several
narrower ones. Without activations, the decoder directions already say which latents belong
together: a latent of a wider SAE whose decoder direction is close (in cosine) to a latent of
the next narrower SAE is its *child*. This module

* computes cross-width decoder cosines and the max-cosine match in either direction
  (:func:`decoder_cosines`, :func:`max_cosine_matches`), with a random-direction baseline
  (:func:`random_max_cosines`) that says how high a max cosine is by chance;
* builds the split tree of one latent (:func:`split_tree`): each latent of a wider SAE hangs
  under its best-matching latent of the previous width when that cosine is above a threshold;
* finds the latent of the narrowest SAE whose tree has the most leaves (:func:`most_split`);
* measures how well the children together cover the tokens where the parent fires
  (:func:`split_coverage`), finds the wide latents that fire almost only where the parent does,
  whatever their decoder direction (:func:`precise_cover`), and draws the tree as a Sankey
  diagram (:func:`split_sankey`).

Chapters: deeper/01
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor
from tqdm import tqdm

from saebook.latent_stats import encode_at_hook
from saebook.validate import check_int, check_tokens

__all__ = [
    "unit_decoder",
    "decoder_cosines",
    "max_cosine_matches",
    "leaf_counts",
    "random_max_cosines",
    "split_tree",
    "most_split",
    "split_coverage",
    "precise_cover",
    "split_sankey",
]


def unit_decoder(sae: SAE) -> Float[Tensor, "d_sae d_in"]:
    """The SAE's decoder rows scaled to unit length, as float32 on the SAE's device."""
    if not isinstance(sae, SAE):
        raise TypeError(f"sae must be a sae_lens.SAE, got {type(sae).__name__}")
    return torch.nn.functional.normalize(sae.W_dec.detach().float(), dim=-1)


def decoder_cosines(narrow: SAE, wide: SAE) -> Float[Tensor, "d_narrow d_wide"]:
    """Cosine similarity of every decoder row of ``narrow`` with every decoder row of ``wide``.

    Both SAEs must write to the same space (equal ``d_in``); the result is on the CPU. The
    full matrix has ``d_narrow * d_wide`` entries: for very wide SAEs use
    :func:`max_cosine_matches`, which works in chunks.
    """
    a, b = unit_decoder(narrow).cpu(), unit_decoder(wide).cpu()
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"narrow and wide must have decoders of the same width (d_in), got {a.shape[1]} "
            f"and {b.shape[1]}"
        )
    return a @ b.T


def max_cosine_matches(
    narrow_decoder: Float[Tensor, "d_narrow d_in"], wide_decoder: Float[Tensor, "d_wide d_in"]
) -> tuple[Float[Tensor, " d_wide"], Int[Tensor, " d_wide"]]:
    """For each row of ``wide_decoder``, its best cosine with any row of ``narrow_decoder``.

    Returns ``(values, indices)``: the largest cosine similarity and the index of the
    narrow row that attains it (the wide latent's *parent*). Rows need not be normalised; a
    zero row has cosine 0 with everything (ties go to the lowest index).
    """
    for name, w in (("narrow_decoder", narrow_decoder), ("wide_decoder", wide_decoder)):
        if not isinstance(w, Tensor) or w.ndim != 2:
            raise ValueError(f"{name} must be a 2-D tensor (latents, d_in), got {w!r:.60}")
    if narrow_decoder.shape[1] != wide_decoder.shape[1]:
        raise ValueError(
            f"narrow_decoder and wide_decoder must have the same d_in, got "
            f"{narrow_decoder.shape[1]} and {wide_decoder.shape[1]}"
        )
    if narrow_decoder.shape[0] == 0:
        raise ValueError("narrow_decoder must have at least one row, got 0")
    a = torch.nn.functional.normalize(narrow_decoder.float(), dim=-1)
    b = torch.nn.functional.normalize(wide_decoder.float(), dim=-1).to(a.device)
    # chunks of wide rows keep the cosine block under ~2^26 entries (wide SAEs have 10^5 rows)
    step = max(1, 2**26 // a.shape[0])
    values, indices = [], []
    for start in range(0, b.shape[0], step):
        best = (b[start : start + step] @ a.T).max(dim=-1)
        values.append(best.values.cpu())
        indices.append(best.indices.cpu())
    return torch.cat(values), torch.cat(indices)


def random_max_cosines(narrow: SAE, n: int = 1000, seed: int = 0) -> Float[Tensor, " n"]:
    """Best cosine of ``n`` random Gaussian directions with ``narrow``'s decoder rows.

    The chance level for :func:`max_cosine_matches`: a wide latent that is a genuine child
    of a narrow one must match it far better than a random direction in the same space.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    dec = unit_decoder(narrow)
    g = torch.Generator().manual_seed(seed)
    random = torch.randn(n, dec.shape[1], generator=g).to(dec.device)
    return max_cosine_matches(dec, random)[0]


def _check_family(saes: Sequence[SAE]) -> list[SAE]:
    saes = list(saes)
    if len(saes) < 2:
        raise ValueError(f"saes must hold at least two SAEs (narrow to wide), got {len(saes)}")
    return saes


def _check_threshold(threshold: float) -> float:
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be a cosine in [0, 1), got {threshold!r}")
    return float(threshold)


def _parents(saes: list[SAE]) -> list[tuple[Tensor, Tensor]]:
    """For each width after the first: (best cosine, parent index) of every latent."""
    decs = [unit_decoder(s) for s in saes]
    return [max_cosine_matches(decs[i], decs[i + 1]) for i in range(len(decs) - 1)]


def split_tree(
    saes: Sequence[SAE],
    latent: int,
    threshold: float = 0.5,
    max_children: int | None = None,
) -> pd.DataFrame:
    """The split tree of ``latent`` of ``saes[0]`` through ``saes[1:]`` (narrow to wide).

    A latent of ``saes[i + 1]`` is a child of a tree node of ``saes[i]`` when that node is its
    best-matching (max-cosine) latent of ``saes[i]`` and the cosine is at least
    ``threshold``; so each latent has at most one parent and the result is a tree. With
    ``max_children`` only the most similar children of each node are kept.

    Returns one row per edge: ``level`` (index of the parent's SAE), ``parent``, ``child``
    (latent indices in ``saes[level]`` and ``saes[level + 1]``), ``d_parent``, ``d_child``
    (the two widths) and ``cosine``. No edge rows means the latent did not survive the first
    step.
    """
    saes = _check_family(saes)
    threshold = _check_threshold(threshold)
    latent = _check_root(saes, latent)
    _check_max_children(max_children)
    return _tree(saes, _parents(saes), latent, threshold, max_children)


def _check_root(saes: list[SAE], latent: object) -> int:
    d0 = saes[0].cfg.d_sae
    if isinstance(latent, Tensor) and latent.numel() == 1:
        latent = int(latent)
    if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent < d0:
        raise ValueError(f"latent must be an int in [0, {d0}) (saes[0].cfg.d_sae), got {latent!r}")
    return latent


def _check_max_children(max_children: object) -> None:
    if max_children is not None and (
        isinstance(max_children, bool) or not isinstance(max_children, int) or max_children < 1
    ):
        raise ValueError(f"max_children must be a positive int or None, got {max_children!r}")


def _tree(
    saes: list[SAE],
    parents: list[tuple[Tensor, Tensor]],
    latent: int,
    threshold: float,
    max_children: int | None,
) -> pd.DataFrame:
    rows, frontier = [], [latent]
    for level, (cos, parent) in enumerate(parents):
        nxt = []
        for node in frontier:
            kids = torch.nonzero((parent == node) & (cos >= threshold)).flatten()
            kids = kids[cos[kids].argsort(descending=True)]
            if max_children is not None:
                kids = kids[:max_children]
            for kid in kids.tolist():
                rows.append(
                    {
                        "level": level,
                        "parent": node,
                        "child": kid,
                        "d_parent": saes[level].cfg.d_sae,
                        "d_child": saes[level + 1].cfg.d_sae,
                        "cosine": float(cos[kid]),
                    }
                )
                nxt.append(kid)
        frontier = nxt
    columns = ["level", "parent", "child", "d_parent", "d_child", "cosine"]
    return pd.DataFrame(rows, columns=columns)


def _leaf_counts(saes: list[SAE], parents: list[tuple[Tensor, Tensor]], threshold: float) -> Tensor:
    """Leaves in the widest SAE under every latent of ``saes[0]`` (no cap on children)."""
    return _count_leaves(parents, [s.cfg.d_sae for s in saes], threshold)


def _count_leaves(
    parents: list[tuple[Tensor, Tensor]], widths: list[int], threshold: float
) -> Tensor:
    counts = torch.ones(widths[-1], dtype=torch.long)
    for level in range(len(parents) - 1, -1, -1):
        cos, parent = parents[level]
        linked = cos >= threshold
        up = torch.zeros(widths[level], dtype=torch.long)
        counts = up.scatter_add_(0, parent[linked], counts[linked])
    return counts


def leaf_counts(decoders: Sequence[Tensor], threshold: float = 0.5) -> Int[Tensor, " d_0"]:
    """For every latent of the narrowest decoder, the number of leaves of its split tree.

    ``decoders`` are decoder matrices ``(d_sae_i, d_in)`` from narrow to wide. Each latent of
    ``decoders[i + 1]`` links to its max-cosine row of ``decoders[i]`` when that cosine is at
    least ``threshold`` (:func:`max_cosine_matches`); a leaf is a latent of the widest
    decoder, and a latent with no linked child has 0 leaves (so does a widest latent whose
    chain of links breaks).
    """
    decoders = list(decoders)
    if len(decoders) < 2:
        raise ValueError(
            f"decoders must hold at least two matrices (narrow to wide), got {len(decoders)}"
        )
    threshold = _check_threshold(threshold)
    parents = [max_cosine_matches(decoders[i], decoders[i + 1]) for i in range(len(decoders) - 1)]
    return _count_leaves(parents, [int(d.shape[0]) for d in decoders], threshold)


def most_split(
    saes: Sequence[SAE],
    threshold: float = 0.5,
    candidates: Sequence[int] | None = None,
    max_children: int | None = None,
    progress: bool = True,
) -> tuple[int, pd.DataFrame]:
    """The latent of ``saes[0]`` (among ``candidates``, default all) with the most leaves.

    Leaves are tree nodes in the widest SAE (see :func:`split_tree`); ties go to the lower
    latent index. Without ``max_children`` the leaves of all latents are counted at once,
    bottom-up; with it, one tree per candidate is built (with a progress bar). Returns
    ``(latent, its tree)``.
    """
    saes = _check_family(saes)
    threshold = _check_threshold(threshold)
    _check_max_children(max_children)
    parents = _parents(saes)
    pool = list(range(saes[0].cfg.d_sae)) if candidates is None else list(candidates)
    if len(pool) == 0:
        raise ValueError("candidates must name at least one latent, got an empty list")
    pool = [_check_root(saes, latent) for latent in pool]
    if max_children is None:
        leaves = _leaf_counts(saes, parents, threshold)[torch.tensor(pool)]
        best = min(p for p, n in zip(pool, leaves.tolist(), strict=True) if n == leaves.max())
        return best, _tree(saes, parents, best, threshold, None)
    last = len(saes) - 2
    best, best_tree, best_leaves = pool[0], None, -1
    for latent in tqdm(pool, desc="Split trees", disable=not progress):
        tree = _tree(saes, parents, latent, threshold, max_children)
        leaves = int((tree["level"] == last).sum())
        if leaves > best_leaves or (leaves == best_leaves and latent < best):
            best, best_tree, best_leaves = latent, tree, leaves
    return best, best_tree


def split_coverage(
    parent_fires: Bool[Tensor, " n"], child_fires: Bool[Tensor, "n k"]
) -> dict[str, float | list[float]]:
    """How well children cover the positions where their parent fires.

    ``parent_fires`` marks the positions where the parent latent is active, ``child_fires``
    where each of ``k`` children is. Returns ``per_child`` (the share of the parent's
    positions where each child fires), ``best_single`` (the largest of those), ``union``
    (the share where at least one child fires) and ``union_precision`` (the share of the
    union's positions where the parent fires too).
    """
    if parent_fires.ndim != 1:
        raise ValueError(f"parent_fires must be 1-D (positions,), got {tuple(parent_fires.shape)}")
    if child_fires.ndim != 2 or child_fires.shape[0] != parent_fires.shape[0]:
        raise ValueError(
            f"child_fires must be ({parent_fires.shape[0]}, k), got {tuple(child_fires.shape)}"
        )
    n_parent = int(parent_fires.sum())
    if n_parent == 0:
        raise ValueError("parent_fires must be True somewhere: the parent never fires")
    parent, kids = parent_fires.bool(), child_fires.bool()
    per_child = (kids & parent[:, None]).sum(0).float() / n_parent
    union = kids.any(-1)
    n_union = int(union.sum())
    return {
        "per_child": per_child.tolist(),
        "best_single": float(per_child.max()) if per_child.numel() else 0.0,
        "union": float((union & parent).sum()) / n_parent,
        "union_precision": float((union & parent).sum()) / n_union if n_union else 0.0,
    }


@torch.no_grad()
def precise_cover(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, "rows seq"],
    parent_fires: Bool[Tensor, " n"],
    min_precision: float = 0.8,
    min_fires: int = 5,
    batch_size: int = 32,
) -> dict[str, float | int | list[int]]:
    """The latents of ``sae`` that fire almost only where the parent fires, and their cover.

    ``parent_fires`` marks the parent's active positions of ``tokens`` (flattened, rows x
    seq). A latent of ``sae`` is *precise* when it fires at least ``min_fires`` times and at
    least ``min_precision`` of its firing positions are the parent's. Returns ``latents`` (the
    precise ones), ``n_precise``, ``union`` (the share of the parent's positions where at least
    one of them fires) and ``best_single`` (the largest share one of them covers). One pass
    over ``batch_size`` rows at a time keeps only the (position, latent) pairs that fire, so a
    wide SAE never needs a dense (positions x d_sae) matrix.
    """
    tokens = check_tokens(tokens, model)
    batch_size = check_int("batch_size", batch_size)
    n, seq = tokens.numel(), tokens.shape[1]
    if parent_fires.shape != (n,):
        raise ValueError(f"parent_fires must have shape ({n},) (rows x seq), got "
                         f"{tuple(parent_fires.shape)}")  # fmt: skip
    if not 0 < min_precision <= 1:
        raise ValueError(f"min_precision must be in (0, 1], got {min_precision!r}")
    parent = parent_fires.bool().cpu()
    n_parent = int(parent.sum())
    if n_parent == 0:
        raise ValueError("parent_fires must be True somewhere: the parent never fires")
    device = torch.device(model.cfg.device) if model.cfg.device is not None else tokens.device
    positions, latents = [], []
    for start in range(0, tokens.shape[0], batch_size):
        batch = tokens[start : start + batch_size].to(device)
        pos, lat = (encode_at_hook(model, sae, batch).flatten(0, 1) > 0).nonzero(as_tuple=True)
        positions.append(pos.cpu() + start * seq)
        latents.append(lat.cpu())
    pos, lat = torch.cat(positions), torch.cat(latents)
    counts = torch.bincount(lat, minlength=sae.cfg.d_sae)
    hits = torch.bincount(lat[parent[pos]], minlength=sae.cfg.d_sae)
    keep = (counts >= min_fires) & (hits >= min_precision * counts)
    covered = torch.zeros(n, dtype=torch.bool)
    covered[pos[keep[lat]]] = True
    return {
        "latents": keep.nonzero().squeeze(-1).tolist(),
        "n_precise": int(keep.sum()),
        "union": float((covered & parent).sum()) / n_parent,
        "best_single": float(hits[keep].max()) / n_parent if keep.any() else 0.0,
    }


def split_sankey(
    tree: pd.DataFrame,
    root: tuple[int, int],
    names: dict[tuple[int, int], str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """A Sankey diagram of a split tree from :func:`split_tree`.

    ``root`` is ``(d_sae, latent)`` of the tree's root; nodes are keyed ``(d_sae, latent)`` and
    labelled ``"<latent> @<d_sae>"`` plus ``names[key]`` when given (e.g. top tokens). Link
    widths are the cosines, so a child that matches its parent well draws a thicker band.
    """
    names = names or {}
    keys = [root]
    for row in tree.itertuples():
        for key in ((int(row.d_parent), int(row.parent)), (int(row.d_child), int(row.child))):
            if key not in keys:
                keys.append(key)
    index = {k: i for i, k in enumerate(keys)}

    def label(key: tuple[int, int]) -> str:
        extra = names.get(key)
        return f"{key[1]} @{key[0]}" + (f": {extra}" if extra else "")

    fig = go.Figure(
        go.Sankey(
            node={"label": [label(k) for k in keys], "pad": 12, "thickness": 14},
            link={
                "source": [index[(int(r.d_parent), int(r.parent))] for r in tree.itertuples()],
                "target": [index[(int(r.d_child), int(r.child))] for r in tree.itertuples()],
                "value": tree["cosine"].tolist(),
                "customdata": [f"cos {c:.2f}" for c in tree["cosine"]],
                "hovertemplate": "%{customdata}<extra></extra>",
            },
        )
    )
    fig.update_layout(title=title or f"Split tree of latent {root[1]} (width {root[0]})")
    return fig
