"""Toy models with a ReLU hidden layer: a privileged basis, and computation in superposition.

The toy model of :mod:`saebook.toy_models` has a *linear* hidden layer, ``h = W x``: rotating
the hidden space (``W -> R W`` for an orthogonal ``R``) leaves ``W^T W`` and so the loss
unchanged, and nothing singles out its coordinates. Putting a ReLU on the hidden layer,

    h = ReLU(W_in x + b_hidden),    y = ReLU(W_out h + b_out),

gives every hidden coordinate (a *neuron*) its own non-linearity, which a rotation does not
commute with: the basis becomes *privileged*. With tied weights (``W_out = W_in^T``, no hidden
bias) this is the "ReLU hidden layer" model of Elhage et al. (2022); untied, it can compute
non-linear functions of its inputs, such as the absolute value of each feature.

Every model here is batched over instances, like :class:`saebook.toy_models.ToyModel`.

Chapters: toy_models/04
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor, nn

from saebook.toy_models import InstancedToyModel, generate_batch, weighted_mse
from saebook.validate import check_int

__all__ = [
    "HiddenLayerModel",
    "relu_hidden_forward",
    "generate_signed_batch",
    "abs_loss",
    "train_hidden_model",
    "top_neuron_share",
    "basis_alignment",
    "random_rotation",
    "rotated_alignment",
    "abs_top_k_loss",
    "abs_top_k_model",
    "abs_represented",
    "monosemantic_neurons",
    "plot_weight_heatmaps",
]

_EPS = 1e-8


class HiddenLayerModel(InstancedToyModel):
    """``n_instances`` independent models ``y = ReLU(W_out act(W_in x + b_hidden) + b_out)``.

    ``act`` is ReLU when ``hidden_relu`` and the identity otherwise. With ``tied`` the output
    weights are ``W_in^T`` (the toy model of :mod:`saebook.toy_models` when ``hidden_relu`` is
    False); ``hidden_bias`` adds ``b_hidden`` (zero and frozen otherwise).

    Attributes:
        W_in: ``(instances, hidden, features)``; row ``j`` is what neuron ``j`` reads.
        W_out: ``(instances, features, hidden)``, absent when tied (see :meth:`output_weights`).
        b_hidden: ``(instances, hidden)``.
        b_out: ``(instances, features)``.
    """

    def __init__(
        self,
        n_features: int,
        n_hidden: int,
        n_instances: int = 1,
        hidden_relu: bool = True,
        tied: bool = True,
        hidden_bias: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(n_features, n_hidden, n_instances)
        self.hidden_relu, self.tied = hidden_relu, tied
        shape = (n_instances, n_hidden, n_features)
        self.W_in = nn.Parameter(self.xavier(*shape, generator=generator))
        if not tied:
            W_out = self.xavier(n_instances, n_features, n_hidden, generator=generator)
            self.W_out = nn.Parameter(W_out)
        self.b_hidden = nn.Parameter(torch.zeros(n_instances, n_hidden), requires_grad=hidden_bias)
        self.b_out = nn.Parameter(torch.zeros(n_instances, n_features))

    def output_weights(self) -> Float[Tensor, "instances features hidden"]:
        """``W_out``, or ``W_in^T`` for a tied model."""
        return self.W_in.transpose(-1, -2) if self.tied else self.W_out

    def hidden(
        self, x: Float[Tensor, "batch instances features"]
    ) -> Float[Tensor, "batch instances hidden"]:
        """The hidden activations ``act(W_in x + b_hidden)`` of every instance."""
        self._check_input(x)
        pre = torch.einsum("bif,ihf->bih", x, self.W_in) + self.b_hidden
        return torch.relu(pre) if self.hidden_relu else pre

    def forward(
        self, x: Float[Tensor, "batch instances features"]
    ) -> Float[Tensor, "batch instances features"]:
        """The output ``ReLU(W_out h + b_out)`` of every instance."""
        h = self.hidden(x)
        return torch.relu(torch.einsum("bih,ifh->bif", h, self.output_weights()) + self.b_out)


def relu_hidden_forward(
    W: Float[Tensor, "hidden features"],
    b: Float[Tensor, " features"],
    x: Float[Tensor, "batch features"],
) -> Float[Tensor, "batch features"]:
    """One tied ReLU-hidden-layer model: ``ReLU(W^T ReLU(W x) + b)`` for every row of ``x``.

    Returns:
        A ``(batch, features)`` tensor.
    """
    if W.ndim != 2 or b.shape != W.shape[1:] or x.ndim != 2 or x.shape[1] != W.shape[1]:
        raise ValueError(
            "need W (hidden, features), b (features,) and x (batch, features), got "
            f"{tuple(W.shape)}, {tuple(b.shape)} and {tuple(x.shape)}"
        )
    return torch.relu(torch.relu(x @ W.T) @ W + b)


def generate_signed_batch(
    batch_size: int,
    feature_probability: Float[Tensor, " instances"],
    n_features: int,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "batch instances features"]:
    """Sparse features that are 0, or uniform in ``[-1, 1)`` when present.

    Feature presence and magnitude are drawn as in :func:`saebook.toy_models.generate_batch`
    (present with probability ``feature_probability[k]`` in instance ``k``); a random sign is
    then drawn for every entry.

    Returns:
        A float tensor of shape ``(batch_size, instances, n_features)``.
    """
    x = generate_batch(batch_size, feature_probability, n_features, generator=generator)
    sign = torch.rand(x.shape, generator=generator) < 0.5
    return torch.where(sign, -x, x)


def abs_loss(
    output: Float[Tensor, "batch instances features"],
    x: Float[Tensor, "batch instances features"],
    importance: Float[Tensor, " features"],
) -> Float[Tensor, " instances"]:
    """The absolute-value task's loss: importance-weighted squared error of ``output`` against
    ``|x|``, averaged over batch and features, per instance."""
    return weighted_mse(output, x.abs(), importance)


def train_hidden_model(
    model: HiddenLayerModel,
    feature_probability: Float[Tensor, " instances"],
    importance: Float[Tensor, " features"] | None = None,
    task: str = "identity",
    steps: int = 3_000,
    batch_size: int = 1024,
    lr: float = 1e-2,
    generator: torch.Generator | None = None,
) -> Float[Tensor, " instances"]:
    """Train every instance of ``model`` on its own feature probability, in one loop.

    ``task="identity"`` reconstructs non-negative features (:func:`generate_batch`, loss
    :func:`weighted_mse`); ``task="abs"`` maps signed features
    (:func:`generate_signed_batch`) to their absolute values (:func:`abs_loss`). Adam on the
    sum over instances, learning rate decaying along a half cosine to 10% of ``lr``.

    Returns:
        The per-instance loss of the last step, shape ``(instances,)``.
    """
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    if task not in ("identity", "abs"):
        raise ValueError(f"task must be 'identity' or 'abs', got {task!r}")
    prob = torch.as_tensor(feature_probability, dtype=torch.float32)
    if prob.shape != (model.n_instances,):
        raise ValueError(
            f"feature_probability must have shape ({model.n_instances},), got {tuple(prob.shape)}"
        )
    importance = torch.ones(model.n_features) if importance is None else importance
    sample = generate_signed_batch if task == "abs" else generate_batch
    target = (lambda x: x.abs()) if task == "abs" else (lambda x: x)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * (0.55 + 0.45 * math.cos(math.pi * step / steps))
        x = sample(batch_size, prob, model.n_features, generator=generator)
        loss = weighted_mse(model(x), target(x), importance)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
    return loss.detach()


def top_neuron_share(
    W: Float[Tensor, "*batch hidden features"],
) -> Float[Tensor, "*batch features"]:
    """Per feature (column ``W_i``), the share of its squared norm on its largest coordinate:
    ``max_j W_ji^2 / sum_j W_ji^2``.

    1 when the feature sits on one neuron, ``1/m`` when spread evenly over ``m`` neurons; 0 for
    a zero column. A rotation of the hidden space changes it; the loss of a linear model does not.
    """
    W = W.detach().float()
    if W.ndim < 2:
        raise ValueError(f"W must have shape (..., hidden, features), got {tuple(W.shape)}")
    sq = W.pow(2)
    return sq.max(dim=-2).values / sq.sum(dim=-2).clamp_min(_EPS)


def basis_alignment(
    W: Float[Tensor, "*batch hidden features"], min_norm: float = 0.5
) -> Float[Tensor, " *batch"]:
    """Mean :func:`top_neuron_share` over the features with ``||W_i|| > min_norm`` (stored
    ones), per model; ``nan`` for a model that stores none."""
    W = W.detach().float()
    share = top_neuron_share(W)
    kept = (W.norm(dim=-2) > min_norm).float()
    return (share * kept).sum(-1) / kept.sum(-1)


def random_rotation(n: int, generator: torch.Generator | None = None) -> Float[Tensor, "n n"]:
    """A uniformly random (Haar) ``n x n`` orthogonal matrix: QR of a Gaussian matrix, with the
    signs of ``R``'s diagonal moved into ``Q``."""
    check_int("n", n)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    sign = torch.sign(torch.diagonal(r))
    sign[sign == 0] = 1
    return (q * sign).float()


def rotated_alignment(
    W: Float[Tensor, "instances hidden features"],
    n_rotations: int,
    min_norm: float = 0.5,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "rotations instances"]:
    """:func:`basis_alignment` of ``R W`` for ``n_rotations`` random rotations ``R`` of the
    hidden space (one ``R`` per row, the same for every instance): the statistic's null
    distribution for weights with no preferred basis.

    Returns:
        A ``(n_rotations, instances)`` tensor.
    """
    check_int("n_rotations", n_rotations)
    W = W.detach().float()
    if W.ndim != 3:
        raise ValueError(f"W must have shape (instances, hidden, features), got {tuple(W.shape)}")
    rotations = torch.stack([random_rotation(W.shape[1], generator) for _ in range(n_rotations)])
    return basis_alignment(torch.einsum("rgh,ihf->rigf", rotations, W), min_norm)


def abs_top_k_loss(
    importance: Float[Tensor, " features"], feature_probability: float, k: int
) -> float:
    """Closed-form loss (as :func:`abs_loss` averages it) of the model that computes ``|x_i|``
    exactly for the ``k`` most important features and outputs the best constant for the rest.

    A feature outside the top ``k`` has target ``|x_i|``, which is 0 with probability
    ``1 - p`` and uniform in ``[0, 1]`` otherwise: the best constant is its mean ``p/2`` and
    the error left is its variance ``p/3 - p^2/4``.
    """
    check_int("k", k, minimum=0)
    if not 0 <= feature_probability <= 1:
        raise ValueError(f"feature_probability must be in [0, 1], got {feature_probability!r}")
    p = float(feature_probability)
    order = torch.argsort(importance, descending=True, stable=True)
    rest = importance[order[k:]]
    return float(rest.sum() * (p / 3 - p**2 / 4) / importance.numel())


def abs_top_k_model(
    importance: Float[Tensor, " features"],
    feature_probability: Float[Tensor, " instances"],
    n_hidden: int,
) -> HiddenLayerModel:
    """The explicit model behind :func:`abs_top_k_loss`, with ``k = n_hidden // 2``: two
    neurons per top feature, ``ReLU(x_i)`` and ``ReLU(-x_i)``, summed into output ``i``; every
    other output is the constant ``p/2`` of its instance."""
    check_int("n_hidden", n_hidden, minimum=2)
    prob = torch.as_tensor(feature_probability, dtype=torch.float32)
    n_features, k = importance.numel(), min(n_hidden // 2, importance.numel())
    model = HiddenLayerModel(n_features, n_hidden, prob.numel(), tied=False, hidden_bias=True)
    top = torch.argsort(importance, descending=True, stable=True)[:k]
    W_in = torch.zeros(n_hidden, n_features)
    W_out = torch.zeros(n_features, n_hidden)
    for slot, i in enumerate(top.tolist()):
        W_in[2 * slot, i], W_in[2 * slot + 1, i] = 1.0, -1.0
        W_out[i, 2 * slot] = W_out[i, 2 * slot + 1] = 1.0
    b_out = (prob / 2).view(-1, 1).repeat(1, n_features)
    b_out[:, top] = 0.0
    with torch.no_grad():
        model.W_in.copy_(W_in.expand_as(model.W_in))
        model.W_out.copy_(W_out.expand_as(model.W_out))
        model.b_hidden.zero_()
        model.b_out.copy_(b_out)
    return model


def abs_represented(
    model: HiddenLayerModel, threshold: float = 0.5
) -> Float[Tensor, "instances features"]:
    """Whether each feature's absolute value is computed: with feature ``i`` alone at ``+1``
    and then at ``-1``, output ``i`` rises by more than ``threshold`` above its value at
    ``x = 0`` both times. Returned as a bool tensor ``(instances, features)``."""
    n, inst = model.n_features, model.n_instances
    with torch.no_grad():
        probes = torch.cat([torch.eye(n), -torch.eye(n), torch.zeros(1, n)])
        out = model(probes.unsqueeze(1).expand(-1, inst, -1))  # (2n + 1, inst, n)
        rise_pos = out[:n].diagonal(dim1=0, dim2=2) - out[2 * n]  # (inst, n)
        rise_neg = out[n : 2 * n].diagonal(dim1=0, dim2=2) - out[2 * n]
    return (rise_pos > threshold) & (rise_neg > threshold)


def monosemantic_neurons(
    W_in: Float[Tensor, "*batch hidden features"], share: float = 0.9, min_norm: float = 0.1
) -> Float[Tensor, "*batch hidden"]:
    """Whether each neuron (row of ``W_in``) reads essentially one feature: the largest
    squared weight is more than ``share`` of the row's squared norm, and the row's norm is
    above ``min_norm`` (a near-zero row reads nothing). Returned as a bool tensor."""
    W = W_in.detach().float()
    return (top_neuron_share(W.transpose(-1, -2)) > share) & (W.norm(dim=-1) > min_norm)


def plot_weight_heatmaps(
    weights: Sequence[Tensor],
    titles: Sequence[str],
    title: str | None = None,
    x_title: str = "feature",
    y_title: str = "neuron",
) -> go.Figure:
    """Heatmaps of 2-D weight matrices side by side (rows: neurons, columns: features), on a
    shared symmetric colour scale: red is positive, blue negative.

    Returns:
        A plotly figure with one panel per matrix.
    """
    mats = [w.detach().float() for w in weights]
    if not mats or any(m.ndim != 2 for m in mats) or len(titles) != len(mats):
        raise ValueError(
            "need one title per 2-D weight matrix, got shapes "
            f"{[tuple(m.shape) for m in mats]} and {len(titles)} titles"
        )
    limit = max(float(m.abs().max()) for m in mats) or 1.0
    fig = make_subplots(rows=1, cols=len(mats), subplot_titles=[str(t) for t in titles])
    for k, m in enumerate(mats):
        fig.add_trace(
            go.Heatmap(
                z=m.tolist(),
                zmin=-limit,
                zmax=limit,
                colorscale="RdBu",
                reversescale=True,
                showscale=k == 0,
                hovertemplate=f"{y_title} %{{y}}, {x_title} %{{x}}: %{{z:.2f}}<extra></extra>",
            ),
            row=1,
            col=k + 1,
        )
        fig.update_xaxes(title_text=x_title, row=1, col=k + 1)
    fig.update_yaxes(autorange="reversed", title_text=y_title, col=1)
    fig.update_layout(height=320, title=title, margin={"t": 80})
    return fig
