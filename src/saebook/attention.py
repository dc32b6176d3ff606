"""Attention-output (``hook_z``) SAEs: which heads a latent lives in, and where it reads from.

An SAE on ``blocks.L.attn.hook_z`` reads the concatenated head outputs ``z`` (before ``W_O``),
so every row of its decoder splits into one block per head, and every encoder column reads
one block per head. Because ``z`` at a destination position is a weighted sum of value
vectors, ``z[dst, h] = sum_src pattern[h, dst, src] * v[src, h]``, a latent's pre-activation
splits exactly into one term per (head, source position) plus a constant. This module
computes

- :func:`head_decoder_norms`: the norm of each latent's decoder block in each head;
- :func:`source_attribution`: that exact split for one latent on a batch of sequences;
- :func:`repeated_token_scores`: a table that scores every latent on repeated random tokens
  (``BOS, x, x``): how much more it fires on the second copy, and which source offset
  (induction, duplicate token, previous token) its pre-activation comes from.

Chapters: intro/05
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor
from tqdm import tqdm

from saebook.directions import check_latent

__all__ = [
    "SourceAttribution",
    "head_decoder_norms",
    "repeated_token_scores",
    "source_attribution",
]

_HOOK_Z = re.compile(r"^blocks\.(\d+)\.attn\.hook_z$")


def _z_layer(sae: SAE) -> int:
    """The layer of a ``hook_z`` SAE, or a clear error for any other hook."""
    hook = str(sae.cfg.metadata.hook_name)
    match = _HOOK_Z.match(hook)
    if not match:
        raise ValueError(
            f"sae must read an attention hook_z (blocks.<layer>.attn.hook_z), got hook {hook!r}"
        )
    return int(match.group(1))


def _check_heads(sae: SAE, n_heads: int) -> int:
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError(f"n_heads must be a positive int, got {n_heads!r}")
    if sae.cfg.d_in % n_heads:
        raise ValueError(
            f"n_heads must divide the SAE's input width sae.cfg.d_in={sae.cfg.d_in}, "
            f"got n_heads={n_heads}"
        )
    return sae.cfg.d_in // n_heads


@torch.no_grad()
def head_decoder_norms(sae: SAE, n_heads: int) -> Float[Tensor, "d_sae n_heads"]:
    """The L2 norm of every latent's decoder weights in each head's ``d_head`` block.

    ``W_dec`` (``d_sae, n_heads * d_head``) is reshaped to ``(d_sae, n_heads, d_head)``, the
    order in which ``hook_z`` flattens heads; the result is ``(d_sae, n_heads)``. A latent
    whose norm sits in one head writes only through that head's ``W_O``.
    """
    d_head = _check_heads(sae, n_heads)
    return sae.W_dec.float().reshape(sae.cfg.d_sae, n_heads, d_head).norm(dim=-1)


@dataclass
class SourceAttribution:
    """One latent's pre-activation at every destination, split by head and source position.

    ``contributions[b, h, dst, src]`` is ``pattern[b, h, dst, src] * v[b, src, h] . W_enc[h, :,
    latent]`` (scaled as the SAE scales its pre-activations); ``constant`` is the part that
    does not depend on the input (``b_enc`` minus the encoder's reading of ``b_dec``).
    ``pre_activation`` and ``activation`` are what SAELens' ``encode`` computes.
    """

    latent: int
    contributions: Float[Tensor, "batch n_heads dst src"]
    constant: float
    pre_activation: Float[Tensor, "batch dst"]
    activation: Float[Tensor, "batch dst"]

    @property
    def by_source(self) -> Float[Tensor, "batch dst src"]:
        """Contributions summed over heads."""
        return self.contributions.sum(1)

    @property
    def by_head(self) -> Float[Tensor, "batch n_heads dst"]:
        """Contributions summed over source positions."""
        return self.contributions.sum(-1)

    def reconstructed(self) -> Float[Tensor, "batch dst"]:
        """The sum of all contributions plus the constant: equals ``pre_activation``."""
        return self.contributions.sum(dim=(1, 3)) + self.constant


def _check_tokens(model: HookedSAETransformer, tokens: object) -> Tensor:
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be a 2-D int tensor (batch, seq), got {shape}")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(
            f"tokens must have at most n_ctx={model.cfg.n_ctx} positions, got {tokens.shape[1]}"
        )
    return tokens


def _check_linear_input(sae: SAE) -> None:
    norm = getattr(sae.cfg, "normalize_activations", "none")
    if norm not in (None, "none"):
        raise ValueError(
            "sae.cfg.normalize_activations must be 'none' for an exact source split (its "
            f"input normalisation is not linear in z), got {norm!r}"
        )


def _attention_parts(
    model: HookedSAETransformer, tokens: Tensor, layer: int
) -> tuple[Tensor, Tensor, Tensor]:
    """pattern (b, h, dst, src), v (b, src, h, d_head) and z (b, pos, h, d_head) at ``layer``."""
    names = [f"blocks.{layer}.attn.hook_{n}" for n in ("pattern", "v", "z")]
    _, cache = model.run_with_cache(
        tokens.to(model.cfg.device), names_filter=lambda n: n in names, stop_at_layer=layer + 1
    )
    pattern, v, z = (cache[n].float() for n in names)
    if v.shape[2] != pattern.shape[1]:  # grouped-query attention: value heads are shared
        v = v.repeat_interleave(pattern.shape[1] // v.shape[2], dim=2)
    return pattern, v, z


def _encoder_by_head(sae: SAE, n_heads: int) -> tuple[Tensor, Tensor]:
    """W_enc as (n_heads, d_head, d_sae) and the constant term of every pre-activation."""
    d_head = _check_heads(sae, n_heads)
    w_enc = sae.W_enc.float()
    constant = sae.b_enc.float().clone()
    if getattr(sae.cfg, "apply_b_dec_to_input", False):
        constant = constant - sae.b_dec.float() @ w_enc
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        scale = sae.W_dec.float().norm(dim=-1)
        w_enc, constant = w_enc * scale, constant * scale
    return w_enc.reshape(n_heads, d_head, sae.cfg.d_sae), constant


def _sae_pre_and_acts(sae: SAE, z: Tensor) -> tuple[Tensor, Tensor]:
    """SAELens' own pre-activations (read at ``hook_sae_acts_pre``) and activations of ``z``.

    The filter takes the SAE's own hook names, but the cache is keyed by each hook point's
    current ``name``: once an SAE has been spliced into a ``HookedSAETransformer``, that name
    carries the model's prefix (``blocks.1.attn.hook_z.hook_sae_acts_pre``).
    """
    pre_name = sae.hook_dict["hook_sae_acts_pre"].name
    post_name = sae.hook_dict["hook_sae_acts_post"].name
    _, cache = sae.run_with_cache(
        z.to(sae.dtype), names_filter=["hook_sae_acts_pre", "hook_sae_acts_post"]
    )
    pre = cache[pre_name].float()
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        pre = pre * sae.W_dec.float().norm(dim=-1)
    return pre, cache[post_name].float()


@torch.no_grad()
def source_attribution(
    model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "batch seq"], latent: int
) -> SourceAttribution:
    """Split ``latent``'s pre-activation at every position into (head, source) contributions.

    Runs ``model`` up to the SAE's layer, takes the attention pattern and value vectors, and
    uses ``z[dst, h] = sum_src pattern[h, dst, src] v[src, h]``: since the pre-activation is
    linear in ``z``, each (head, source) pair contributes
    ``pattern[h, dst, src] * v[src, h] . W_enc[h-block, latent]``. The SAE's own
    pre-activation (from SAELens' ``encode``) is returned alongside, so the split can be
    checked: ``result.reconstructed()`` equals ``result.pre_activation``.
    """
    layer = _z_layer(sae)
    latent = check_latent(sae, latent)
    tokens = _check_tokens(model, tokens)
    _check_linear_input(sae)
    pattern, v, z = _attention_parts(model, tokens, layer)
    w_enc, constant = _encoder_by_head(sae, model.cfg.n_heads)
    v_read = torch.einsum("bshd,hd->bhs", v, w_enc[..., latent].to(v.device))  # (b, h, src)
    contributions = pattern * v_read[:, :, None, :]
    pre, acts = _sae_pre_and_acts(sae, z)
    return SourceAttribution(
        latent=latent,
        contributions=contributions.cpu(),
        constant=float(constant[latent]),
        pre_activation=pre[..., latent].cpu(),
        activation=acts[..., latent].cpu(),
    )


#: Source offsets scored by :func:`repeated_token_scores`, as functions of the half length.
OFFSETS = {
    "induction": lambda half: half - 1,  # the token after the previous occurrence
    "duplicate": lambda half: half,  # the previous occurrence of the same token
    "previous": lambda half: 1,  # the token just before
}


@torch.no_grad()
def repeated_token_scores(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, "batch seq"],
    batch_size: int = 16,
    progress: bool = True,
) -> pd.DataFrame:
    """Score every latent on repeated random tokens ``BOS, x, x`` (from ``repeated_tokens``).

    One row per latent, columns:

    - ``mean_first`` / ``mean_second``: mean activation over the first and second copies;
    - ``repeat_gain``: ``mean_second - mean_first``;
    - ``induction_share``, ``duplicate_share``, ``previous_share``: over second-copy positions
      where the latent fires, the activation-weighted mean fraction of its pre-activation
      that comes from the source ``half - 1`` back (the token after the earlier occurrence),
      ``half`` back (the earlier occurrence itself) and 1 back;
    - ``top_head`` and ``top_head_share``: the head with the largest decoder norm and its
      share of the latent's squared decoder norm.

    Rows are sorted by latent index.
    """
    layer = _z_layer(sae)
    tokens = _check_tokens(model, tokens)
    if tokens.shape[1] % 2 != 1 or tokens.shape[1] < 5:
        raise ValueError(
            "tokens must have shape (batch, 1 + 2 * half_len) from "
            f"saebook.induction.repeated_tokens, got {tuple(tokens.shape)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _check_linear_input(sae)
    half = (tokens.shape[1] - 1) // 2
    n_heads, d_sae = model.cfg.n_heads, sae.cfg.d_sae
    w_enc, _ = _encoder_by_head(sae, n_heads)
    first = torch.zeros(d_sae)
    second = torch.zeros(d_sae)
    share_sum = torch.zeros(len(OFFSETS), d_sae)
    weight_sum = torch.zeros(d_sae)
    starts = range(0, tokens.shape[0], batch_size)
    for start in tqdm(starts, desc="Scoring latents", disable=not progress):
        pattern, v, z = _attention_parts(model, tokens[start : start + batch_size], layer)
        pre, acts = _sae_pre_and_acts(sae, z)
        first += acts[:, 1 : half + 1].sum(dim=(0, 1)).cpu()
        second += acts[:, half + 1 :].sum(dim=(0, 1)).cpu()
        dst = torch.arange(half + 1, 2 * half + 1, device=pattern.device)
        w = acts[:, half + 1 :]  # (b, half, d_sae): weights, zero where a latent is off
        safe_pre = torch.where(w > 0, pre[:, half + 1 :], torch.ones_like(w))
        for i, offset in enumerate(OFFSETS.values()):
            src = dst - offset(half)
            p = pattern[:, :, dst, src]  # (b, h, half)
            v_src = v[:, src]  # (b, half, h, d_head)
            contrib = torch.einsum("bhq,bqhd,hdl->bql", p, v_src, w_enc.to(v.device))
            share_sum[i] += (w * contrib / safe_pre).sum(dim=(0, 1)).cpu()
        weight_sum += w.sum(dim=(0, 1)).cpu()
    n = tokens.shape[0] * half
    norms = head_decoder_norms(sae, n_heads).cpu().pow(2)
    head_share = norms / norms.sum(-1, keepdim=True).clamp(min=1e-12)
    table = pd.DataFrame(
        {
            "latent": range(d_sae),
            "mean_first": (first / n).tolist(),
            "mean_second": (second / n).tolist(),
            "repeat_gain": ((second - first) / n).tolist(),
        }
    )
    for i, name in enumerate(OFFSETS):
        table[f"{name}_share"] = (share_sum[i] / weight_sum.clamp(min=1e-12)).tolist()
    table["top_head"] = head_share.argmax(-1).tolist()
    table["top_head_share"] = head_share.max(-1).values.tolist()
    return table
