"""Feature absorption: where a general latent goes silent because a specific one fired.

When concepts are hierarchical (every *Lily* is a *name*), a sparse dictionary can save one
active latent per token by letting the child latent (*Lily*) carry the parent's direction in
its decoder and switching the parent latent (*name*) off wherever the child fires. The parent
latent then looks like a *name* detector with holes. This module measures those holes the way
Chanin et al. ("A is for Absorption", 2024) define them and SAEBench's absorption benchmark
computes them:

* :func:`train_probe` fits a logistic-regression probe for a token property on the SAE's
  input activations; its weight vector is the reference direction of the concept;
* :func:`first_letter_labels` gives a property every tokenizer has (the token's first letter),
  as in SAEBench's first-letter absorption benchmark;
* :func:`k_sparse_main_latents` chooses the *main latents* of a property by k-sparse probing
  on the SAE's latents: k grows while the held-out F1 of a probe on the top-k latents jumps by
  more than a threshold. The extra latents beyond the first are **feature splitting**, which
  is reported separately and never counted as absorption;
* :func:`measure_absorption` scores every position where the property holds and the probe sees
  it: *full absorption* when no main latent fires, the latent with the largest projection on
  the probe direction is aligned with it, and that latent carries a large enough share of the
  activation's projection on the probe; and an *absorption fraction* (how much of the probe
  projection other aligned latents carry instead of the main ones);
* :func:`absorption_rate` is the core count of the chapter's exercise, and
  :func:`sublabel_shares` compares how often finer labels (e.g. the planted *Lily*) occur among
  all positives and among the misses.

Chapters: deeper/03
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
    "MainLatents",
    "train_probe",
    "k_sparse_main_latents",
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
class MainLatents:
    """The main latents of a property, chosen by k-sparse probing (see
    :func:`k_sparse_main_latents`).

    ``ranking`` lists the candidate latents, best first (by the weight an L1-regularised probe
    on all latents gives them); ``f1_by_k[k - 1]`` is the held-out F1 of a probe on the first
    ``k`` of them; ``latents`` are the first ``k`` for the last ``k`` whose F1 rose by more than
    the threshold over the previous accepted one. ``n_split`` counts the latents beyond the
    first: how far the property is split across latents.
    """

    latents: list[int]
    ranking: list[int]
    f1_by_k: list[float]

    @property
    def n_split(self) -> int:
        """Number of split latents: main latents beyond the first."""
        return len(self.latents) - 1


@dataclass
class AbsorptionResult:
    """Per-position absorption scores of one property (see :func:`measure_absorption`).

    ``n_positive`` positions are scored (the property holds and, when given, the probe sees
    it). At ``n_missed`` of them no main latent fires; ``n_full`` of those are *fully
    absorbed*. ``fraction`` holds each scored position's absorption fraction (0 to 1) and
    ``full`` / ``missed`` are boolean masks over *all* positions. ``absorbers`` has one row per
    latent that was the absorbing latent of a full absorption: ``latent``, ``n_absorbed``
    and ``cosine`` of its decoder row with the probe direction.
    """

    main_latents: list[int]
    n_positive: int
    n_missed: int
    n_full: int
    fraction: Float[Tensor, " n_positive"]
    absorbers: pd.DataFrame
    missed: Bool[Tensor, " n"]
    full: Bool[Tensor, " n"]

    @property
    def miss_rate(self) -> float:
        """Share of the scored positions where no main latent fires."""
        return self.n_missed / self.n_positive if self.n_positive else float("nan")

    @property
    def rate(self) -> float:
        """Full-absorption rate: share of the scored positions that are fully absorbed."""
        return self.n_full / self.n_positive if self.n_positive else float("nan")

    @property
    def mean_fraction(self) -> float:
        """Mean absorption fraction over the scored positions (SAEBench's second score)."""
        return float(self.fraction.mean()) if self.n_positive else float("nan")

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


def k_sparse_main_latents(
    latent_acts: Float[Tensor, "n d_sae"],
    label: Bool[Tensor, " n"],
    max_k: int = 5,
    f1_jump: float = 0.03,
    l1_c: float = 0.1,
    test_share: float = 0.2,
    seed: int = 0,
) -> MainLatents:
    """Choose the main latents of ``label`` by k-sparse probing, as SAEBench does.

    An L1-regularised, class-balanced logistic regression on all latents (strength ``1/l1_c``)
    ranks them by weight. For k = 1 .. ``max_k`` a class-balanced logistic regression on the
    top-k latents is fitted on a training part of the rows and scored by F1 on the held-out
    ``test_share``. k grows while the F1 rises by more than ``f1_jump`` over the last accepted
    k; the latents of the last accepted k are the main latents. Splitting shows as more than
    one main latent; those latents are never counted as absorbers.
    """
    from scipy import sparse
    from sklearn.metrics import f1_score

    _check_2d("latent_acts", latent_acts)
    n, d_sae = latent_acts.shape
    y = _check_mask("label", label, n).numpy()
    if y.all() or not y.any():
        raise ValueError(f"label must have both classes, got {int(y.sum())} positives of {n}")
    if isinstance(max_k, bool) or not isinstance(max_k, int) or not 1 <= max_k <= d_sae:
        raise ValueError(f"max_k must be an int in [1, {d_sae}], got {max_k!r}")
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must be in (0, 1), got {test_share!r}")
    x = latent_acts.detach().float().cpu().numpy()
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(test_share * n)))
    test, train = order[:n_test], order[n_test:]
    l1 = LogisticRegression(
        C=l1_c, l1_ratio=1.0, solver="liblinear", class_weight="balanced", max_iter=1000
    )
    l1.fit(sparse.csr_matrix(x[train]), y[train])
    weights = torch.tensor(l1.coef_[0])
    ranking = weights.topk(max_k).indices.tolist()
    f1s, latents, best = [], [ranking[0]], -np.inf
    growing = True
    for k in range(1, max_k + 1):
        cols = ranking[:k]
        probe = LogisticRegression(class_weight="balanced", max_iter=500)
        probe.fit(x[train][:, cols], y[train])
        f1 = float(f1_score(y[test], probe.predict(x[test][:, cols]), zero_division=0.0))
        f1s.append(f1)
        if growing and f1 > best + f1_jump:
            best, latents = f1, cols
        else:
            growing = False
    return MainLatents(latents=[int(i) for i in latents], ranking=ranking, f1_by_k=f1s)


_EPS = 1e-8  # SAEBench's "does not fire" threshold


def _check_absorption_inputs(
    latent_acts: Tensor, model_acts: Tensor, decoder: Tensor, reference: Tensor, main_latents
) -> list[int]:
    """Validate :func:`measure_absorption`'s tensors; return the main latents as ints."""
    _check_2d("latent_acts", latent_acts)
    _check_2d("model_acts", model_acts)
    _check_2d("decoder", decoder)
    n, d_sae = latent_acts.shape
    if model_acts.shape[0] != n:
        raise ValueError(
            f"model_acts must have {n} rows like latent_acts, got {model_acts.shape[0]}"
        )
    if decoder.shape[0] != d_sae:
        raise ValueError(
            f"decoder must have one row per latent ({d_sae}), got {decoder.shape[0]} rows"
        )
    d = decoder.shape[1]
    if model_acts.shape[1] != d:
        raise ValueError(
            f"model_acts must have {d} columns like decoder, got {model_acts.shape[1]}"
        )
    if reference.shape != (d,):
        raise ValueError(f"reference must have shape ({d},), got {tuple(reference.shape)}")
    main = [int(m) for m in main_latents]
    if not main or any(not 0 <= m < d_sae for m in main):
        raise ValueError(f"main_latents must be a non-empty list in [0, {d_sae}), got {main}")
    return main


def _absorption_fraction(
    proj: Tensor, total: Tensor, is_main: Tensor, eligible: Tensor, max_absorbers: int,
    min_proportion: float,
) -> Tensor:
    """Per scored position, the share of the probe projection ``total`` that up to
    ``max_absorbers`` eligible non-main latents carry instead of the main ones (see
    :func:`measure_absorption`)."""
    main_proj = proj[:, is_main].sum(-1)
    allowed = (~is_main & eligible)[None, :] & (proj > 0)
    k = min(max_absorbers, proj.shape[1])
    absorbing = torch.where(allowed, proj, torch.zeros_like(proj)).topk(k, dim=-1).values.sum(-1)
    fraction = torch.zeros_like(total)
    some = ~((main_proj >= total) | (absorbing / total < min_proportion))
    fraction[some & (main_proj <= 0)] = 1.0
    partial = some & (main_proj > 0)
    taken = torch.minimum(absorbing, total - main_proj)
    fraction[partial] = (taken / (taken + main_proj))[partial].clamp(0.0, 1.0)
    return fraction


def measure_absorption(
    latent_acts: Float[Tensor, "n d_sae"],
    model_acts: Float[Tensor, "n d"],
    label: Bool[Tensor, " n"],
    main_latents: list[int],
    decoder: Float[Tensor, "d_sae d"],
    reference: Float[Tensor, " d"],
    positions: Bool[Tensor, " n"] | None = None,
    full_cosine: float = 0.025,
    fraction_cosine: float = 0.1,
    min_proportion: float = 0.4,
    max_absorbers: int = 3,
) -> AbsorptionResult:
    """Absorption of the property ``label`` away from ``main_latents`` (Chanin et al.).

    Scored positions are those where ``label`` holds (and ``positions``, e.g. where the probe
    also sees the property, when given). With ``u`` the unit ``reference`` (probe) direction,
    each latent's *probe projection* at a position is what it writes along ``u``: its
    activation times its decoder row's component along ``u`` (``decoder @ u``), and the
    activation's probe projection is ``model_acts @ u``. A
    position is **fully absorbed** when no main latent fires, the latent with the largest
    probe projection has cosine at least ``full_cosine`` with ``u``, the activation's probe
    projection is not negative, and that latent's probe projection is at least
    ``min_proportion`` of it. Its **absorption fraction** is the share of the probe
    projection that up to ``max_absorbers`` other latents with cosine at least
    ``fraction_cosine`` carry instead of the main latents (0 when they carry less than
    ``min_proportion`` of it or the main latents already carry it all). The defaults are
    SAEBench's. SAEBench multiplies activations by cosines after folding the decoder norms
    into the activations (``fold_W_dec_norm``), which gives the same probe projections; this
    form also holds for an SAE whose norms cannot be folded (a TopK SAE that does not rescale
    by them, such as the tiny world's).
    """
    main = _check_absorption_inputs(latent_acts, model_acts, decoder, reference, main_latents)
    if isinstance(max_absorbers, bool) or not isinstance(max_absorbers, int) or max_absorbers < 1:
        raise ValueError(f"max_absorbers must be a positive int, got {max_absorbers!r}")
    n, d_sae = latent_acts.shape
    label = _check_mask("label", label, n)
    positive = label & (_check_mask("positions", positions, n) if positions is not None else True)
    idx = torch.nonzero(positive).flatten()
    u = reference.detach().float().cpu()
    u = u / u.norm().clamp(min=1e-12)
    dec = decoder.detach().float().cpu()
    along = dec @ u  # (d_sae,) each decoder row's component along u
    cos = along / dec.norm(dim=-1).clamp(min=1e-12)
    acts = latent_acts.detach().float().cpu()[idx]
    total = model_acts.detach().float().cpu()[idx] @ u  # (m,)
    proj = acts * along  # (m, d_sae): what each latent writes along u
    is_main = torch.zeros(d_sae, dtype=torch.bool)
    is_main[main] = True

    fraction = _absorption_fraction(
        proj, total, is_main, cos >= fraction_cosine, max_absorbers, min_proportion
    )

    silent = (acts[:, is_main] < _EPS).all(-1)
    top = proj.argmax(-1)
    top_proj = proj.gather(-1, top[:, None]).squeeze(-1)
    full_here = silent & (cos[top] >= full_cosine) & (total >= 0) & (
        top_proj >= min_proportion * total
    )
    full_here &= total != 0

    missed = torch.zeros(n, dtype=torch.bool)
    missed[idx[silent]] = True
    full = torch.zeros(n, dtype=torch.bool)
    full[idx[full_here]] = True
    ids, counts = torch.unique(top[full_here], return_counts=True)
    absorbers = pd.DataFrame(
        {"latent": ids.tolist(), "n_absorbed": counts.tolist(), "cosine": cos[ids].tolist()}
    ).sort_values("n_absorbed", ascending=False, ignore_index=True)
    return AbsorptionResult(
        main_latents=main,
        n_positive=len(idx),
        n_missed=int(silent.sum()),
        n_full=int(full_here.sum()),
        fraction=fraction,
        absorbers=absorbers,
        missed=missed,
        full=full,
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
