"""Where an SAE latent writes: its decoder direction, taken to the residual stream.

Every technique that reads a latent's effect through the rest of the model (direct logit
attribution, logit tables, steering, latent geometry) needs the vector a latent adds to the
residual stream when it fires with activation 1. ``W_dec`` rows live where the SAE writes
(``hook_name_out`` for a transcoder, else ``hook_name``), so this module maps them:
residual-stream and MLP/attention-output SAEs are used as they are, ``hook_z`` SAEs go through
that layer's ``W_O`` and MLP ``hook_post`` SAEs through ``W_out``.
"""

from __future__ import annotations

import re

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

__all__ = ["check_latent", "check_latents", "decoder_directions"]

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
