"""Rules that pick one latent by a property of its statistics, for any SAE and profile.

Dashboards show one latent at a time, so a chapter needs a principled way to choose it. Each
rule here takes per-latent statistics (as :class:`saebook.latent_stats.LatentStats` holds
them: density, mean and max activation, counts) and returns one latent index; ties go to the
lowest index. A rule raises ``ValueError`` when no latent qualifies.

Chapters: training/03
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["most_frequent_sparse", "largest_mean_active", "most_selective"]


def _vector(name: str, value: object, n: int | None = None) -> Tensor:
    if not isinstance(value, Tensor) or value.ndim != 1 or value.numel() == 0:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"{name} must be a non-empty 1-D tensor (one value per latent), got {shape}"
        )
    if n is not None and value.numel() != n:
        raise ValueError(f"{name} must have {n} entries (one per latent), got {value.numel()}")
    return value.double()


def _argmax_where(score: Tensor, ok: Tensor, rule: str) -> int:
    if not bool(ok.any()):
        raise ValueError(f"no latent qualifies for {rule}")
    masked = torch.where(ok, score, torch.full_like(score, -torch.inf))
    return int(torch.nonzero(masked == masked.max())[0])


def most_frequent_sparse(density: Float[Tensor, " d_sae"], limit: float = 0.1) -> int:
    """The latent with the highest firing density among those that fire, but on less than
    ``limit`` of tokens: a common but specific pattern."""
    d = _vector("density", density)
    if not 0 < limit <= 1:
        raise ValueError(f"limit must be in (0, 1], got {limit!r}")
    return _argmax_where(d, (d > 0) & (d < limit), f"0 < density < {limit}")


def largest_mean_active(
    sums: Float[Tensor, " d_sae"], counts: Int[Tensor, " d_sae"], min_count: int = 20
) -> int:
    """The latent with the largest mean activation *when active* (``sums / counts``) among
    those active on at least ``min_count`` tokens. With ``sums`` of activations times decoder
    row norms (:func:`saebook.latent_stats.decoder_scaled`), the latent that writes the
    longest vector when it fires; with raw activations, only the largest activation."""
    s = _vector("sums", sums)
    c = _vector("counts", counts, s.numel())
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count!r}")
    return _argmax_where(s / c.clamp(min=1), c >= min_count, f"counts >= {min_count}")


def most_selective(
    max_act: Float[Tensor, " d_sae"],
    mean_act: Float[Tensor, " d_sae"],
    density: Float[Tensor, " d_sae"],
    min_density: float = 1e-3,
) -> int:
    """The latent with the largest ratio of its maximum to its mean activation when active
    (``LatentStats.mean_activation``) among those firing on at least ``min_density`` of
    tokens: a latent that responds strongly to a few contexts. A mean below 1e-6 (or NaN,
    for a latent that never fires) counts as 1e-6."""
    mx = _vector("max_act", max_act)
    mean = _vector("mean_act", mean_act, mx.numel())
    d = _vector("density", density, mx.numel())
    ratio = mx / mean.nan_to_num(0.0).clamp(min=1e-6)
    return _argmax_where(ratio, d >= min_density, f"density >= {min_density}")
