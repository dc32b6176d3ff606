"""Toy models of superposition: synthetic sparse features squeezed through a narrow layer.

A toy model stores ``n_features`` sparse, non-negative features in ``n_hidden < n_features``
dimensions and reads them back with tied weights:

    h = W x,    x' = ReLU(W^T h + b),    W: (n_hidden, n_features)

Column ``W[:, i]`` is the direction feature ``i`` occupies in the hidden space. Every model
here is *batched over instances*: one module holds ``n_instances`` independent models that
are trained in one vectorised run (typically each on its own feature probability), and all
tensors carry an ``instances`` axis.

This module generates the synthetic data, trains the models and measures their geometry
(feature norms, interference, dimensionality); the plotting helpers return plotly figures.

Chapters: toy_models/01, toy_models/02, toy_models/03, toy_models/04
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from plotly.subplots import make_subplots
from torch import Tensor, nn
from tqdm import tqdm

from saebook.validate import check_int

__all__ = [
    "InstancedToyModel",
    "ToyModel",
    "importance_weights",
    "feature_probability_sweep",
    "generate_batch",
    "weighted_mse",
    "train_toy_model",
    "feature_norms",
    "interference",
    "superposition_measure",
    "feature_dimensionality",
    "dimensions_per_feature",
    "represented_features",
    "TWO_FEATURE_PHASES",
    "two_feature_phase",
    "plot_feature_directions",
    "plot_wtw",
    "plot_feature_norms",
    "plot_dimensionality",
    "plot_latent_directions",
    "plot_phase_diagram",
]

_EPS = 1e-8


def importance_weights(n_features: int, decay: float = 1.0) -> Float[Tensor, " features"]:
    """Importance of each feature in the loss: ``decay ** i`` for feature ``i``.

    Args:
        n_features: number of features.
        decay: ratio between consecutive importances, in ``(0, 1]``; 1 makes all features
            equally important.

    Returns:
        A float tensor of shape ``(n_features,)``, starting at 1.
    """
    check_int("n_features", n_features)
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay!r}")
    return decay ** torch.arange(n_features, dtype=torch.float32)


def feature_probability_sweep(
    n_instances: int, min_probability: float, max_probability: float = 1.0
) -> Float[Tensor, " instances"]:
    """Feature probabilities spaced geometrically from dense to sparse, one per instance.

    Args:
        n_instances: number of probabilities (one per model instance).
        min_probability: the sparsest probability, for the last instance.
        max_probability: the densest probability, for the first instance.

    Returns:
        A float tensor of shape ``(n_instances,)`` decreasing from ``max_probability`` to
        ``min_probability`` (just ``max_probability`` when ``n_instances`` is 1).
    """
    check_int("n_instances", n_instances)
    if not 0 < min_probability <= max_probability <= 1:
        raise ValueError(
            "min_probability and max_probability must satisfy "
            "0 < min_probability <= max_probability <= 1, got "
            f"min_probability={min_probability!r}, max_probability={max_probability!r}"
        )
    if n_instances == 1:
        return torch.tensor([max_probability], dtype=torch.float32)
    exponents = torch.linspace(0, 1, n_instances)
    return (max_probability * (min_probability / max_probability) ** exponents).float()


def generate_batch(
    batch_size: int,
    feature_probability: Float[Tensor, " instances"],
    n_features: int,
    n_correlated_pairs: int = 0,
    n_anticorrelated_pairs: int = 0,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "batch instances features"]:
    """Sample sparse feature vectors: each feature is 0, or uniform in [0, 1) when present.

    Every feature of instance ``k`` is present with probability ``feature_probability[k]``.
    Features are laid out as ``n_correlated_pairs`` pairs ``(0, 1), (2, 3), ...`` that are
    always present together, then ``n_anticorrelated_pairs`` pairs that are never present
    together (the pair is present with probability ``2p`` and then exactly one of its two
    features, chosen uniformly), then independent features. Each feature keeps the marginal
    probability ``p``; magnitudes are always drawn independently.

    Args:
        batch_size: number of samples.
        feature_probability: per-instance probability that a feature is present.
        n_features: features per sample.
        n_correlated_pairs: pairs of features present together.
        n_anticorrelated_pairs: pairs of features never present together (needs p <= 0.5).
        generator: optional torch generator for reproducible samples.

    Returns:
        A float tensor of shape ``(batch_size, instances, n_features)``.
    """
    check_int("batch_size", batch_size)
    check_int("n_features", n_features)
    prob = torch.as_tensor(feature_probability, dtype=torch.float32)
    if prob.ndim != 1 or prob.numel() == 0:
        raise ValueError(
            f"feature_probability must be a non-empty 1-D tensor (instances,), got shape "
            f"{tuple(prob.shape)}"
        )
    if ((prob < 0) | (prob > 1)).any():
        raise ValueError(f"feature_probability must lie in [0, 1], got {prob.tolist()}")
    n_paired = 2 * (n_correlated_pairs + n_anticorrelated_pairs)
    if n_correlated_pairs < 0 or n_anticorrelated_pairs < 0 or n_paired > n_features:
        raise ValueError(
            "need 0 <= 2 * (n_correlated_pairs + n_anticorrelated_pairs) <= n_features, got "
            f"n_correlated_pairs={n_correlated_pairs}, "
            f"n_anticorrelated_pairs={n_anticorrelated_pairs}, n_features={n_features}"
        )
    if n_anticorrelated_pairs and (prob > 0.5).any():
        raise ValueError(
            "anticorrelated pairs need feature_probability <= 0.5 (the pair is present with "
            f"probability 2p), got {prob.max().item():.3g}"
        )
    n_inst = prob.numel()
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    p = prob.view(1, n_inst, 1)
    parts = []
    if n_correlated_pairs:
        together = rand(batch_size, n_inst, n_correlated_pairs) < p
        parts.append(together.repeat_interleave(2, dim=-1))
    if n_anticorrelated_pairs:
        pair_on = rand(batch_size, n_inst, n_anticorrelated_pairs) < 2 * p
        first = rand(batch_size, n_inst, n_anticorrelated_pairs) < 0.5
        parts.append(torch.stack([pair_on & first, pair_on & ~first], dim=-1).flatten(-2))
    n_free = n_features - n_paired
    if n_free:
        parts.append(rand(batch_size, n_inst, n_free) < p)
    present = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
    return rand(batch_size, n_inst, n_features) * present


class InstancedToyModel(nn.Module):
    """Base of the toy models: ``n_instances`` independent models of ``n_features`` features
    through ``n_hidden`` dimensions, trained side by side (one batch axis per instance).

    Checks the sizes and the input shape; :meth:`xavier` draws Xavier-normal weights.
    """

    def __init__(self, n_features: int, n_hidden: int, n_instances: int = 1) -> None:
        super().__init__()
        for name, value in (
            ("n_features", n_features),
            ("n_hidden", n_hidden),
            ("n_instances", n_instances),
        ):
            check_int(name, value)
        self.n_features, self.n_hidden, self.n_instances = n_features, n_hidden, n_instances

    def xavier(self, *shape: int, generator: torch.Generator | None = None) -> Tensor:
        """Normal weights of ``shape`` with Xavier's std ``sqrt(2 / (features + hidden))``."""
        std = math.sqrt(2.0 / (self.n_features + self.n_hidden))
        return torch.randn(*shape, generator=generator) * std

    def _check_input(self, x: Tensor) -> None:
        expected = (self.n_instances, self.n_features)
        if x.ndim != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"x must have shape (batch, {expected[0]}, {expected[1]}) = (batch, instances, "
                f"features), got {tuple(x.shape)}"
            )


class ToyModel(InstancedToyModel):
    """``n_instances`` independent toy models ``x' = ReLU(W^T W x + b)``.

    Attributes:
        W: ``(instances, hidden, features)``; ``W[k, :, i]`` is feature ``i``'s direction
            in instance ``k``.
        b: ``(instances, features)`` output bias.
    """

    def __init__(
        self,
        n_features: int,
        n_hidden: int,
        n_instances: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(n_features, n_hidden, n_instances)
        self.W = nn.Parameter(self.xavier(n_instances, n_hidden, n_features, generator=generator))
        self.b = nn.Parameter(torch.zeros(n_instances, n_features))

    def hidden(
        self, x: Float[Tensor, "batch instances features"]
    ) -> Float[Tensor, "batch instances hidden"]:
        """The hidden activations ``h = W x`` of every instance."""
        self._check_input(x)
        return torch.einsum("bif,ihf->bih", x, self.W)

    def forward(
        self, x: Float[Tensor, "batch instances features"]
    ) -> Float[Tensor, "batch instances features"]:
        """The reconstruction ``ReLU(W^T W x + b)`` of every instance."""
        h = self.hidden(x)
        return torch.relu(torch.einsum("bih,ihf->bif", h, self.W) + self.b)


def weighted_mse(
    output: Float[Tensor, "batch instances features"],
    target: Float[Tensor, "batch instances features"],
    importance: Float[Tensor, " features"] | Float[Tensor, "instances features"],
) -> Float[Tensor, " instances"]:
    """Importance-weighted squared error, averaged over batch and features, per instance.

    ``importance`` is either ``(features,)``, shared by every instance, or
    ``(instances, features)``, one row of importances per instance.
    """
    if output.shape != target.shape:
        raise ValueError(
            f"output must have the target's shape {tuple(target.shape)}, got {tuple(output.shape)}"
        )
    if importance.shape not in (target.shape[-1:], target.shape[-2:]):
        raise ValueError(
            f"importance must have shape ({target.shape[-1]},) or "
            f"({target.shape[-2]}, {target.shape[-1]}) = (instances, features), got "
            f"{tuple(importance.shape)}"
        )
    return (importance * (output - target) ** 2).mean(dim=(0, 2))


def train_toy_model(
    model: ToyModel,
    feature_probability: Float[Tensor, " instances"],
    importance: Float[Tensor, " features"] | Float[Tensor, "instances features"] | None = None,
    steps: int = 5_000,
    batch_size: int = 1024,
    lr: float = 1e-2,
    n_correlated_pairs: int = 0,
    n_anticorrelated_pairs: int = 0,
    log_every: int = 50,
    progress: bool = True,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "logs instances"]:
    """Train every instance of ``model`` on its own feature probability, in one loop.

    Each step samples a fresh batch with :func:`generate_batch` and takes an Adam step on the
    sum over instances of :func:`weighted_mse` (instances share no parameters, so each one
    follows its own gradient). The learning rate decays along a half cosine to 10% of ``lr``.

    Args:
        model: the toy models to train, in place.
        feature_probability: ``(instances,)`` probability that a feature is present.
        importance: ``(features,)`` weights of the loss shared by every instance, or
            ``(instances, features)`` for one set of weights per instance; all ones by
            default.
        steps: optimisation steps.
        batch_size: samples per step.
        lr: peak learning rate.
        n_correlated_pairs, n_anticorrelated_pairs: passed to :func:`generate_batch`.
        log_every: record the loss every this many steps.
        progress: show a progress bar.
        generator: optional torch generator for the data.

    Returns:
        The per-instance loss at steps ``0, log_every, 2 * log_every, ...``, shape
        ``(ceil(steps / log_every), instances)``.
    """
    check_int("steps", steps)
    check_int("log_every", log_every)
    prob = torch.as_tensor(feature_probability, dtype=torch.float32)
    if prob.shape != (model.n_instances,):
        raise ValueError(
            f"feature_probability must have shape ({model.n_instances},) = (instances,), got "
            f"{tuple(prob.shape)}"
        )
    if importance is None:
        importance = torch.ones(model.n_features)
    importance = torch.as_tensor(importance, dtype=torch.float32)
    if importance.shape not in ((model.n_features,), (model.n_instances, model.n_features)):
        raise ValueError(
            f"importance must have shape ({model.n_features},) = (features,) or "
            f"({model.n_instances}, {model.n_features}) = (instances, features), got "
            f"{tuple(importance.shape)}"
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    bar = tqdm(range(steps), desc="Training toy models", unit="step", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr * (0.55 + 0.45 * math.cos(math.pi * step / steps))
        x = generate_batch(
            batch_size,
            prob,
            model.n_features,
            n_correlated_pairs,
            n_anticorrelated_pairs,
            generator=generator,
        )
        loss = weighted_mse(model(x), x, importance)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        if step % log_every == 0:
            history.append(loss.detach())
            bar.set_postfix(loss=f"{loss.mean().item():.4g}", refresh=False)
    return torch.stack(history)


def _as_weights(W: Tensor) -> Tensor:
    W = W.detach() if isinstance(W, Tensor) else torch.as_tensor(W)
    if W.ndim < 2:
        raise ValueError(f"W must have shape (..., hidden, features), got {tuple(W.shape)}")
    return W.float()


def feature_norms(W: Float[Tensor, "*batch hidden features"]) -> Float[Tensor, "*batch features"]:
    """``||W_i||``: the length of each feature's direction (0 means the feature is dropped)."""
    return _as_weights(W).norm(dim=-2)


def interference(
    W: Float[Tensor, "*batch hidden features"],
) -> Float[Tensor, "*batch features features"]:
    """``(Ŵ_i · W_j)^2`` for every pair: how much feature ``j`` leaks into feature ``i``'s unit
    direction. Row ``i`` sums to ``||W_i||^2`` plus the interference feature ``i`` suffers.

    A zero column ``W_i`` has no direction; its row is zero.
    """
    W = _as_weights(W)
    unit = W / W.norm(dim=-2, keepdim=True).clamp_min(_EPS)
    return (unit.transpose(-1, -2) @ W) ** 2


def superposition_measure(
    W: Float[Tensor, "*batch hidden features"],
) -> Float[Tensor, "*batch features"]:
    """``sum_{j != i} (Ŵ_i · W_j)^2``: 0 when feature ``i`` has a dimension to itself."""
    inter = interference(W)
    return inter.sum(-1) - inter.diagonal(dim1=-2, dim2=-1)


def feature_dimensionality(
    W: Float[Tensor, "*batch hidden features"],
) -> Float[Tensor, "*batch features"]:
    """``D_i = ||W_i||^2 / sum_j (Ŵ_i · W_j)^2``, the fraction of a dimension feature ``i`` owns.

    1 for a feature with a dimension to itself, 1/2 for each of an antipodal pair, 2/5 in a
    pentagon, and 0 for a dropped feature (zero column).
    """
    W = _as_weights(W)
    return W.norm(dim=-2) ** 2 / interference(W).sum(-1).clamp_min(_EPS)


def dimensions_per_feature(W: Float[Tensor, "*batch hidden features"]) -> Float[Tensor, " *batch"]:
    """``n_hidden / ||W||_F^2``: hidden dimensions per (unit-norm) feature the model stores."""
    W = _as_weights(W)
    return W.shape[-2] / W.pow(2).sum(dim=(-2, -1)).clamp_min(_EPS)


def represented_features(
    W: Float[Tensor, "*batch hidden features"], threshold: float = 0.5
) -> Float[Tensor, " *batch"]:
    """How many features have ``||W_i|| > threshold`` (stored rather than dropped), as floats."""
    return (feature_norms(W) > threshold).sum(-1).float()


#: What each code of :func:`two_feature_phase` means, by code.
TWO_FEATURE_PHASES = (
    "feature 2 not represented",
    "feature 2 alone (feature 1 dropped)",
    "superposition (antipodal)",
    "other",
)


def two_feature_phase(
    W: Float[Tensor, "*batch hidden 2"], threshold: float = 0.5
) -> Int[Tensor, " *batch"]:
    """Classify how a toy model with two features arranges them, from its weights alone.

    A feature is *stored* when its column has ``||W_i|| > threshold``. The code is

    - 0 (``"feature 2 not represented"``): feature 1 stored, feature 2 not;
    - 1 (``"feature 2 alone (feature 1 dropped)"``): feature 2 stored, feature 1 not;
    - 2 (``"superposition (antipodal)"``): both stored, pointing away from each other
      (``W_1 · W_2 < 0``; in one hidden dimension that makes them antipodal);
    - 3 (``"other"``): neither stored, or both stored with ``W_1 · W_2 >= 0``.

    :data:`TWO_FEATURE_PHASES` holds the names, indexed by code.

    Args:
        W: ``(..., hidden, 2)`` weights; column ``W[..., :, i]`` is feature ``i``'s direction.
        threshold: the norm above which a feature counts as stored.

    Returns:
        An int64 tensor of codes, shape ``W.shape[:-2]``.
    """
    W = _as_weights(W)
    if W.shape[-1] != 2:
        raise ValueError(f"W must have shape (..., hidden, 2), got {tuple(W.shape)}")
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold!r}")
    stored = feature_norms(W) > threshold
    first, second = stored[..., 0], stored[..., 1]
    apart = (W[..., 0] * W[..., 1]).sum(-1) < 0
    code = torch.full(W.shape[:-2], 3, dtype=torch.int64)
    code[first & ~second] = 0
    code[second & ~first] = 1
    code[first & second & apart] = 2
    return code


def _titles(titles: Sequence[str] | None, n: int, name: str = "titles") -> list[str]:
    if titles is None:
        return [f"instance {k}" for k in range(n)]
    titles = [str(t) for t in titles]
    if len(titles) != n:
        raise ValueError(f"{name} must have one entry per instance ({n}), got {len(titles)}")
    return titles


def _grid(n: int, max_cols: int) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def plot_feature_directions(
    W: Float[Tensor, "instances 2 features"],
    titles: Sequence[str] | None = None,
    importance: Float[Tensor, " features"] | None = None,
    max_cols: int = 4,
    title: str | None = None,
) -> go.Figure:
    """Draw each feature's 2-D direction ``W_i`` as a segment from the origin, per instance.

    Segment tips are coloured by importance (or by feature index when ``importance`` is
    None), so one can see which features are stored and which are dropped.

    Returns:
        A plotly figure with one square panel per instance.
    """
    W = _as_weights(W)
    if W.ndim != 3 or W.shape[1] != 2:
        raise ValueError(f"W must have shape (instances, 2, features), got {tuple(W.shape)}")
    n_inst, _, n_feat = W.shape
    names = _titles(titles, n_inst)
    rows, cols = _grid(n_inst, max_cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names)
    colour = (importance if importance is not None else torch.arange(n_feat)).float()
    limit = max(1.0, float(W.abs().max())) * 1.1
    for k in range(n_inst):
        row, col = k // cols + 1, k % cols + 1
        for i in range(n_feat):
            x, y = float(W[k, 0, i]), float(W[k, 1, i])
            fig.add_trace(
                go.Scatter(
                    x=[0, x],
                    y=[0, y],
                    mode="lines",
                    line={"color": "rgba(90,90,110,0.6)", "width": 2},
                    hoverinfo="skip",
                    showlegend=False,
                ),
                row=row,
                col=col,
            )
        fig.add_trace(
            go.Scatter(
                x=W[k, 0].tolist(),
                y=W[k, 1].tolist(),
                mode="markers",
                marker={
                    "size": 9,
                    "color": colour.tolist(),
                    "colorscale": "Viridis",
                    "showscale": k == 0,
                    "colorbar": {"title": "importance" if importance is not None else "feature"},
                },
                text=[f"feature {i}" for i in range(n_feat)],
                hovertemplate="%{text}<br>(%{x:.2f}, %{y:.2f})<extra></extra>",
                showlegend=False,
            ),
            row=row,
            col=col,
        )
        axis = str(k + 1) if k else ""
        fig.update_xaxes(range=[-limit, limit], showticklabels=False, row=row, col=col)
        fig.update_yaxes(
            range=[-limit, limit],
            showticklabels=False,
            scaleanchor=f"x{axis}",
            row=row,
            col=col,
        )
    fig.update_layout(height=260 * rows + 60, title=title, margin={"t": 80})
    return fig


def plot_wtw(
    W: Float[Tensor, "instances hidden features"],
    titles: Sequence[str] | None = None,
    max_cols: int = 5,
    title: str | None = None,
) -> go.Figure:
    """Heatmaps of ``W^T W`` (features x features) per instance, on a shared [-1, 1] scale.

    The diagonal holds ``||W_i||^2``; off-diagonal entries are the dot products through
    which features interfere.

    Returns:
        A plotly figure with one heatmap per instance.
    """
    W = _as_weights(W)
    if W.ndim != 3:
        raise ValueError(f"W must have shape (instances, hidden, features), got {tuple(W.shape)}")
    gram = W.transpose(-1, -2) @ W
    n_inst = W.shape[0]
    names = _titles(titles, n_inst)
    rows, cols = _grid(n_inst, max_cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names)
    for k in range(n_inst):
        fig.add_trace(
            go.Heatmap(
                z=gram[k].tolist(),
                zmin=-1,
                zmax=1,
                colorscale="RdBu",
                reversescale=True,
                showscale=k == 0,
                hovertemplate="W_%{y}·W_%{x} = %{z:.2f}<extra></extra>",
            ),
            row=k // cols + 1,
            col=k % cols + 1,
        )
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=230 * rows + 70, title=title, margin={"t": 80})
    return fig


def plot_feature_norms(
    W: Float[Tensor, "instances hidden features"],
    titles: Sequence[str] | None = None,
    max_cols: int = 5,
    title: str | None = None,
) -> go.Figure:
    """Bars of ``||W_i||`` per feature and instance, coloured by :func:`superposition_measure`.

    Dark bars are features with a dimension to themselves; bright bars share theirs.

    Returns:
        A plotly figure with one horizontal bar chart per instance.
    """
    W = _as_weights(W)
    if W.ndim != 3:
        raise ValueError(f"W must have shape (instances, hidden, features), got {tuple(W.shape)}")
    norms, sup = feature_norms(W), superposition_measure(W)
    n_inst, _, n_feat = W.shape
    names = _titles(titles, n_inst)
    rows, cols = _grid(n_inst, max_cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, shared_yaxes=True)
    cmax = max(1.0, float(sup.max()))
    for k in range(n_inst):
        fig.add_trace(
            go.Bar(
                x=norms[k].tolist(),
                y=list(range(n_feat)),
                orientation="h",
                marker={
                    "color": sup[k].tolist(),
                    "colorscale": "Viridis",
                    "cmin": 0,
                    "cmax": cmax,
                    "showscale": k == 0,
                    "colorbar": {"title": "superposition"},
                },
                customdata=sup[k].tolist(),
                hovertemplate="feature %{y}: ||W_i|| = %{x:.2f}, "
                "superposition %{customdata:.2f}<extra></extra>",
                showlegend=False,
            ),
            row=k // cols + 1,
            col=k % cols + 1,
        )
    fig.update_yaxes(autorange="reversed", title_text="feature", col=1)
    fig.update_xaxes(range=[0, max(1.1, float(norms.max()) * 1.05)])
    fig.update_layout(height=max(300, 14 * n_feat * rows + 120), title=title, margin={"t": 80})
    return fig


#: Dimensionalities of the common arrangements, drawn as guide lines by plot_dimensionality.
_GUIDES = {
    "1 (own dimension)": 1.0,
    "3/4 (tetrahedron in 3-D)": 3 / 4,
    "2/3 (triangle)": 2 / 3,
    "1/2 (antipodal pair)": 1 / 2,
    "2/5 (pentagon)": 2 / 5,
    "3/8 (square antiprism)": 3 / 8,
    "1/3": 1 / 3,
}


def plot_dimensionality(
    feature_probability: Float[Tensor, " instances"],
    W: Float[Tensor, "instances hidden features"],
    min_norm: float = 0.5,
    title: str | None = None,
) -> go.Figure:
    """Dimensions per feature and each feature's dimensionality, against sparsity.

    The x axis is ``1 / p`` (log scale; larger is sparser). The line is
    :func:`dimensions_per_feature` per instance; dots are :func:`feature_dimensionality` of
    every feature with ``||W_i|| > min_norm``. Dashed guide lines mark the fractions of common
    arrangements.

    Returns:
        A plotly figure.
    """
    W = _as_weights(W)
    prob = torch.as_tensor(feature_probability, dtype=torch.float32)
    if W.ndim != 3 or prob.shape != W.shape[:1]:
        raise ValueError(
            "need W of shape (instances, hidden, features) and feature_probability of shape "
            f"(instances,), got {tuple(W.shape)} and {tuple(prob.shape)}"
        )
    inv = (1 / prob).tolist()
    dims, norms = feature_dimensionality(W), feature_norms(W)
    fig = go.Figure()
    for label, value in _GUIDES.items():
        fig.add_hline(
            y=value,
            line={"dash": "dot", "width": 1, "color": "gray"},
            annotation_text=label,
            annotation_position="right",
            annotation_font_size=10,
        )
    xs, ys = [], []
    for k, x in enumerate(inv):
        kept = dims[k][norms[k] > min_norm]
        xs += [x] * kept.numel()
        ys += kept.tolist()
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers",
            marker={"size": 5, "opacity": 0.35, "color": "#4c72b0"},
            name="feature dimensionality D_i",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=inv,
            y=dimensions_per_feature(W).tolist(),
            mode="lines+markers",
            line={"color": "black"},
            name="dimensions per feature m / ||W||²",
        )
    )
    fig.update_xaxes(type="log", title_text="1 / feature probability (sparser to the right)")
    fig.update_yaxes(title_text="dimensions", range=[0, 1.1])
    fig.update_layout(
        height=480,
        title=title,
        legend={"orientation": "h", "y": -0.2},
        margin={"r": 170},
    )
    return fig


def _feature_segment(i: int, fx: float, fy: float, show_legend: bool) -> go.Scatter:
    """A grey segment from the origin to true feature ``i``."""
    return go.Scatter(
        x=[0, fx],
        y=[0, fy],
        mode="lines+markers",
        line={"color": "rgba(120,120,120,0.55)", "width": 7},
        marker={"size": [0, 10], "color": "rgba(120,120,120,0.8)"},
        name="true feature",
        legendgroup="feature",
        showlegend=show_legend,
        hovertemplate=f"feature {i}<extra></extra>",
    )


def _latent_segment(j: int, dx: float, dy: float, is_dead: bool) -> go.Scatter:
    """A unit segment along latent ``j``'s decoder row: blue, or red dotted when dead."""
    return go.Scatter(
        x=[0, dx],
        y=[0, dy],
        mode="lines",
        line={
            "color": "#d62728" if is_dead else "#1f77b4",
            "width": 2,
            "dash": "dot" if is_dead else "solid",
        },
        name="dead latent" if is_dead else "latent (decoder row)",
        legendgroup="dead" if is_dead else "latent",
        showlegend=False,
        hovertemplate=f"latent {j}" + (" (dead)" if is_dead else "") + "<extra></extra>",
    )


def plot_latent_directions(
    features: Float[Tensor, "features 2"],
    decoders: Float[Tensor, "instances d_sae 2"],
    titles: Sequence[str] | None = None,
    dead: Tensor | None = None,
    max_cols: int = 4,
    title: str | None = None,
) -> go.Figure:
    """Overlay an SAE's decoder directions on the true 2-D feature directions, per instance.

    True features are grey segments from the origin to each ``features[i]``; decoder rows
    are unit segments in colour, and latents flagged in ``dead`` (``(instances, d_sae)``
    bool) are drawn as red dotted segments.

    Returns:
        A plotly figure with one square panel per instance.
    """
    feats = _as_weights(features)
    dec = _as_weights(decoders)
    if feats.ndim != 2 or feats.shape[1] != 2 or dec.ndim != 3 or dec.shape[2] != 2:
        raise ValueError(
            "need features of shape (features, 2) and decoders of shape (instances, d_sae, 2), "
            f"got {tuple(feats.shape)} and {tuple(dec.shape)}"
        )
    n_inst, d_sae, _ = dec.shape
    if dead is not None and tuple(dead.shape) != (n_inst, d_sae):
        raise ValueError(f"dead must have shape ({n_inst}, {d_sae}), got {tuple(dead.shape)}")
    unit = dec / dec.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    names = _titles(titles, n_inst)
    rows, cols = _grid(n_inst, max_cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names)
    limit = max(1.0, float(feats.norm(dim=-1).max())) * 1.15
    for k in range(n_inst):
        row, col = k // cols + 1, k % cols + 1
        for i, (fx, fy) in enumerate(feats.tolist()):
            fig.add_trace(_feature_segment(i, fx, fy, k == 0 and i == 0), row=row, col=col)
        for j, (dx, dy) in enumerate(unit[k].tolist()):
            is_dead = dead is not None and bool(dead[k, j])
            fig.add_trace(_latent_segment(j, dx, dy, is_dead), row=row, col=col)
        axis = str(k + 1) if k else ""
        fig.update_xaxes(range=[-limit, limit], showticklabels=False, row=row, col=col)
        fig.update_yaxes(
            range=[-limit, limit], showticklabels=False, scaleanchor=f"x{axis}", row=row, col=col
        )
    # one legend entry per kind, whatever panel it first appears in
    seen: set[str] = set()
    for trace in fig.data:
        if trace.legendgroup in ("latent", "dead") and trace.legendgroup not in seen:
            trace.showlegend = True
            seen.add(trace.legendgroup)
    fig.update_layout(
        height=260 * rows + 90,
        title=title,
        margin={"t": 80},
        legend={"orientation": "h", "y": -0.05},
    )
    return fig


#: One colour per code of :func:`two_feature_phase`.
_PHASE_COLOURS = ("#c9c9c9", "#4c72b0", "#dd8452", "#55a868")


def plot_phase_diagram(
    phase: Int[Tensor, "probabilities ratios"],
    relative_importance: Float[Tensor, " ratios"],
    feature_probability: Float[Tensor, " probabilities"],
    names: Sequence[str] = TWO_FEATURE_PHASES,
    title: str | None = None,
) -> go.Figure:
    """A heatmap of phase codes (from :func:`two_feature_phase`) over a grid of cells.

    Rows are feature probabilities (dense at the top), columns the relative importance of
    feature 2; both axes are drawn on a log scale (cells are placed at ``log10`` of their
    value and labelled with the value). Each code gets one colour and a legend entry named
    by ``names[code]``.

    Returns:
        A plotly figure.
    """
    codes = torch.as_tensor(phase).long()
    ratios = torch.as_tensor(relative_importance, dtype=torch.float32)
    probs = torch.as_tensor(feature_probability, dtype=torch.float32)
    if codes.shape != (probs.numel(), ratios.numel()) or ratios.ndim != 1 or probs.ndim != 1:
        raise ValueError(
            "phase must have shape (len(feature_probability), len(relative_importance)) = "
            f"({probs.numel()}, {ratios.numel()}), got {tuple(codes.shape)}"
        )
    if len(names) > len(_PHASE_COLOURS) or codes.min() < 0 or codes.max() >= len(names):
        raise ValueError(
            f"phase codes must lie in [0, {len(names)}) with at most {len(_PHASE_COLOURS)} "
            f"names, got codes {sorted(set(codes.flatten().tolist()))} and {len(names)} names"
        )
    x, y = ratios.log10().tolist(), probs.log10().tolist()
    n = len(names)
    scale = []
    for code in range(n):
        scale += [[code / n, _PHASE_COLOURS[code]], [(code + 1) / n, _PHASE_COLOURS[code]]]
    fig = go.Figure(
        go.Heatmap(
            x=x,
            y=y,
            z=codes.tolist(),
            zmin=-0.5,
            zmax=n - 0.5,
            colorscale=scale,
            showscale=False,
            text=[[names[c] for c in row] for row in codes.tolist()],
            customdata=[[[r, p] for r in ratios.tolist()] for p in probs.tolist()],
            hovertemplate="importance ratio %{customdata[0]:.3g}, p = %{customdata[1]:.3g}"
            "<br>%{text}<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    for code in range(n):  # legend entries: one invisible marker per phase
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                marker={"size": 12, "symbol": "square", "color": _PHASE_COLOURS[code]},
                name=names[code],
            )
        )
    fig.update_xaxes(
        tickvals=x,
        ticktext=[f"{r:.2g}" for r in ratios.tolist()],
        title_text="importance of feature 2 relative to feature 1",
    )
    fig.update_yaxes(
        tickvals=y,
        ticktext=[f"{p:.2g}" for p in probs.tolist()],
        title_text="feature probability p (sparser downwards)",
    )
    fig.update_layout(
        height=460, title=title, legend={"orientation": "h", "y": -0.25}, plot_bgcolor="white"
    )
    return fig
