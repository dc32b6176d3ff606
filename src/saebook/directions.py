"""Where an SAE latent writes: its decoder direction, taken to the residual stream.

Every technique that reads a latent's effect through the rest of the model (direct logit
attribution, logit tables, steering, latent geometry) needs the vector a latent adds to the
residual stream when it fires with activation 1. ``W_dec`` rows live where the SAE writes
(``hook_name_out`` for a transcoder, else ``hook_name``), so this module maps them:
residual-stream and MLP/attention-output SAEs are used as they are, ``hook_z`` SAEs go through
that layer's ``W_O`` and MLP ``hook_post`` SAEs through ``W_out``.

What such a vector does *directly* to the logits goes through the final normalisation before
``W_U``. :func:`effective_unembedding` is that map with the normalisation's scale frozen at 1,
and :func:`logit_effects` applies it: every logit effect in the package (dashboards' logit
tables, DLA, the logit lens, steering's choice of latents) goes through these two, so that a
model loaded with its LayerNorm weights unfolded gives the same numbers as the same model
folded by TransformerLens.

Chapters: intro/03, deeper/07
"""

from __future__ import annotations

import re

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

__all__ = [
    "check_latent",
    "check_latents",
    "decoder_directions",
    "effective_unembedding",
    "logit_effects",
]

_LAYER = re.compile(r"^blocks\.(\d+)\.")


def check_latent(sae: SAE, latent: object, arg: str = "latent") -> int:
    """``latent`` as a Python int after checking it indexes one of ``sae``'s latents."""
    if isinstance(latent, Tensor) and latent.numel() == 1:
        latent = int(latent)
    if isinstance(latent, bool) or not isinstance(latent, int):
        raise TypeError(f"{arg} must be an int latent index, got {type(latent).__name__}")
    if not 0 <= latent < sae.cfg.d_sae:
        raise IndexError(f"{arg} must be in [0, {sae.cfg.d_sae}) (sae.cfg.d_sae), got {latent}")
    return latent


def check_latents(
    sae: SAE, latents: object, arg: str = "latents", allow_empty: bool = False
) -> Int[Tensor, " n"]:
    """``latents`` as a flat int64 tensor after checking each indexes one of ``sae``'s latents.

    Accepts a list, tuple or tensor of ints; an empty one is an error unless ``allow_empty``.
    """
    try:
        index = torch.as_tensor(latents).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"{arg} must be a list or tensor of int latent indices, got {type(latents).__name__}"
        ) from None
    if index.numel() and (
        index.is_floating_point() or index.is_complex() or index.dtype == torch.bool
    ):
        raise TypeError(f"{arg} must hold int latent indices, got dtype {index.dtype}")
    index = index.long()
    if index.numel() == 0 and not allow_empty:
        raise ValueError(f"{arg} must name at least one latent, got an empty list")
    bad = index[(index < 0) | (index >= sae.cfg.d_sae)]
    if bad.numel():
        raise IndexError(
            f"{arg} must be in [0, {sae.cfg.d_sae}) (sae.cfg.d_sae), got {bad.tolist()}"
        )
    return index


@torch.no_grad()
def decoder_directions(
    model: HookedSAETransformer,
    sae: SAE,
    latents: list[int] | Int[Tensor, " n"] | None = None,
) -> Float[Tensor, "n d_model"]:
    """The residual-stream vectors that ``latents`` (default: all of them) add at activation 1.

    Returns a float tensor of shape ``(len(latents), d_model)`` on the SAE's device.
    """
    w = sae.W_dec.float()
    if latents is not None:
        w = w[check_latents(sae, latents, allow_empty=True).to(w.device)]
    hook = str(sae.cfg.metadata.hook_name_out or sae.cfg.metadata.hook_name)
    layer = _LAYER.match(hook)
    d_model = model.cfg.d_model
    if hook.endswith("hook_z") and layer:
        w_o = model.blocks[int(layer.group(1))].attn.W_O.float()  # (heads, d_head, d_model)
        if w.shape[-1] != w_o.shape[0] * w_o.shape[1]:
            raise ValueError(
                f"sae.W_dec must have n_heads * d_head = {w_o.shape[0] * w_o.shape[1]} columns "
                f"for hook {hook!r}, got {w.shape[-1]}"
            )
        return torch.einsum("nhd,hdm->nm", w.view(-1, w_o.shape[0], w_o.shape[1]), w_o.to(w.device))
    if hook.endswith("mlp.hook_post") and layer:
        return w @ model.blocks[int(layer.group(1))].mlp.W_out.float().to(w.device)
    if w.shape[-1] != d_model:
        raise ValueError(
            f"sae.W_dec rows must live in the residual stream (width d_model={d_model}) or at a "
            f"hook_z / mlp.hook_post hook, got width {w.shape[-1]} at hook {hook!r}"
        )
    return w


@torch.no_grad()
def effective_unembedding(model: HookedSAETransformer) -> Float[Tensor, "d_model d_vocab"]:
    """The linear map from a residual-stream vector to its direct effect on the logits.

    The final normalisation computes ``(x - mean(x)) / scale * w + b`` (LayerNorm; RMSNorm has
    no centring and no bias) before ``W_U``. With the per-position ``scale`` frozen at 1 the
    effect of adding ``d`` to the residual stream is ``(d - mean(d)) * w @ W_U``, so this
    returns ``C diag(w) W_U`` with ``C = I - 11^T / d_model``:

    * ``w`` is ``ln_final.w`` when the model still has it (loaded without folding), and 1 when
      it was folded into ``W_U`` at load time (TransformerLens' ``fold_ln``, the default of
      ``from_pretrained``: ``ln_final`` is then a ``LayerNormPre``/``RMSNormPre``);
    * the centring ``C`` applies for ``normalization_type`` ``"LN"`` and ``"LNPre"`` (a
      LayerNorm centres what it reads, folded or not), not for ``"RMS"``/``"RMSPre"``/None;
    * the bias ``b`` adds the same vector whatever ``d`` is, so it is no part of the map.

    So a model with ``ln_final.w`` unfolded and the same model folded by TransformerLens (with
    ``center_unembed=False``) give the same matrix; ``center_unembed=True`` moves every logit of
    a direction by the same amount, which changes no ranking and no logit difference. Divide by
    the clean ``ln_final.hook_scale`` to get the effect at a given position.
    """
    w_u = model.W_U.float()
    weight = getattr(getattr(model, "ln_final", None), "w", None)
    if isinstance(weight, Tensor):
        w_u = weight.float().to(w_u.device)[:, None] * w_u
    if getattr(model.cfg, "normalization_type", None) in ("LN", "LNPre"):
        w_u = w_u - w_u.mean(0, keepdim=True)
    return w_u


@torch.no_grad()
def logit_effects(
    model: HookedSAETransformer, directions: Float[Tensor, "*n d_model"]
) -> Float[Tensor, "*n d_vocab"]:
    """Direct effect on every logit of adding each residual-stream vector in ``directions``.

    ``directions @ effective_unembedding(model)`` (see :func:`effective_unembedding`: the final
    normalisation's weight and centring included, its scale frozen at 1), in float32 on
    ``W_U``'s device. ``directions`` has ``d_model`` entries on its last axis.
    """
    if not isinstance(directions, Tensor) or directions.ndim < 1:
        kind = type(directions).__name__
        raise TypeError(f"directions must be a tensor (..., d_model), got {kind}")
    if directions.shape[-1] != model.cfg.d_model:
        raise ValueError(
            f"directions must have d_model={model.cfg.d_model} entries on the last axis, got "
            f"shape {tuple(directions.shape)}"
        )
    w_u = effective_unembedding(model)
    return directions.float().to(w_u.device) @ w_u
