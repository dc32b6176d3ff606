"""The geometry of SAE dictionaries: maps, clusters and label structure of decoder directions.

An SAE's decoder is a cloud of unit directions. This module

* pools the decoder directions of several SAEs (:func:`pooled_directions`);
* names each latent by the ground-truth label it detects best (:func:`latent_labels`);
* projects the directions to two dimensions with UMAP on cosine distance, or t-SNE as a
  fallback (:func:`embed_2d`), and clusters them with scikit-learn's HDBSCAN
  (:func:`cluster_directions`);
* tests whether latents with the same label point in similar directions, against a
  permutation baseline (:func:`label_cosine_test`);
* draws the map with hover text (:func:`geometry_figure`).

Chapters: deeper/01, deeper/02, deeper/04
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE
from sklearn.cluster import HDBSCAN
from torch import Tensor

__all__ = [
    "pooled_directions",
    "latent_labels",
    "cosine_neighbours",
    "embed_2d",
    "cluster_directions",
    "label_cosine_test",
    "within_label_cosine",
    "geometry_figure",
]


def pooled_directions(
    saes: Sequence[SAE], max_per_sae: int | None = None, seed: int = 0
) -> tuple[Float[Tensor, "n d_in"], pd.DataFrame]:
    """Unit decoder directions of all ``saes`` stacked, and a frame naming each row.

    The frame has one row per direction with ``width`` (that SAE's ``d_sae``), ``sae`` (its
    position in ``saes``) and ``latent`` (its index in that SAE). With ``max_per_sae``, an SAE
    with more latents contributes a seeded random subset of that many (sorted by index).
    All SAEs must share ``d_in``.
    """
    if max_per_sae is not None and max_per_sae < 1:
        raise ValueError(f"max_per_sae must be a positive int or None, got {max_per_sae!r}")
    saes = list(saes)
    if not saes:
        raise ValueError("saes must hold at least one SAE, got none")
    d_in = {int(s.W_dec.shape[1]) for s in saes}
    if len(d_in) != 1:
        raise ValueError(f"saes must share one decoder width d_in, got {sorted(d_in)}")
    dirs, frames = [], []
    g = torch.Generator().manual_seed(seed)
    for i, sae in enumerate(saes):
        index = torch.arange(sae.cfg.d_sae)
        if max_per_sae is not None and sae.cfg.d_sae > max_per_sae:
            index = torch.randperm(sae.cfg.d_sae, generator=g)[:max_per_sae].sort().values
        w = sae.W_dec.detach()[index.to(sae.W_dec.device)].float().cpu()
        dirs.append(torch.nn.functional.normalize(w, dim=-1))
        frames.append(pd.DataFrame({"width": sae.cfg.d_sae, "sae": i, "latent": index.numpy()}))
    return torch.cat(dirs), pd.concat(frames, ignore_index=True)


def latent_labels(
    latent_acts: Float[Tensor, "n d_sae"],
    labels: dict[str, Bool[Tensor, " n"]],
    min_f1: float = 0.0,
) -> list[tuple[str | None, float]]:
    """For each latent, the label it detects best (highest F1) and that F1.

    A latent "predicts" a label where its activation is > 0. Latents that never fire, or
    whose best F1 is below ``min_f1``, get ``(None, f1)``.
    """
    if latent_acts.ndim != 2:
        raise ValueError(f"latent_acts must be 2-D (positions, latents), got {latent_acts.ndim}-D")
    if not labels:
        raise ValueError("labels must hold at least one label, got none")
    n = latent_acts.shape[0]
    names = list(labels)
    for name in names:
        if labels[name].shape != (n,):
            raise ValueError(
                f"labels[{name!r}] must have shape ({n},), got {tuple(labels[name].shape)}"
            )
    fires = (latent_acts > 0).float()
    lab = torch.stack([labels[k].float() for k in names], dim=1)  # (n, n_labels)
    tp = lab.T @ fires  # (n_labels, d_sae)
    precision = tp / fires.sum(0).clamp(min=1)
    recall = tp / lab.sum(0).clamp(min=1)[:, None]
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    best = f1.max(dim=0)
    return [
        (names[int(i)] if float(v) >= min_f1 and float(v) > 0 else None, float(v))
        for v, i in zip(best.values, best.indices, strict=True)
    ]


def cosine_neighbours(
    directions: Float[Tensor, "n d"], k: int
) -> tuple[Float[Tensor, "n k"], Int[Tensor, "n k"]]:
    """The ``k`` rows most cosine-similar to each row, itself included (usually first).

    Returns ``(similarities, indices)``, each ``(n, k)``, most similar first: the exact
    cosine k-nearest-neighbour graph that :func:`embed_2d` hands to UMAP. A zero row has
    cosine 0 with everything.
    """
    if directions.ndim != 2:
        raise ValueError(f"directions must be 2-D (n, d), got shape {tuple(directions.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= directions.shape[0]:
        raise ValueError(f"k must be an int in [1, {directions.shape[0]}] (rows), got {k!r}")
    unit = torch.nn.functional.normalize(directions.float(), dim=-1)
    return (unit @ unit.T).topk(k, dim=-1)


def embed_2d(
    directions: Float[Tensor, "n d"],
    method: str = "umap",
    n_neighbors: int = 15,
    n_epochs: int = 100,
    seed: int = 0,
) -> np.ndarray:
    """A 2-D map of ``directions`` that keeps cosine neighbours close: an ``(n, 2)`` array.

    ``method="umap"`` uses umap-learn on the exact ``n_neighbors`` cosine neighbours
    (``n_epochs`` optimisation epochs; the first call in a process also pays numba's compile
    time, tens of seconds), ``method="tsne"`` scikit-learn's t-SNE on cosine distance.
    """
    if directions.ndim != 2 or directions.shape[0] < 3:
        raise ValueError(
            f"directions must be 2-D with at least 3 rows, got shape {tuple(directions.shape)}"
        )
    x = directions.detach().float().cpu().numpy()
    if method == "umap":
        import warnings

        import umap

        # exact cosine neighbours from one matrix product: faster than UMAP's approximate
        # search at these sizes, and it skips compiling the search with numba
        k = min(n_neighbors, x.shape[0] - 1)
        sims, index = cosine_neighbours(directions.detach().cpu(), k)
        dists = (1 - sims).clamp(min=0)
        reducer = umap.UMAP(
            n_neighbors=k,
            metric="cosine",
            n_epochs=n_epochs,
            random_state=seed,
            n_jobs=1,
            precomputed_knn=(index.numpy(), dists.numpy(), None),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # n_jobs/random_state notes
            return np.asarray(reducer.fit_transform(x))
    if method == "tsne":
        from sklearn.manifold import TSNE

        tsne = TSNE(metric="cosine", perplexity=min(30.0, (x.shape[0] - 1) / 3), random_state=seed,
                    init="random")  # fmt: skip
        return np.asarray(tsne.fit_transform(x))
    raise ValueError(f"method must be 'umap' or 'tsne', got {method!r}")


def cluster_directions(
    points: np.ndarray, min_cluster_size: int = 15, min_samples: int | None = 3
) -> np.ndarray:
    """HDBSCAN cluster id of each row of ``points`` (``-1``: noise, in no cluster).

    A small ``min_samples`` lets HDBSCAN split a map into many local clusters instead of
    one cluster covering nearly everything (which its default, ``min_cluster_size``, does on
    UMAP maps of SAE dictionaries).
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[0] < 2:
        raise ValueError(f"points must be 2-D with at least 2 rows, got shape {points.shape}")
    if min_cluster_size < 2:
        raise ValueError(f"min_cluster_size must be >= 2, got {min_cluster_size}")
    return HDBSCAN(
        min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True
    ).fit_predict(points)


def within_label_cosine(directions: Float[Tensor, "n d"], codes: Int[Tensor, " n"]) -> float:
    """Mean cosine similarity over the pairs ``i != j`` of directions with ``codes[i] ==
    codes[j] >= 0`` (a negative code means unlabelled); NaN when no such pair exists."""
    if directions.ndim != 2 or codes.shape != (directions.shape[0],):
        raise ValueError(
            f"codes must have shape ({directions.shape[0]},) to match directions "
            f"{tuple(directions.shape)}, got {tuple(codes.shape)}"
        )
    unit = torch.nn.functional.normalize(directions.float(), dim=-1)
    return _within_mean(unit @ unit.T, codes)


def _within_mean(sim: Tensor, codes: Tensor) -> float:
    same = (codes[:, None] == codes[None, :]) & (codes[:, None] >= 0)
    same.fill_diagonal_(False)
    return float(sim[same].mean()) if bool(same.any()) else float("nan")


def label_cosine_test(
    directions: Float[Tensor, "n d"],
    groups: Sequence[str | None],
    n_permutations: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Do directions with the same label point closer together than chance?

    Over the labelled rows (``groups[i]`` not None), computes the mean cosine of pairs that
    share a label (``within``) and of all pairs (``all_pairs``). The baseline shuffles the
    labels among those rows ``n_permutations`` times: ``baseline`` is the mean of the
    shuffled ``within`` values and ``p_value`` the share of shuffles at least as high as the
    real one (with the +1 correction).
    """
    if len(groups) != directions.shape[0]:
        raise ValueError(
            f"groups must have one entry per direction ({directions.shape[0]}), got {len(groups)}"
        )
    keep = [i for i, g in enumerate(groups) if g is not None]
    names = sorted({groups[i] for i in keep})
    if len(keep) < 3 or len(names) < 2:
        raise ValueError(
            f"groups must label at least 3 directions with at least 2 labels, got {len(keep)} "
            f"labelled directions and {len(names)} labels"
        )
    codes = torch.tensor([names.index(groups[i]) for i in keep])
    if bool((torch.bincount(codes) < 2).all()):
        raise ValueError("groups must have a label shared by at least two directions, got none")
    unit = torch.nn.functional.normalize(directions[keep].detach().float().cpu(), dim=-1)
    sim = unit @ unit.T
    within = _within_mean(sim, codes)
    off = ~torch.eye(len(keep), dtype=torch.bool)
    g = torch.Generator().manual_seed(seed)
    shuffled = [
        _within_mean(sim, codes[torch.randperm(len(keep), generator=g)])
        for _ in range(n_permutations)
    ]
    higher = sum(s >= within for s in shuffled)
    return {
        "within": within,
        "all_pairs": float(sim[off].mean()),
        "baseline": float(np.mean(shuffled)),
        "p_value": (higher + 1) / (n_permutations + 1),
        "n_labelled": float(len(keep)),
    }


def geometry_figure(
    frame: pd.DataFrame,
    xy: np.ndarray,
    color: str,
    hover: str | None = None,
    title: str | None = None,
) -> go.Figure:
    """A scatter of the 2-D map ``xy`` with one point per row of ``frame``.

    Points are coloured by ``frame[color]`` (as categories) and show ``frame[hover]`` on
    hover; coordinates are rounded to keep the page small.
    """
    if len(frame) != len(xy):
        raise ValueError(f"xy must have one row per frame row ({len(frame)}), got {len(xy)}")
    if color not in frame:
        raise KeyError(f"color must be a column of frame {list(frame.columns)}, got {color!r}")
    data = frame.assign(x=np.round(xy[:, 0], 2), y=np.round(xy[:, 1], 2))
    data[color] = data[color].astype(str)
    fig = px.scatter(
        data,
        x="x",
        y="y",
        color=color,
        hover_data=[c for c in ("width", "latent", hover) if c and c in data],
        title=title,
        opacity=0.7,
    )
    fig.update_traces(marker={"size": 4})
    fig.update_layout(xaxis={"showticklabels": False, "title": ""},
                      yaxis={"showticklabels": False, "title": ""})  # fmt: skip
    return fig
