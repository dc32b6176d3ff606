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
  (induction, duplicate token, previous token) its pre-activation comes from;
- :func:`head_attributions`: every latent's attribution-patching estimate for a task (IOI on
  gpt2), split exactly over the heads it writes through (:func:`split_by_head`), and
  :func:`head_latent_table`, the strongest latents of each layer with their heads.

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

from saebook.attribution import node_gradients
from saebook.directions import check_latent
from saebook.tasks import LogitDiffTask

__all__ = [
    "SourceAttribution",
    "head_attributions",
    "head_decoder_norms",
    "head_latent_table",
    "repeated_token_scores",
    "source_attribution",
    "split_by_head",
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


def split_by_head(
    delta_acts: Float[Tensor, "batch seq d_sae"],
    out_grad: Float[Tensor, "batch seq d_in"],
    W_dec: Float[Tensor, "d_sae d_in"],
    n_heads: int,
) -> Float[Tensor, "d_sae n_heads"]:
    """Each latent's attribution-patching estimate split over the heads it writes through.

    A latent's estimate is ``sum_pos delta_acts[pos, i] * (out_grad[pos] . W_dec[i])``, the
    change of its activation times the metric's gradient along its decoder row. The dot
    product is a sum of one term per head's ``d_head`` block of ``hook_z``, so entry
    ``[i, h]`` keeps head ``h``'s term; the row sums are the latent's estimates. Mean over
    the batch (prompts), sum over positions.
    """
    if delta_acts.ndim != 3 or out_grad.ndim != 3 or delta_acts.shape[:2] != out_grad.shape[:2]:
        raise ValueError(
            "delta_acts and out_grad must be (batch, seq, .) with the same batch and seq, got "
            f"{tuple(delta_acts.shape)} and {tuple(out_grad.shape)}"
        )
    d_sae, d_in = W_dec.shape
    if delta_acts.shape[2] != d_sae or out_grad.shape[2] != d_in:
        raise ValueError(
            f"delta_acts must end in d_sae={d_sae} and out_grad in d_in={d_in} (W_dec's shape), "
            f"got {tuple(delta_acts.shape)} and {tuple(out_grad.shape)}"
        )
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1 or d_in % n_heads:
        raise ValueError(f"n_heads must be a positive int dividing d_in={d_in}, got {n_heads!r}")
    d_head = d_in // n_heads
    batch, seq = out_grad.shape[:2]
    grad = out_grad.float().reshape(batch * seq, n_heads, d_head)
    dec = W_dec.float().reshape(d_sae, n_heads, d_head)
    along = torch.einsum("phd,ihd->pih", grad, dec)  # (positions, d_sae, n_heads)
    return (delta_acts.float().reshape(batch * seq, d_sae, 1) * along).sum(0) / batch


def head_attributions(
    model: HookedSAETransformer, saes: list[SAE], task: LogitDiffTask
) -> list[Float[Tensor, "d_sae_plus_1 n_heads"]]:
    """Attribution patching of every latent of every ``hook_z`` SAE, split by head.

    All ``saes`` are spliced in at once with their errors kept (as in
    :mod:`saebook.feature_circuits`, so the forward pass is unchanged); the gradient of the
    summed logit difference is taken on the clean prompts and the changes are corrupted minus
    clean. For each SAE the result has one row per latent (see :func:`split_by_head`) and a
    last row for the error node split the same way. Summed over rows, column ``h`` is head
    ``h``'s own attribution-patching estimate, ``grad(z_h) . (z_h' - z_h)``.
    """
    from saebook.feature_circuits import node_values

    saes = list(saes)
    for sae in saes:
        _z_layer(sae)
    n_heads = model.cfg.n_heads
    corrupt = node_values(model, saes, task.corrupted)
    # the clean run's nodes come with their gradients
    grads = node_gradients(model, saes, task.clean, lambda logits: task.logit_diff(logits).sum())
    out = []
    for sae, c, g in zip(saes, corrupt, grads, strict=True):
        latents = split_by_head(c.acts - g.acts, g.error_grad, sae.W_dec.detach(), n_heads)
        d_head = sae.cfg.d_in // n_heads
        batch, seq = g.error.shape[:2]
        err = (g.error_grad * (c.error - g.error)).float().reshape(batch, seq, n_heads, d_head)
        out.append(torch.cat([latents, err.sum((0, 1, 3))[None] / batch]))
    return out


def head_latent_table(
    attributions: list[Tensor],
    layers: list[int],
    top: int = 5,
    task_heads: dict[str, tuple[tuple[int, int], ...]] | None = None,
) -> pd.DataFrame:
    """The ``top`` latents of each layer by absolute attribution, with the head they use most.

    ``attributions[k]`` is :func:`head_attributions`' result for the SAE at ``layers[k]``.
    Columns: ``layer``, ``latent``, ``attribution`` (the latent's estimate), ``head`` (the one
    carrying the largest share of it), ``head share`` (that head's term over the sum of the
    absolute terms) and ``known role`` (the role of ``L<layer>H<head>`` in ``task_heads``,
    or ``""``).
    """
    if len(attributions) != len(layers):
        raise ValueError(
            f"layers must name one layer per attribution, got {len(layers)} for "
            f"{len(attributions)}"
        )
    roles = {head: role for role, heads in (task_heads or {}).items() for head in heads}
    rows = []
    for layer, attr in zip(layers, attributions, strict=True):
        latents = attr[:-1]
        total = latents.sum(1)
        for i in total.abs().argsort(descending=True)[:top].tolist():
            parts = latents[i]
            head = int(parts.abs().argmax())
            rows.append({
                "layer": layer, "latent": i, "attribution": float(total[i]),
                "head": f"L{layer}H{head}",
                "head share": float(parts[head].abs() / parts.abs().sum().clamp(min=1e-12)),
                "known role": roles.get((layer, head), ""),
            })  # fmt: skip
    return pd.DataFrame(rows)
