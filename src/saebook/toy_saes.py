"""Sparse autoencoders written from scratch, for the toy models of :mod:`saebook.toy_models`.

Four architectures share one layout and one training loop. Every SAE is *batched over
instances* (independent copies, e.g. different seeds, trained in one vectorised run), so
inputs are ``(batch, instances, d_in)`` and latents ``(batch, instances, d_sae)``.

* :class:`StandardSAE`: ``f = ReLU(W_enc^T (x - b_dec) + b_enc)`` with an L1 penalty.
* :class:`GatedSAE`: a gate path decides which latents fire, a magnitude path (sharing the
  gate's directions) how strongly; the L1 penalty touches only the gate.
* :class:`JumpReLUSAE`: ``f = z * H(z - theta)`` with a learned threshold per latent, trained
  through an L0 penalty with pseudo-derivatives (:class:`JumpReLUFunction`,
  :class:`StepFunction`).
* :class:`TopKSAE`: keeps the ``k`` largest pre-activations; no sparsity penalty.

All decoders have unit-norm rows (re-normalised after every step), so a latent's activation
is the length of its contribution to the reconstruction.

Around them: :func:`train_sae` (with optional resampling of dead latents,
:func:`resample_dead_latents`), feature matching against known directions
(:func:`match_features`, :func:`recovered_features`) and shrinkage measures
(:func:`norm_ratio`, :func:`activation_ratio`).

Chapters: toy_models/02, toy_models/03
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from tqdm import tqdm

from saebook.validate import check_int

__all__ = [
    "SAEOutput",
    "ToySAE",
    "StandardSAE",
    "GatedSAE",
    "JumpReLUSAE",
    "TopKSAE",
    "JumpReLUFunction",
    "StepFunction",
    "rectangle",
    "topk_activation",
    "TrainingLog",
    "train_sae",
    "dead_latents",
    "resample_dead_latents",
    "cosine_similarity_matrix",
    "FeatureMatch",
    "match_features",
    "recovered_features",
    "norm_ratio",
    "feature_response",
    "activation_ratio",
]


def _coefficients(name: str, value: float | Sequence[float] | Tensor, n_instances: int) -> Tensor:
    """A penalty coefficient as an ``(instances,)`` tensor: one float for all, or one each."""
    coeff = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    if coeff.ndim == 0:
        coeff = coeff.expand(n_instances).clone()
    if coeff.shape != (n_instances,):
        raise ValueError(
            f"{name} must be a float or have one value per instance ({n_instances},), got "
            f"shape {tuple(coeff.shape)}"
        )
    if (coeff < 0).any() or coeff.isnan().any():
        raise ValueError(f"{name} must be >= 0, got {coeff.tolist()}")
    return coeff


@dataclass
class SAEOutput:
    """What an SAE's forward pass returns.

    Attributes:
        latents: ``(batch, instances, d_sae)`` latent activations.
        reconstruction: ``(batch, instances, d_in)``.
        loss: ``(instances,)`` training loss of each instance (sum them to train).
        terms: the named parts of the loss (``mse``, ``l1``, ``l0``, ``aux``...), each
            ``(instances,)`` and already multiplied by its coefficient.
    """

    latents: Float[Tensor, "batch instances d_sae"]
    reconstruction: Float[Tensor, "batch instances d_in"]
    loss: Float[Tensor, " instances"]
    terms: dict[str, Tensor] = field(default_factory=dict)


def _batch_mean(values: Float[Tensor, "batch instances d"]) -> Float[Tensor, " instances"]:
    """``values.sum(-1).mean(0)``, in one reduction over the batch and last axes."""
    return values.sum((0, 2)) / values.shape[0]


def _mse(x: Tensor, recon: Tensor) -> Tensor:
    """Squared error summed over ``d_in``, averaged over the batch: ``(instances,)``."""
    return _batch_mean((x - recon).pow(2))


def _affine(
    x: Float[Tensor, "batch instances d"],
    weight: Float[Tensor, "instances d e"],
    bias: Float[Tensor, "instances e"],
    shift: Float[Tensor, "instances d"] | None = None,
) -> Float[Tensor, "batch instances e"]:
    """``(x - shift) @ weight + bias`` for every instance, as one batched matrix product.

    The result is computed instance-major (one contiguous ``(batch, e)`` block per instance,
    which makes the reductions of the losses fast) and returned as a ``(batch, instances, e)``
    view.
    """
    xt = x.transpose(0, 1)
    if shift is not None:
        xt = xt - shift.unsqueeze(1)
    return torch.baddbmm(bias.unsqueeze(1), xt, weight).transpose(0, 1)


class ToySAE(nn.Module):
    """Parameters and maps shared by every toy SAE.

    Attributes:
        W_enc: ``(instances, d_in, d_sae)`` encoder.
        b_enc: ``(instances, d_sae)`` encoder bias.
        W_dec: ``(instances, d_sae, d_in)`` decoder, unit-norm rows.
        b_dec: ``(instances, d_in)`` decoder bias, also subtracted from the input.

    Subclasses implement :meth:`encode` and :meth:`forward`.
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        n_instances: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("d_in", d_in), ("d_sae", d_sae), ("n_instances", n_instances)):
            check_int(name, value)
        self.d_in, self.d_sae, self.n_instances = d_in, d_sae, n_instances
        directions = torch.randn(n_instances, d_sae, d_in, generator=generator)
        directions = directions / directions.norm(dim=-1, keepdim=True)
        # encoder starts as the decoder's transpose: each latent first reads its own direction
        self.W_dec = nn.Parameter(directions.clone())
        self.W_enc = nn.Parameter(directions.transpose(-1, -2).clone())
        self.b_enc = nn.Parameter(torch.zeros(n_instances, d_sae))
        self.b_dec = nn.Parameter(torch.zeros(n_instances, d_in))

    def check_input(self, x: Tensor) -> None:
        """Raise ValueError unless ``x`` is ``(batch, instances, d_in)``."""
        expected = (self.n_instances, self.d_in)
        if x.ndim != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"x must have shape (batch, {expected[0]}, {expected[1]}) = "
                f"(batch, instances, d_in), got {tuple(x.shape)}"
            )

    def preactivations(
        self, x: Float[Tensor, "batch instances d_in"]
    ) -> Float[Tensor, "batch instances d_sae"]:
        """``W_enc^T (x - b_dec) + b_enc``."""
        self.check_input(x)
        return _affine(x, self.W_enc, self.b_enc, shift=self.b_dec)

    def encode(
        self, x: Float[Tensor, "batch instances d_in"]
    ) -> Float[Tensor, "batch instances d_sae"]:
        """The latent activations of ``x``."""
        raise NotImplementedError

    def decode(
        self, latents: Float[Tensor, "batch instances d_sae"]
    ) -> Float[Tensor, "batch instances d_in"]:
        """``W_dec^T f + b_dec``."""
        return _affine(latents, self.W_dec, self.b_dec)

    def forward(self, x: Float[Tensor, "batch instances d_in"]) -> SAEOutput:
        """Latents, reconstruction and loss of ``x``."""
        raise NotImplementedError

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Rescale every decoder row to unit norm (the decoder-norm constraint)."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    def latent_parameters(self) -> list[tuple[nn.Parameter, int]]:
        """Each parameter holding per-latent values, with the axis that indexes latents.

        Used by :func:`resample_dead_latents` to re-initialise one latent (and its Adam
        state). Subclasses with extra per-latent parameters extend the list.
        """
        return [(self.W_enc, 2), (self.b_enc, 1), (self.W_dec, 1)]

    @torch.no_grad()
    def reset_latent(self, instance: int, latent: int, direction: Tensor, enc_norm: float) -> None:
        """Point latent ``latent`` of ``instance`` at unit vector ``direction``.

        The decoder row becomes ``direction``, the encoder column ``enc_norm * direction``,
        and the encoder bias 0. Subclasses reset their extra parameters too.
        """
        self.W_dec[instance, latent] = direction
        self.W_enc[instance, :, latent] = enc_norm * direction
        self.b_enc[instance, latent] = 0.0


class StandardSAE(ToySAE):
    """ReLU SAE with an L1 penalty: loss ``||x - x_hat||^2 + l1_coeff * ||f||_1``.

    ``l1_coeff`` is one float for every instance or one value per instance (a sweep of the
    coefficient in a single run).
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        n_instances: int = 1,
        l1_coeff: float | Sequence[float] | Tensor = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(d_in, d_sae, n_instances, generator)
        self.register_buffer("l1_coeff", _coefficients("l1_coeff", l1_coeff, n_instances))

    def encode(
        self, x: Float[Tensor, "batch instances d_in"]
    ) -> Float[Tensor, "batch instances d_sae"]:
        """``ReLU(W_enc^T (x - b_dec) + b_enc)``."""
        return torch.relu(self.preactivations(x))

    def forward(self, x: Float[Tensor, "batch instances d_in"]) -> SAEOutput:
        """Latents, reconstruction and ``mse + l1`` per instance."""
        latents = self.encode(x)
        recon = self.decode(latents)
        terms = {"mse": _mse(x, recon), "l1": self.l1_coeff * _batch_mean(latents.abs())}
        return SAEOutput(latents, recon, terms["mse"] + terms["l1"], terms)


class GatedSAE(ToySAE):
    """Gated SAE (Rajamanoharan et al., 2024).

    ``W_enc``/``b_enc`` are the gate path; the magnitude path reuses the gate's directions
    rescaled per latent, ``W_mag = W_enc * exp(r_mag)``, with its own bias ``b_mag``:

        f = 1[pi_gate > 0] * ReLU(pi_mag)

    Loss: ``||x - x_hat||^2 + l1_coeff * ||ReLU(pi_gate)||_1 + aux``, where ``aux`` is the
    error of reconstructing ``x`` from ``ReLU(pi_gate)`` through a frozen copy of the decoder,
    which gives the gate path a gradient (the indicator has none). ``l1_coeff``: one float,
    or one value per instance.
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        n_instances: int = 1,
        l1_coeff: float | Sequence[float] | Tensor = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(d_in, d_sae, n_instances, generator)
        self.register_buffer("l1_coeff", _coefficients("l1_coeff", l1_coeff, n_instances))
        self.r_mag = nn.Parameter(torch.zeros(n_instances, d_sae))
        self.b_mag = nn.Parameter(torch.zeros(n_instances, d_sae))

    def _paths(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pi_gate = self.preactivations(x)
        W_mag = self.W_enc * self.r_mag.exp().unsqueeze(1)
        pi_mag = _affine(x, W_mag, self.b_mag, shift=self.b_dec)
        return pi_gate, pi_mag

    def encode(
        self, x: Float[Tensor, "batch instances d_in"]
    ) -> Float[Tensor, "batch instances d_sae"]:
        """``1[pi_gate > 0] * ReLU(pi_mag)``."""
        pi_gate, pi_mag = self._paths(x)
        return (pi_gate > 0).float() * torch.relu(pi_mag)

    def forward(self, x: Float[Tensor, "batch instances d_in"]) -> SAEOutput:
        """Latents, reconstruction and ``mse + l1 + aux`` per instance."""
        pi_gate, pi_mag = self._paths(x)
        latents = (pi_gate > 0).float() * torch.relu(pi_mag)
        recon = self.decode(latents)
        gate_acts = torch.relu(pi_gate)
        frozen = _affine(gate_acts, self.W_dec.detach(), self.b_dec.detach())
        terms = {
            "mse": _mse(x, recon),
            "l1": self.l1_coeff * _batch_mean(gate_acts),
            "aux": _mse(x, frozen),
        }
        return SAEOutput(latents, recon, sum(terms.values()), terms)

    def latent_parameters(self) -> list[tuple[nn.Parameter, int]]:
        """Base parameters plus ``r_mag`` and ``b_mag``."""
        return super().latent_parameters() + [(self.r_mag, 1), (self.b_mag, 1)]

    @torch.no_grad()
    def reset_latent(self, instance: int, latent: int, direction: Tensor, enc_norm: float) -> None:
        """Base reset, plus ``r_mag = b_mag = 0`` (magnitude path equal to the gate)."""
        super().reset_latent(instance, latent, direction, enc_norm)
        self.r_mag[instance, latent] = 0.0
        self.b_mag[instance, latent] = 0.0


def rectangle(u: Tensor) -> Tensor:
    """The rectangle kernel ``1[-1/2 < u < 1/2]`` (as floats)."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """``JumpReLU(z, theta) = z * 1[z > theta]`` with a pseudo-derivative for ``theta``.

    Backward: ``d/dz = 1[z > theta]`` (exact away from the jump) and
    ``d/dtheta = -(theta / bandwidth) * rectangle((z - theta) / bandwidth)``, a finite
    window standing in for the Dirac delta of the true derivative. ``theta`` broadcasts
    against ``z`` (e.g. ``(d_sae,)`` against ``(batch, d_sae)``); its gradient is summed
    back to its shape. ``bandwidth`` is a float and gets no gradient.
    """

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor, None]:
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_z = grad_out * (z > theta).to(z.dtype)
        window = rectangle((z - theta) / eps)
        grad_theta = (grad_out * -(theta / eps) * window).sum_to_size(theta.shape)
        return grad_z, grad_theta, None


class StepFunction(torch.autograd.Function):
    """``H(z - theta) = 1[z > theta]``, with ``d/dtheta = -(1 / bandwidth) * rectangle(...)``.

    The gradient with respect to ``z`` is zero: the L0 penalty built from this function
    moves only the thresholds.
    """

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor, None]:
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        window = rectangle((z - theta) / eps)
        grad_theta = (grad_out * -(1.0 / eps) * window).sum_to_size(theta.shape)
        return torch.zeros_like(z), grad_theta, None


class JumpReLUSAE(ToySAE):
    """JumpReLU SAE (Rajamanoharan et al., 2024): ``f = z * H(z - theta)``, L0 penalty.

    ``theta = exp(log_threshold)`` stays positive, so latents are non-negative. Loss:
    ``||x - x_hat||^2 + l0_coeff * sum_j H(z_j - theta_j)``. The thresholds learn only
    through the pseudo-derivatives of :class:`JumpReLUFunction` and :class:`StepFunction`,
    within ``bandwidth`` of the threshold. ``l0_coeff``: one float, or one value per instance.
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        n_instances: int = 1,
        l0_coeff: float | Sequence[float] | Tensor = 0.1,
        bandwidth: float = 0.05,
        init_threshold: float = 0.05,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(d_in, d_sae, n_instances, generator)
        if bandwidth <= 0 or init_threshold <= 0:
            raise ValueError(
                "need bandwidth > 0 and init_threshold > 0, got "
                f"bandwidth={bandwidth!r}, init_threshold={init_threshold!r}"
            )
        self.register_buffer("l0_coeff", _coefficients("l0_coeff", l0_coeff, n_instances))
        self.bandwidth, self.init_threshold = bandwidth, init_threshold
        self.log_threshold = nn.Parameter(
            torch.full((n_instances, d_sae), math.log(init_threshold))
        )

    @property
    def threshold(self) -> Float[Tensor, "instances d_sae"]:
        """The positive thresholds ``exp(log_threshold)``."""
        return self.log_threshold.exp()

    def encode(
        self, x: Float[Tensor, "batch instances d_in"]
    ) -> Float[Tensor, "batch instances d_sae"]:
        """``z * 1[z > theta]`` for pre-activations ``z``."""
        return JumpReLUFunction.apply(self.preactivations(x), self.threshold, self.bandwidth)

    def forward(self, x: Float[Tensor, "batch instances d_in"]) -> SAEOutput:
        """Latents, reconstruction and ``mse + l0`` per instance."""
        z = self.preactivations(x)
        theta = self.threshold
        latents = JumpReLUFunction.apply(z, theta, self.bandwidth)
        recon = self.decode(latents)
        l0 = _batch_mean(StepFunction.apply(z, theta, self.bandwidth))
        terms = {"mse": _mse(x, recon), "l0": self.l0_coeff * l0}
        return SAEOutput(latents, recon, terms["mse"] + terms["l0"], terms)

    def latent_parameters(self) -> list[tuple[nn.Parameter, int]]:
        """Base parameters plus ``log_threshold``."""
        return super().latent_parameters() + [(self.log_threshold, 1)]

    @torch.no_grad()
    def reset_latent(self, instance: int, latent: int, direction: Tensor, enc_norm: float) -> None:
        """Base reset, plus the threshold back to ``init_threshold``."""
        super().reset_latent(instance, latent, direction, enc_norm)
        self.log_threshold[instance, latent] = math.log(self.init_threshold)


def topk_activation(z: Float[Tensor, "*batch d_sae"], k: int) -> Float[Tensor, "*batch d_sae"]:
    """Keep the ``k`` largest entries of ``z`` along the last axis (ReLU'd); zero the rest.

    Gradients flow to the kept entries only.
    """
    check_int("k", k)
    if k > z.shape[-1]:
        raise ValueError(f"k must be at most d_sae = {z.shape[-1]}, got {k}")
    top = z.topk(k, dim=-1)
    return torch.zeros_like(z).scatter(-1, top.indices, torch.relu(top.values))


class TopKSAE(ToySAE):
    """TopK SAE (Gao et al., 2024): ``f = TopK(ReLU(z))``, loss ``||x - x_hat||^2`` only.

    Sparsity is fixed by construction: at most ``k`` latents fire per input.
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        n_instances: int = 1,
        k: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(d_in, d_sae, n_instances, generator)
        check_int("k", k)
        if k > d_sae:
            raise ValueError(f"k must be at most d_sae = {d_sae}, got {k}")
        self.k = k

    def encode(
        self, x: Float[Tensor, "batch instances d_in"]
    ) -> Float[Tensor, "batch instances d_sae"]:
        """The ``k`` largest pre-activations (ReLU'd), zeros elsewhere."""
        return topk_activation(self.preactivations(x), self.k)

    def forward(self, x: Float[Tensor, "batch instances d_in"]) -> SAEOutput:
        """Latents, reconstruction and ``mse`` per instance."""
        latents = self.encode(x)
        recon = self.decode(latents)
        mse = _mse(x, recon)
        return SAEOutput(latents, recon, mse, {"mse": mse})


@dataclass
class TrainingLog:
    """What :func:`train_sae` recorded.

    Attributes:
        steps: the steps at which the rows below were recorded.
        loss, mse, l0: ``(logs, instances)`` total loss, squared error and latents firing per
            input, at those steps.
        dead: ``(logs, instances)`` latents dead at those steps (no firing for ``dead_window``
            steps).
        resample_steps: steps at which resampling ran; ``resampled``: latents re-initialised
            at each of them, summed over instances.
    """

    steps: list[int]
    loss: Tensor
    mse: Tensor
    l0: Tensor
    dead: Tensor
    resample_steps: list[int]
    resampled: list[int]


def dead_latents(
    last_fired: Int[Tensor, "instances d_sae"], step: int, window: int
) -> Bool[Tensor, "instances d_sae"]:
    """Latents that have not fired in the ``window`` steps up to ``step``.

    Args:
        last_fired: the last step at which each latent fired (-1 if never).
        step: the current step.
        window: how many steps without firing make a latent dead.
    """
    check_int("window", window)
    return (step - last_fired) >= window


@torch.no_grad()
def resample_dead_latents(
    sae: ToySAE,
    x: Float[Tensor, "batch instances d_in"],
    dead: Bool[Tensor, "instances d_sae"],
    optimizer: torch.optim.Optimizer | None = None,
    encoder_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> int:
    """Re-initialise dead latents towards inputs the SAE reconstructs badly.

    For each instance, inputs are drawn with probability proportional to their squared
    reconstruction error squared (``||x - x_hat||^4``), so the worst-served inputs are the
    likeliest. A dead latent's decoder row becomes the unit direction of ``x - b_dec`` for its
    drawn input, its encoder column the same direction scaled to ``encoder_scale`` times the
    mean encoder norm of the live latents, and its bias 0 (see each class's
    :meth:`ToySAE.reset_latent`). In the optimizer, the new latent's first moments are
    zeroed (no stale momentum) and its second moments set to the mean of the live latents'
    (so its first steps have the usual size, not the huge ones a zero estimate gives).

    Args:
        sae: the SAE, modified in place.
        x: a batch of training inputs.
        dead: ``(instances, d_sae)`` mask of latents to resample.
        optimizer: an Adam-like optimizer of ``sae`` (state ``exp_avg``, ``exp_avg_sq``).
        encoder_scale: relative norm of the new encoder columns.
        generator: optional torch generator for the draws.

    Returns:
        The number of latents re-initialised (an instance whose inputs are all perfectly
        reconstructed is skipped).
    """
    sae.check_input(x)
    if dead.shape != (sae.n_instances, sae.d_sae) or dead.dtype != torch.bool:
        raise ValueError(
            f"dead must be a bool tensor of shape ({sae.n_instances}, {sae.d_sae}), got "
            f"{dead.dtype} {tuple(dead.shape)}"
        )
    if not dead.any():
        return 0
    recon = sae(x).reconstruction
    errors = (x - recon).pow(2).sum(-1)  # (batch, instances)
    enc_norms = sae.W_enc.norm(dim=1)  # (instances, d_sae)
    count = 0
    for inst in range(sae.n_instances):
        chosen = dead[inst].nonzero().flatten()
        if chosen.numel() == 0:
            continue
        weights = errors[:, inst].pow(2)
        if weights.sum() <= 0:
            continue
        enough = int((weights > 0).sum()) >= chosen.numel()
        rows = torch.multinomial(
            weights, chosen.numel(), replacement=not enough, generator=generator
        )
        directions = x[rows, inst] - sae.b_dec[inst]
        directions = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        alive = ~dead[inst]
        enc_norm = encoder_scale * (float(enc_norms[inst, alive].mean()) if alive.any() else 1.0)
        for latent, direction in zip(chosen.tolist(), directions, strict=True):
            sae.reset_latent(inst, latent, direction, enc_norm)
            if optimizer is not None:
                _reset_optimizer_state(optimizer, sae.latent_parameters(), inst, latent, alive)
            count += 1
    return count


def _reset_optimizer_state(
    optimizer: torch.optim.Optimizer,
    params: list[tuple[nn.Parameter, int]],
    instance: int,
    latent: int,
    alive: Tensor,
) -> None:
    """Zero a resampled latent's first moments; give it the live latents' mean second moment.

    A zero second moment would make Adam's first steps on the new latent about
    ``1 / sqrt(1 - beta2)`` times larger than usual, enough to kill it again.
    """
    live = alive.nonzero().flatten()
    for param, axis in params:
        state = optimizer.state.get(param, {})
        if "exp_avg" in state:
            state["exp_avg"][instance].select(axis - 1, latent).zero_()
        if "exp_avg_sq" in state:
            second = state["exp_avg_sq"][instance]
            target = second.select(axis - 1, latent)
            if live.numel():
                target.copy_(second.index_select(axis - 1, live).mean(dim=axis - 1))
            else:
                target.zero_()


def _record(
    logged: dict[str, list[Tensor]], loss: Tensor, mse: Tensor, active: Tensor, dead: Tensor
) -> None:
    """Append one logged step (per instance) of :func:`train_sae`'s statistics to ``logged``."""
    logged["loss"].append(loss)
    logged["mse"].append(mse)
    logged["l0"].append(active.sum(-1).float().mean(0))
    logged["dead"].append(dead.sum(-1).float())


def train_sae(
    sae: ToySAE,
    data: Callable[[int], Float[Tensor, "batch instances d_in"]],
    steps: int = 5_000,
    batch_size: int = 1024,
    lr: float = 1e-2,
    resample_every: int | None = None,
    resample_until: float = 0.75,
    dead_window: int = 250,
    encoder_scale: float = 1.0,
    log_every: int = 50,
    progress: bool = True,
    generator: torch.Generator | None = None,
) -> TrainingLog:
    """Train any :class:`ToySAE` with Adam on batches drawn from ``data``.

    Every step: sample ``data(batch_size)``, step on the sum over instances of the SAE's
    loss, and re-normalise the decoder rows. A latent counts as dead once it has not fired
    for ``dead_window`` steps. With ``resample_every``, dead latents are re-initialised every
    that many steps by :func:`resample_dead_latents`, during the first ``resample_until``
    fraction of training (the rest lets resampled latents settle).

    Args:
        sae: the SAE to train, in place.
        data: a function from a batch size to inputs ``(batch, instances, d_in)``.
        steps: optimisation steps.
        batch_size: inputs per step.
        lr: Adam learning rate.
        resample_every: steps between resamplings; None turns resampling off.
        resample_until: fraction of ``steps`` after which resampling stops.
        dead_window: steps without firing after which a latent is dead.
        encoder_scale: passed to :func:`resample_dead_latents`.
        log_every: record statistics every this many steps.
        progress: show a progress bar.
        generator: optional torch generator for the resampling draws.

    Returns:
        A :class:`TrainingLog`.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size), ("log_every", log_every)):
        check_int(name, value)
    if resample_every is not None:
        check_int("resample_every", resample_every)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr, fused=True)  # one kernel per step
    last_fired = torch.full((sae.n_instances, sae.d_sae), -1, dtype=torch.long)
    logged: dict[str, list[Tensor]] = {"loss": [], "mse": [], "l0": [], "dead": []}
    log_steps: list[int] = []
    resample_steps: list[int] = []
    resampled: list[int] = []
    desc = f"Training {type(sae).__name__}"
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress)
    for step in bar:
        x = data(batch_size)
        out = sae(x)
        optimizer.zero_grad(set_to_none=True)
        out.loss.sum().backward()
        optimizer.step()
        sae.normalise_decoder()
        with torch.no_grad():
            # fired: batch max > 0 (several times cheaper than (latents > 0).any(0) here)
            last_fired.masked_fill_(out.latents.max(0).values > 0, step)
            dead = dead_latents(last_fired, step, dead_window)
        if step % log_every == 0:
            log_steps.append(step)
            active = out.latents.detach() > 0
            _record(logged, out.loss.detach(), out.terms["mse"].detach(), active, dead)
            bar.set_postfix(loss=f"{out.loss.mean().item():.4g}", refresh=False)
        if (
            resample_every is not None
            and step > 0
            and step % resample_every == 0
            and step < resample_until * steps
            and dead.any()
        ):
            n = resample_dead_latents(sae, x, dead, optimizer, encoder_scale, generator)
            last_fired[dead] = step  # give the new latents a full window to fire
            resample_steps.append(step)
            resampled.append(n)
    stacked = {key: torch.stack(values) for key, values in logged.items()}
    return TrainingLog(log_steps, resample_steps=resample_steps, resampled=resampled, **stacked)


def cosine_similarity_matrix(
    a: Float[Tensor, "n d"], b: Float[Tensor, "k d"]
) -> Float[Tensor, "n k"]:
    """Cosine similarity of every row of ``a`` with every row of ``b`` (0 for a zero row)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"a and b must be (n, d) and (k, d) with the same d, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    a_unit = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    b_unit = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return a_unit @ b_unit.T


@dataclass
class FeatureMatch:
    """A one-to-one matching of true features to SAE latents.

    Attributes:
        cosine: ``(features, d_sae)`` cosine similarity of feature directions and decoder rows.
        latent: ``(features,)`` latent matched to each feature (-1 if none was left).
        similarity: ``(features,)`` cosine of each matched pair (0 if unmatched).
    """

    cosine: Tensor
    latent: Tensor
    similarity: Tensor

    def recovered(self, threshold: float = 0.9) -> int:
        """How many features are matched with cosine similarity above ``threshold``."""
        return int((self.similarity > threshold).sum())


def match_features(
    decoder: Float[Tensor, "d_sae d_in"],
    features: Float[Tensor, "features d_in"],
    method: Literal["hungarian", "greedy"] = "hungarian",
) -> FeatureMatch:
    """Match each true feature direction to a distinct decoder row by cosine similarity.

    ``"hungarian"`` maximises the total cosine of the matching (``scipy``'s
    ``linear_sum_assignment``); ``"greedy"`` repeatedly takes the most similar unmatched
    pair. With fewer latents than features some features stay unmatched.

    Returns:
        A :class:`FeatureMatch`.
    """
    cos = cosine_similarity_matrix(features.detach().float(), decoder.detach().float())
    n_feat, n_lat = cos.shape
    latent = torch.full((n_feat,), -1, dtype=torch.long)
    if method == "hungarian":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(cos.numpy(), maximize=True)
        latent[torch.as_tensor(rows, dtype=torch.long)] = torch.as_tensor(cols, dtype=torch.long)
    elif method == "greedy":
        work = cos.clone()
        for _ in range(min(n_feat, n_lat)):
            flat = int(work.argmax())
            i, j = divmod(flat, n_lat)
            latent[i] = j
            work[i, :] = -math.inf
            work[:, j] = -math.inf
    else:
        raise ValueError(f"method must be 'hungarian' or 'greedy', got {method!r}")
    matched = latent >= 0
    similarity = torch.zeros(n_feat)
    similarity[matched] = cos[matched, latent[matched]]
    return FeatureMatch(cos, latent, similarity)


def recovered_features(
    sae: ToySAE,
    features: Float[Tensor, "features d_in"],
    x: Float[Tensor, "batch instances d_in"],
    threshold: float = 0.9,
    method: Literal["hungarian", "greedy"] = "hungarian",
) -> Int[Tensor, " instances"]:
    """Per instance of ``sae``, how many of ``features`` a distinct *live* latent matches with
    cosine similarity above ``threshold`` (see :func:`match_features`).

    A latent is live when it fires (activation > 0) on at least one input of ``x``; a dead
    latent's decoder row may still point along a feature, but it reconstructs nothing, so it
    recovers nothing. Only live latents take part in the matching.
    """
    if features.ndim != 2 or features.shape[1] != sae.d_in:
        raise ValueError(
            f"features must have shape (features, {sae.d_in}), got {tuple(features.shape)}"
        )
    sae.check_input(x)
    with torch.no_grad():
        live = (sae.encode(x) > 0).any(0)  # (instances, d_sae)
    counts = [
        match_features(sae.W_dec[k][live[k]], features, method).recovered(threshold)
        if live[k].any()
        else 0
        for k in range(sae.n_instances)
    ]
    return torch.tensor(counts)


@torch.no_grad()
def norm_ratio(
    sae: ToySAE, x: Float[Tensor, "batch instances d_in"]
) -> Float[Tensor, " instances"]:
    """``sum ||x_hat|| / sum ||x||`` over the non-zero inputs, per instance.

    Below 1 means reconstructions are systematically shorter than inputs: shrinkage.
    """
    sae.check_input(x)
    recon = sae.encode(x)
    recon = sae.decode(recon)
    norms = x.norm(dim=-1)
    keep = (norms > 0).float()
    return (recon.norm(dim=-1) * keep).sum(0) / norms.sum(0).clamp_min(1e-8)


@torch.no_grad()
def feature_response(
    sae: ToySAE,
    features: Float[Tensor, "features d_in"],
    magnitudes: Float[Tensor, " n"],
    instance: int = 0,
) -> tuple[Float[Tensor, "features n"], Int[Tensor, " features"], Float[Tensor, " features"]]:
    """How the latent matched to each feature responds to that feature alone.

    Encodes the inputs ``a * features[i]`` for every feature ``i`` and magnitude ``a`` with
    SAE instance ``instance`` and reads the latent :func:`match_features` pairs with feature
    ``i``. An SAE without shrinkage returns ``a * ||features[i]||`` (decoder rows have unit
    norm).

    Returns:
        ``(activations, latent, similarity)``: the matched latent's activation per feature and
        magnitude (0 where no latent was left to match), the matched latent per feature (-1
        if none) and the cosine similarity of each match.
    """
    if features.ndim != 2 or features.shape[1] != sae.d_in:
        raise ValueError(
            f"features must have shape (features, {sae.d_in}), got {tuple(features.shape)}"
        )
    if magnitudes.ndim != 1 or magnitudes.numel() == 0:
        raise ValueError(
            f"magnitudes must be a non-empty 1-D tensor, got shape {tuple(magnitudes.shape)}"
        )
    if not 0 <= instance < sae.n_instances:
        raise ValueError(f"instance must be in [0, {sae.n_instances}), got {instance}")
    n_feat, n_mag = features.shape[0], magnitudes.numel()
    inputs = magnitudes.view(1, -1, 1) * features.view(n_feat, 1, -1)  # (features, n, d_in)
    flat = inputs.reshape(-1, 1, sae.d_in).expand(-1, sae.n_instances, -1)
    latents = sae.encode(flat)[:, instance].view(n_feat, n_mag, sae.d_sae)
    match = match_features(sae.W_dec[instance], features)
    activations = torch.zeros(n_feat, n_mag)
    for i, j in enumerate(match.latent.tolist()):
        if j >= 0:
            activations[i] = latents[i, :, j]
    return activations, match.latent, match.similarity


@torch.no_grad()
def activation_ratio(
    sae: ToySAE,
    features: Float[Tensor, "features d_in"],
    magnitudes: Float[Tensor, " n"],
    threshold: float = 0.9,
) -> Float[Tensor, " instances"]:
    """How large a feature's latent is, relative to the feature, when the feature is alone.

    With :func:`feature_response`: ``sum activation / sum (a * ||features[i]||)`` over the
    inputs ``a * features[i]`` on which the matched latent is active, for the features
    recovered above ``threshold``, per instance (NaN for an instance with no such input).
    Inputs the latent ignores (below its threshold) are left out: they are missed
    detections, not shrinkage. 1 means active latents report the full magnitude.
    """
    truth = magnitudes.view(1, -1) * features.norm(dim=-1, keepdim=True)  # (features, n)
    ratios = []
    for k in range(sae.n_instances):
        acts, _, similarity = feature_response(sae, features, magnitudes, instance=k)
        used = (acts > 0) & (similarity > threshold).unsqueeze(-1)
        want = float(truth[used].sum())
        ratios.append(float(acts[used].sum()) / want if want > 0 else float("nan"))
    return torch.tensor(ratios)
