"""End-to-end SAEs: train a residual-stream SAE on what the model does with its output.

An ordinary SAE is trained to reproduce its input (MSE). An end-to-end (e2e) SAE (Braun et
al. 2024) is trained so that the model's next-token distribution barely changes when the
SAE's reconstruction replaces the activation: its loss is the KL divergence between the
original distribution and the spliced one, plus a sparsity term. The e2e+ds variant adds
the squared error of the residual stream at every later layer ("downstream"). Here the
sparsity is a TopK constraint, so an e2e SAE and an MSE SAE with the same ``k`` have the
same L0 by construction.

Training is made cheap by caching the residual stream at the SAE's hook once and running
only the layers after it (TransformerLens' ``start_at_layer``). Every SAE trained here is
a SAELens ``TopKSAE`` (after a save/load round trip), so the rest of the package and
``HookedSAETransformer.run_with_saes`` work on it.

Chapters: training/05
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE, HookedSAETransformer, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata
from torch import Tensor

from saebook.hooks import bos_mask, hook_layer, stop_layer
from saebook.metrics import kl_divergence
from saebook.validate import check_int, check_tensor, check_tokens

__all__ = [
    "OBJECTIVES",
    "resid_layer",
    "downstream_hooks",
    "cache_resid",
    "splice",
    "kl_loss",
    "downstream_mse",
    "forward_from_resid",
    "spliced_logits",
    "e2e_losses",
    "E2ERun",
    "train_topk",
]

#: training objectives: "mse" (local reconstruction), "e2e" (KL), "e2e+ds" (KL + downstream MSE)
OBJECTIVES = ("mse", "e2e", "e2e+ds")


def resid_layer(model: HookedSAETransformer, hook_name: str) -> int:
    """The layer ``L`` whose residual-stream input ``hook_name`` is (``blocks.L.hook_resid_pre``).

    A forward pass started with ``start_at_layer=L`` takes exactly this tensor as input.
    Raises ``ValueError`` for any other hook (e2e training here needs a residual hook).
    """
    layer = hook_layer(hook_name) if isinstance(hook_name, str) else None
    if (
        layer is None
        or hook_name != f"blocks.{layer}.hook_resid_pre"
        or layer >= model.cfg.n_layers
    ):
        raise ValueError(
            f"hook_name must be blocks.<L>.hook_resid_pre with L < {model.cfg.n_layers}, "
            f"got {hook_name!r}"
        )
    return layer


def downstream_hooks(model: HookedSAETransformer, hook_name: str) -> list[str]:
    """The residual-stream hooks after ``hook_name``'s layer: ``blocks.l.hook_resid_post`` for
    every layer ``l`` from the SAE's layer to the last (the e2e+ds loss compares these)."""
    layer = resid_layer(model, hook_name)
    return [f"blocks.{i}.hook_resid_post" for i in range(layer, model.cfg.n_layers)]


@torch.no_grad()
def cache_resid(
    model: HookedSAETransformer,
    tokens: Int[Tensor, "rows seq"],
    hook_name: str,
    batch_size: int = 32,
) -> tuple[Float[Tensor, "rows seq d"], Bool[Tensor, "rows seq"]]:
    """The residual stream at ``hook_name`` over ``tokens`` (whole sequences, not flattened:
    the layers after the hook attend across positions) and the mask of non-BOS positions,
    where an SAE is spliced in. The forward pass stops at the hook's layer."""
    resid_layer(model, hook_name)
    tokens = check_tokens(tokens, model)
    check_int("batch_size", batch_size)
    chunks = []
    for start in range(0, tokens.shape[0], batch_size):
        _, cache = model.run_with_cache(
            tokens[start : start + batch_size],
            names_filter=lambda name: name == hook_name,
            stop_at_layer=stop_layer(hook_name),
        )
        chunks.append(cache[hook_name])
    return torch.cat(chunks), bos_mask(model, tokens)


def splice(
    resid: Float[Tensor, "rows seq d"],
    reconstruction: Float[Tensor, "rows seq d"],
    keep: Bool[Tensor, "rows seq"],
) -> Float[Tensor, "rows seq d"]:
    """``reconstruction`` where ``keep`` is True, ``resid`` elsewhere (BOS stays untouched)."""
    if resid.shape != reconstruction.shape or keep.shape != resid.shape[:-1]:
        raise ValueError(
            f"reconstruction must have resid's shape {tuple(resid.shape)} and keep its first "
            f"two dims, got {tuple(reconstruction.shape)} and {tuple(keep.shape)}"
        )
    return torch.where(keep[..., None], reconstruction, resid)


def kl_loss(
    clean_logits: Float[Tensor, "rows seq vocab"],
    new_logits: Float[Tensor, "rows seq vocab"],
    keep: Bool[Tensor, "rows seq"],
) -> Float[Tensor, ""]:
    """Mean over the ``keep`` positions of ``KL(p_clean || p_new)`` of the next-token
    distributions, in nats (:func:`saebook.metrics.kl_divergence` per position)."""
    if keep.shape != clean_logits.shape[:-1]:
        raise ValueError(
            f"keep must have shape {tuple(clean_logits.shape[:-1])}, got {tuple(keep.shape)}"
        )
    if not bool(keep.any()):
        raise ValueError("keep must select at least one position, got none")
    return kl_divergence(clean_logits, new_logits)[keep].mean()


def downstream_mse(
    clean: list[Float[Tensor, "rows seq d"]],
    new: list[Float[Tensor, "rows seq d"]],
    keep: Bool[Tensor, "rows seq"],
) -> Float[Tensor, ""]:
    """The e2e+ds term: for each downstream layer the squared error ``||new - clean||^2``
    summed over the model dimension and averaged over the ``keep`` positions, then averaged
    over the layers (Braun et al. divide the sum over layers by their number)."""
    if not clean or len(clean) != len(new):
        raise ValueError(
            f"clean and new must be equally long, non-empty lists, got {len(clean)} and {len(new)}"
        )
    terms = []
    for c, n in zip(clean, new, strict=True):
        if c.shape != n.shape or c.shape[:-1] != keep.shape:
            raise ValueError(
                f"each clean/new pair must share a shape whose first dims are keep's "
                f"{tuple(keep.shape)}, got {tuple(c.shape)} and {tuple(n.shape)}"
            )
        terms.append((n - c).pow(2).sum(-1)[keep].mean())
    return torch.stack(terms).mean()


def forward_from_resid(
    model: HookedSAETransformer,
    resid: Float[Tensor, "rows seq d"],
    layer: int,
    hooks: list[str] | None = None,
) -> tuple[Float[Tensor, "rows seq vocab"], list[Tensor]]:
    """Run ``model`` from layer ``layer`` on the residual stream ``resid`` (TransformerLens'
    ``start_at_layer``). Returns the logits and the activations at ``hooks`` (in order),
    *not* detached, so gradients flow through both."""
    check_tensor("resid", resid, ndim=3, floating=True)
    names = list(hooks or [])
    stored: dict[str, Tensor] = {}

    def keep_act(act: Tensor, hook) -> None:
        stored[hook.name] = act

    with model.hooks(fwd_hooks=[(name, keep_act) for name in names]):
        logits = model(resid, start_at_layer=layer)
    return logits, [stored[name] for name in names]


def spliced_logits(
    model: HookedSAETransformer,
    sae: SAE,
    resid: Float[Tensor, "rows seq d"],
    keep: Bool[Tensor, "rows seq"],
) -> Float[Tensor, "rows seq vocab"]:
    """Logits of ``model`` with ``sae``'s reconstruction of ``resid`` (cached at the SAE's
    hook) spliced in at the ``keep`` positions, run from the hook's layer onwards."""
    layer = resid_layer(model, sae.cfg.metadata.hook_name)
    recon = sae.decode(sae.encode(resid))
    return forward_from_resid(model, splice(resid, recon, keep), layer)[0]


def e2e_losses(
    model: HookedSAETransformer,
    sae: SAE,
    resid: Float[Tensor, "rows seq d"],
    keep: Bool[Tensor, "rows seq"],
) -> dict[str, Tensor]:
    """Every term the training objectives use, on one batch of cached ``resid``.

    ``kl`` (:func:`kl_loss` of the spliced logits against the clean ones), ``ds_mse``
    (:func:`downstream_mse` at :func:`downstream_hooks`), ``mse`` (squared reconstruction
    error summed over ``d``, mean over ``keep`` positions), ``explained_variance`` of the
    ``keep`` positions and ``l0`` (latents firing per kept position). The clean pass runs
    without gradients; the others keep theirs.
    """
    hook = sae.cfg.metadata.hook_name
    layer, names = resid_layer(model, hook), downstream_hooks(model, hook)
    with torch.no_grad():
        clean_logits, clean_down = forward_from_resid(model, resid, layer, names)
    acts = sae.encode(resid)
    recon = sae.decode(acts)
    new_logits, new_down = forward_from_resid(model, splice(resid, recon, keep), layer, names)
    x, x_hat = resid[keep], recon[keep]
    error = (x_hat - x).pow(2).sum(-1)
    return {
        "kl": kl_loss(clean_logits, new_logits, keep),
        "ds_mse": downstream_mse(clean_down, new_down, keep),
        "mse": error.mean(),
        "explained_variance": 1 - error.sum() / (x - x.mean(0)).pow(2).sum(),
        "l0": (acts[keep] > 0).float().sum(-1).mean(),
    }


@dataclass
class E2ERun:
    """One finished run: the SAELens SAE, its per-step curves and its wall time."""

    sae: SAE
    objective: str
    curves: pd.DataFrame  # step, loss, kl, ds_mse, mse, explained_variance, l0
    seconds: float


def _new_sae(resid: Tensor, keep: Tensor, d_sae: int, k: int, metadata: dict) -> TopKSAE:
    """A TopK SAE with unit-norm random decoder rows, the encoder their transpose and the
    decoder bias at the mean of the kept activations."""
    d_in = resid.shape[-1]
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, metadata=SAEMetadata(**metadata)))
    with torch.no_grad():
        w = torch.randn(d_sae, d_in)
        sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_enc.zero_()
        sae.b_dec.copy_(resid[keep].mean(0))
    return sae.to(resid.device)


def _objective(terms: dict[str, Tensor], objective: str, scale: float, ds: float) -> Tensor:
    """The loss to minimise: MSE over the data's variance, KL, or KL plus ``ds`` times the
    downstream MSE over the same variance."""
    if objective == "mse":
        return terms["mse"] / scale
    if objective == "e2e":
        return terms["kl"]
    return terms["kl"] + ds * terms["ds_mse"] / scale


def train_topk(
    model: HookedSAETransformer,
    resid: Float[Tensor, "rows seq d"],
    keep: Bool[Tensor, "rows seq"],
    objective: str,
    d_sae: int,
    k: int,
    metadata: dict,
    steps: int,
    batch_rows: int = 8,
    lr: float = 1e-3,
    ds_coefficient: float = 1.0,
    seed: int = 0,
) -> E2ERun:
    """Train a SAELens ``TopKSAE`` on cached sequences ``resid`` for one of :data:`OBJECTIVES`.

    All objectives share the initialisation (seeded), the batches (``batch_rows`` sequences
    drawn by a seeded permutation per pass), Adam with cosine decay to ``lr / 10`` and
    unit-norm decoder rows after each step; only the loss differs. ``mse`` and the
    downstream term are divided by the variance of the kept activations so that their
    scale does not depend on the model. ``metadata`` needs ``hook_name`` (a
    ``hook_resid_pre``). The returned SAE went through SAELens' save/load round trip.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if "hook_name" not in metadata:
        raise ValueError(f"metadata must contain 'hook_name', got keys {sorted(metadata)}")
    resid_layer(model, metadata["hook_name"])
    check_tensor("resid", resid, ndim=3, floating=True, finite=True)
    if keep.shape != resid.shape[:-1]:
        raise ValueError(f"keep must have shape {tuple(resid.shape[:-1])}, got {tuple(keep.shape)}")
    check_int("d_sae", d_sae)
    check_int("k", k)
    check_int("steps", steps)
    check_int("batch_rows", batch_rows)
    if k >= d_sae or batch_rows > resid.shape[0]:
        raise ValueError(
            f"k must be below d_sae ({d_sae}) and batch_rows at most the rows of resid "
            f"({resid.shape[0]}), got k={k}, batch_rows={batch_rows}"
        )
    torch.manual_seed(seed)
    sae = _new_sae(resid, keep, d_sae, k, metadata)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:  # gradients flow through the model to the SAE only
        p.requires_grad_(False)
    start = time.perf_counter()
    try:
        rows = _fit(model, sae, resid, keep, objective, steps, batch_rows, lr, ds_coefficient, seed)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        sae.save_model(tmp)
        loaded = SAE.load_from_disk(tmp, device=str(resid.device))
    return E2ERun(sae=loaded, objective=objective, curves=pd.DataFrame(rows), seconds=seconds)


def _fit(
    model: HookedSAETransformer,
    sae: TopKSAE,
    resid: Tensor,
    keep: Tensor,
    objective: str,
    steps: int,
    batch_rows: int,
    lr: float,
    ds_coefficient: float,
    seed: int,
) -> list[dict[str, float]]:
    """The training loop of :func:`train_topk`; returns one row of curves per step."""
    scale = float((resid[keep] - resid[keep].mean(0)).pow(2).sum(-1).mean())
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr / 10)
    generator = torch.Generator().manual_seed(seed)
    order, rows = torch.randperm(resid.shape[0], generator=generator), []
    for step in range(steps):
        if order.numel() < batch_rows:
            order = torch.randperm(resid.shape[0], generator=generator)
        idx, order = order[:batch_rows], order[batch_rows:]
        terms = e2e_losses(model, sae, resid[idx], keep[idx])
        loss = _objective(terms, objective, scale, ds_coefficient)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True))
        rows.append({"step": step + 1, "loss": float(loss.detach()),
                     **{name: float(value.detach()) for name, value in terms.items()}})  # fmt: skip
    return rows
