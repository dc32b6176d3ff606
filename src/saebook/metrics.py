"""Reconstruction quality of an SAE or transcoder spliced into a model.

The numbers a reader checks first: how much of the activation the SAE explains, how many
latents fire per token, and what splicing it in costs the model's next-token loss.

Chapters: intro/01, intro/02, intro/07, training/01, training/02, training/03, training/04,
training/05, training/06
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from saebook.hooks import bos_mask, check_sae_hooks, exclude_special_tokens, stop_layer
from saebook.validate import check_sae_input, check_tensor, check_tokens

__all__ = [
    "ReconstructionMetrics",
    "check_sae_hooks",
    "sae_input_and_target",
    "explained_variance",
    "l2_ratio",
    "kl_divergence",
    "reconstruction_metrics",
    "activation_metrics",
]


@torch.no_grad()
def sae_input_and_target(
    model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "batch seq"]
) -> tuple[Tensor, Tensor]:
    """The activations an SAE reads and the ones it must reproduce, on ``tokens``.

    For an SAE both are the same hook; for a transcoder the target is ``hook_name_out``.
    Shapes are the model's (e.g. ``hook_z`` keeps its head axis).
    """
    hook_in, hook_out = check_sae_hooks(model, sae)
    tokens = check_tokens(tokens, model)
    _, cache = model.run_with_cache(
        tokens,
        names_filter=lambda n: n in (hook_in, hook_out),
        stop_at_layer=stop_layer(hook_in, hook_out),
    )
    x_in, target = cache[hook_in], cache[hook_out]
    check_sae_input(sae, x_in, hook_in)
    width = target.shape[-2] * target.shape[-1] if target.ndim == 4 else target.shape[-1]
    d_out = getattr(sae.cfg, "d_out", sae.cfg.d_in)
    if width != d_out:
        raise ValueError(
            f"sae's output width (cfg.d_out) must equal the width of hook {hook_out!r} "
            f"({width}), got {d_out}"
        )
    return x_in, target


def explained_variance(target: Float[Tensor, "n d"], reconstruction: Float[Tensor, "n d"]) -> float:
    """``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` over all rows."""
    check_tensor("target", target, finite=True)
    check_tensor("reconstruction", reconstruction, finite=True)
    if target.shape != reconstruction.shape:
        raise ValueError(
            f"reconstruction must have the target's shape {tuple(target.shape)}, "
            f"got {tuple(reconstruction.shape)}"
        )
    resid = (target - reconstruction).pow(2).sum()
    total = (target - target.mean(0)).pow(2).sum()
    return float(1 - resid / total)


def l2_ratio(target: Float[Tensor, "n d"], reconstruction: Float[Tensor, "n d"]) -> float:
    """Mean over rows of ``||x_hat|| / ||x||``: below 1 means the SAE shrinks its inputs.

    Rows whose input norm is below 1e-4 are divided by 1 instead (as SAELens does), so a
    zero input does not produce an infinity.
    """
    if target.shape != reconstruction.shape or target.ndim != 2:
        raise ValueError(
            f"target and reconstruction must be equal (n, d) tensors, "
            f"got {tuple(target.shape)} and {tuple(reconstruction.shape)}"
        )
    norm_in = target.norm(dim=-1)
    norm_in = torch.where(norm_in.abs() < 1e-4, torch.ones_like(norm_in), norm_in)
    return float((reconstruction.norm(dim=-1) / norm_in).mean())


def kl_divergence(
    clean_logits: Float[Tensor, "... vocab"], new_logits: Float[Tensor, "... vocab"]
) -> Float[Tensor, ...]:
    """``KL(p_clean || p_new)`` of the next-token distributions, per position (in nats)."""
    if clean_logits.shape != new_logits.shape:
        raise ValueError(
            f"new_logits must have clean_logits' shape {tuple(clean_logits.shape)}, "
            f"got {tuple(new_logits.shape)}"
        )
    log_p = clean_logits.log_softmax(-1)
    log_q = new_logits.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def activation_metrics(
    target: Float[Tensor, "n d"],
    reconstruction: Float[Tensor, "n d"],
    acts: Float[Tensor, "n d_sae"],
) -> dict[str, float]:
    """The metrics that need no forward pass, over ``n`` positions.

    ``explained_variance`` (:func:`explained_variance`), ``mse`` (squared error summed over
    ``d``, averaged over positions), ``l0`` (mean number of latents with ``acts > 0`` per
    position), ``dead_fraction`` (share of latents that never fire) and ``l2_ratio``
    (:func:`l2_ratio`).
    """
    if acts.ndim != 2 or acts.shape[0] != target.shape[0]:
        raise ValueError(
            f"acts must be ({target.shape[0]}, d_sae) to match target, got {tuple(acts.shape)}"
        )
    fired = (acts > 0).float()
    return {
        "explained_variance": explained_variance(target, reconstruction),
        "mse": float((target - reconstruction).pow(2).sum(-1).mean()),
        "l0": float(fired.sum(-1).mean()),
        "dead_fraction": float((fired.sum(0) == 0).float().mean()),
        "l2_ratio": l2_ratio(target, reconstruction),
    }


@dataclass
class ReconstructionMetrics:
    """Quality of one SAE on one batch of tokens (BOS positions excluded throughout)."""

    explained_variance: float
    mse: float
    l0: float
    dead_fraction: float  # latents that never fired on the batch
    ce_clean: float
    ce_with_sae: float
    ce_zero_ablation: float
    kl_div: float  # mean KL(clean || with SAE) of next-token distributions over kept positions
    l2_ratio: float  # mean ||x_hat|| / ||x||: shrinkage when below 1

    @property
    def ce_loss_recovered(self) -> float:
        """Share of the loss gap (zero-ablated hook vs clean model) that the SAE closes."""
        gap = self.ce_zero_ablation - self.ce_clean
        return float("nan") if gap == 0 else (self.ce_zero_ablation - self.ce_with_sae) / gap

    def as_dict(self) -> dict[str, float]:
        """All fields plus ``ce_loss_recovered``."""
        return {**asdict(self), "ce_loss_recovered": self.ce_loss_recovered}


METRICS_BUDGET = 1 << 26  # floats of latents or logits one chunk of rows may hold (256 MB)


@torch.no_grad()
def reconstruction_metrics(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, "batch seq"],
    batch_size: int | None = None,
) -> ReconstructionMetrics:
    """Explained variance, MSE, L0, dead latents, CE losses, KL and L2 ratio of ``sae``.

    All on ``tokens``. The SAE is spliced in without its error term and bypassed at BOS
    positions (as it was trained); "zero ablation" sets the SAE's output hook to zero at the
    same positions. Rows go through in chunks of ``batch_size`` (default: as many as keep
    the latents and logits of a chunk within :data:`METRICS_BUDGET` floats), so memory does
    not grow with the number of rows; the numbers do not depend on the chunking.
    """
    _, hook_out = check_sae_hooks(model, sae)
    tokens = check_tokens(tokens, model)
    if batch_size is None:
        per_row = tokens.shape[1] * max(sae.cfg.d_sae, model.cfg.d_vocab)
        batch_size = max(1, METRICS_BUDGET // per_row)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    tgts, recs, l0s, kls = [], [], [], []
    ce = {"clean": [], "sae": [], "zero": []}
    fired_any = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=sae.W_enc.device)
    for start in range(0, tokens.shape[0], batch_size):
        chunk = tokens[start : start + batch_size]
        keep = bos_mask(model, chunk)
        x_in, target = sae_input_and_target(model, sae, chunk)
        acts = sae.encode(x_in)
        recon = sae.decode(acts)
        flat = (lambda t: t.flatten(2)) if target.ndim == 4 else (lambda t: t)
        tgts.append(flat(target)[keep])
        recs.append(flat(recon)[keep])
        fired = acts[keep] > 0
        l0s.append(fired.sum(-1).float())
        fired_any |= fired.any(0)
        del acts, recon, fired

        def zero(act, hook, keep=keep):
            mask = keep.view(*keep.shape, *([1] * (act.ndim - 2)))
            return torch.where(mask, torch.zeros_like(act), act)

        clean_logits, ce_clean = model(chunk, return_type="both", loss_per_token=True)
        sae_logits, ce_sae = model.run_with_saes(
            chunk, saes=[sae], return_type="both", loss_per_token=True,
            exclude_special_tokens=exclude_special_tokens(model),
        )  # fmt: skip
        kls.append(kl_divergence(clean_logits, sae_logits)[keep])
        del clean_logits, sae_logits
        ce["clean"].append(ce_clean.flatten())
        ce["sae"].append(ce_sae.flatten())
        ce["zero"].append(
            model.run_with_hooks(
                chunk, return_type="loss", loss_per_token=True, fwd_hooks=[(hook_out, zero)]
            ).flatten()
        )
    tgt, rec = torch.cat(tgts), torch.cat(recs)
    mean_ce = {k: float(torch.cat(v).mean()) for k, v in ce.items()}
    return ReconstructionMetrics(
        explained_variance=explained_variance(tgt, rec),
        mse=float((tgt - rec).pow(2).sum(-1).mean()),
        l0=float(torch.cat(l0s).mean()),
        dead_fraction=float((~fired_any).float().mean()),
        ce_clean=mean_ce["clean"],
        ce_with_sae=mean_ce["sae"],
        ce_zero_ablation=mean_ce["zero"],
        kl_div=float(torch.cat(kls).mean()),
        l2_ratio=l2_ratio(tgt, rec),
    )
