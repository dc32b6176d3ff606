"""Feature absorption: where a general latent goes silent because a specific one fired.

When concepts are hierarchical (every *Lily* is a *name*), a sparse dictionary can save one
active latent per token by letting the child latent (*Lily*) carry the parent's direction in
its decoder and switching the parent latent (*name*) off wherever the child fires. The parent
latent then looks like a *name* detector with holes. This module measures those holes:

* :func:`train_probe` fits a logistic-regression probe for a token property on the SAE's
  input activations; its weight vector is the reference direction of the concept;
* :func:`first_letter_labels` gives a property every tokenizer has (the token's first letter),
  in the spirit of SAEBench's first-letter absorption benchmark;
* :func:`measure_absorption` takes the main latent(s) for a property, finds the positions
  where the property holds but they are silent (false negatives), and counts those where an
  *absorbing* latent fires instead: one whose decoder points along the reference direction
  (and, optionally, that fires mostly on the property);
* :func:`absorption_rate` is the core count, and :func:`sublabel_shares` compares how often
  finer labels (e.g. the planted *Lily*) occur among all positives and among the misses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from sae_lens import HookedSAETransformer
from sklearn.linear_model import LogisticRegression
from torch import Tensor

__all__ = [
    "Probe",
    "AbsorptionResult",
    "train_probe",
    "first_letter_labels",
    "absorption_rate",
    "measure_absorption",
    "sublabel_shares",
]


@dataclass(frozen=True)
class Probe:
    """A linear probe: ``direction`` (unit vector), ``bias`` (for the unnormalised weights,
    ``logit = (x @ direction) * scale + bias``) and ``test_accuracy`` on held-out rows."""

    direction: Float[Tensor, " d"]
    scale: float
    bias: float
    test_accuracy: float

    def predict(self, x: Float[Tensor, "n d"]) -> Bool[Tensor, " n"]:
        """True where the probe's logit is positive."""
        return (x.float().cpu() @ self.direction) * self.scale + self.bias > 0


@dataclass
class AbsorptionResult:
    """Counts behind an absorption rate (see :func:`measure_absorption`).

    ``n_positive`` positions hold the property; at ``n_missed`` of them no main latent fires;
    at ``n_absorbed`` of those an absorbing latent fires. ``absorbers`` has one row per
    absorbing latent: ``latent``, ``n_absorbed`` (misses where it fires), ``cosine`` with the
    reference direction and ``precision`` for the property. ``missed`` and ``absorbed`` are
    boolean masks over the positions.
    """

    main_latents: list[int]
    n_positive: int
    n_missed: int
    n_absorbed: int
    absorbers: pd.DataFrame
    missed: Bool[Tensor, " n"]
    absorbed: Bool[Tensor, " n"]

    @property
    def miss_rate(self) -> float:
        """Share of the positive positions where no main latent fires."""
        return self.n_missed / self.n_positive if self.n_positive else float("nan")

    @property
    def rate(self) -> float:
        """Absorption rate: share of the positive positions that were missed *and* absorbed."""
        return self.n_absorbed / self.n_positive if self.n_positive else float("nan")


def _check_2d(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.ndim != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a 2-D tensor, got {shape}")


def _check_mask(name: str, mask: Tensor, n: int) -> Tensor:
    if not isinstance(mask, Tensor) or mask.shape != (n,):
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a tensor of shape ({n},), got {shape}")
    return mask.bool().cpu()


def train_probe(
    activations: Float[Tensor, "n d"],
    label: Bool[Tensor, " n"],
    test_share: float = 0.2,
    c: float = 1.0,
    seed: int = 0,
) -> Probe:
    """Fit a balanced logistic-regression probe for ``label`` on ``activations``.

    Rows are split at random into a training part and a ``test_share`` held-out part; the
    probe is fitted on the raw activations, with class weights that balance the two classes
    (a rare property would otherwise be ignored) and L2 strength ``1/c``. Returns a
    :class:`Probe` whose ``direction`` is the unit weight vector.
    """
    _check_2d("activations", activations)
    n = activations.shape[0]
    y = _check_mask("label", label, n).numpy()
    if y.all() or not y.any():
        raise ValueError(f"label must have both classes, got {int(y.sum())} positives of {n}")
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must be in (0, 1), got {test_share!r}")
    x = activations.detach().float().cpu().numpy()
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(test_share * n)))
    test, train = order[:n_test], order[n_test:]
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=500)
    model.fit(x[train], y[train])
    w = torch.tensor(model.coef_[0], dtype=torch.float32)
    norm = float(w.norm())
    return Probe(
        direction=w / norm,
        scale=norm,
        bias=float(model.intercept_[0]),
        test_accuracy=float(model.score(x[test], y[test])),
    )


def first_letter_labels(
    model: HookedSAETransformer, tokens: Int[Tensor, "rows seq"], letter: str
) -> Bool[Tensor, "rows seq"]:
    """True where a token, stripped of leading spaces, starts with the letter ``letter``.

    Case is ignored; only tokens whose first visible character is a letter count.
    """
    if not isinstance(letter, str) or len(letter) != 1 or not letter.isalpha():
        raise ValueError(f"letter must be a single letter, got {letter!r}")
    letter = letter.lower()
    ids = tokens.cpu()
    unique = torch.unique(ids).tolist()
    hits = {i for i in unique if model.tokenizer.decode([i]).lstrip().lower()[:1] == letter}
    table = torch.zeros(int(ids.max()) + 1, dtype=torch.bool)
    if hits:
        table[torch.tensor(sorted(hits))] = True
    return table[ids]


def absorption_rate(
    main_fires: Bool[Tensor, " n"],
    label: Bool[Tensor, " n"],
    absorber_fires: Bool[Tensor, "n k"],
) -> float:
    """Share of the ``label`` positions where the main latent is silent and an absorber fires.

    ``main_fires`` marks where the main latent (or any of the main latents) is active,
    ``absorber_fires`` where each of ``k`` candidate absorbing latents is. NaN when ``label``
    is never True.
    """
    n = label.shape[0]
    label = _check_mask("label", label, n)
    main_fires = _check_mask("main_fires", main_fires, n)
    if absorber_fires.ndim != 2 or absorber_fires.shape[0] != n:
        raise ValueError(f"absorber_fires must be ({n}, k), got {tuple(absorber_fires.shape)}")
    n_pos = int(label.sum())
    if n_pos == 0:
        return float("nan")
    absorbed = label & ~main_fires & absorber_fires.bool().cpu().any(-1)
    return float(absorbed.sum()) / n_pos


def measure_absorption(
    latent_acts: Float[Tensor, "n d_sae"],
    label: Bool[Tensor, " n"],
    main_latents: list[int],
    decoder: Float[Tensor, "d_sae d"],
    reference: Float[Tensor, " d"],
    min_cosine: float = 0.1,
    min_precision: float = 0.0,
    positions: Bool[Tensor, " n"] | None = None,
) -> AbsorptionResult:
    """Absorption of the property ``label`` away from ``main_latents``.

    Positives are the positions where ``label`` holds (and ``positions``, e.g. where a probe
    also sees the property, when given). A positive is *missed* when no main latent fires,
    and *absorbed* when, in addition, some other latent fires there whose decoder row has
    cosine at least ``min_cosine`` with ``reference`` (the probe direction for the property)
    and whose precision for ``label`` over all positions is at least ``min_precision``.
    """
    _check_2d("latent_acts", latent_acts)
    _check_2d("decoder", decoder)
    n, d_sae = latent_acts.shape
    if decoder.shape[0] != d_sae:
        raise ValueError(
            f"decoder must have one row per latent ({d_sae}), got {decoder.shape[0]} rows"
        )
    if reference.shape != (decoder.shape[1],):
        raise ValueError(
            f"reference must have shape ({decoder.shape[1]},), got {tuple(reference.shape)}"
        )
    main = [int(m) for m in main_latents]
    if not main or any(not 0 <= m < d_sae for m in main):
        raise ValueError(f"main_latents must be a non-empty list in [0, {d_sae}), got {main}")
    label = _check_mask("label", label, n)
    positive = label & (_check_mask("positions", positions, n) if positions is not None else True)
    fires = latent_acts.detach().cpu() > 0
    cos = torch.nn.functional.normalize(decoder.detach().float().cpu(), dim=-1) @ (
        reference.detach().float().cpu() / reference.float().norm().clamp(min=1e-12).cpu()
    )
    precision = (fires & label[:, None]).sum(0).float() / fires.sum(0).clamp(min=1)
    candidate = (cos >= min_cosine) & (precision >= min_precision)
    candidate[main] = False
    missed = positive & ~fires[:, main].any(-1)
    hits = fires[missed][:, candidate]  # (n_missed, n_candidates)
    absorbed = missed.clone()
    absorbed[missed] = hits.any(-1)
    ids = torch.nonzero(candidate).flatten()
    counts = hits.sum(0)
    keep = counts > 0
    absorbers = pd.DataFrame(
        {
            "latent": ids[keep].tolist(),
            "n_absorbed": counts[keep].tolist(),
            "cosine": cos[ids[keep]].tolist(),
            "precision": precision[ids[keep]].tolist(),
        }
    ).sort_values("n_absorbed", ascending=False, ignore_index=True)
    return AbsorptionResult(
        main_latents=main,
        n_positive=int(positive.sum()),
        n_missed=int(missed.sum()),
        n_absorbed=int(absorbed.sum()),
        absorbers=absorbers,
        missed=missed,
        absorbed=absorbed,
    )


def sublabel_shares(
    label: Bool[Tensor, " n"], missed: Bool[Tensor, " n"], sublabels: dict[str, Bool[Tensor, " n"]]
) -> pd.DataFrame:
    """How often each finer label occurs among all ``label`` positions and among the misses.

    One row per sublabel: ``share of positives`` and ``share of misses``. A planted child
    that is absorbed shows a much larger share among the misses than among the positives.
    """
    n = label.shape[0]
    label = _check_mask("label", label, n)
    missed = _check_mask("missed", missed, n)
    n_pos, n_missed = int(label.sum()), int(missed.sum())
    rows = []
    for name, sub in sublabels.items():
        sub = _check_mask(f"sublabels[{name!r}]", sub, n)
        rows.append(
            {
                "sublabel": name,
                "share of positives": float((sub & label).sum()) / n_pos if n_pos else np.nan,
                "share of misses": float((sub & missed).sum()) / n_missed if n_missed else np.nan,
            }
        )
    return pd.DataFrame(rows)
