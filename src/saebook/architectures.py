"""SAE architectures side by side: what each computes in ``encode``, and building missing ones.

Every SAELens SAE computes a pre-activation ``pre = (x - b_dec) W_enc + b_enc`` (the
``b_dec`` subtraction only when ``cfg.apply_b_dec_to_input``) and then differs in one step:

- standard: ``ReLU(pre)``;
- TopK: keep the ``k`` largest entries of ``pre`` per token (ReLU'd), zero the rest;
- JumpReLU: ``pre`` where ``pre > threshold`` (one learned threshold per latent), else 0;
- transcoder: like a standard SAE, but it reads one hook and writes another.

:func:`encode_from_formula` writes those formulas out, so a chapter can check them against
SAELens' own ``encode``. :func:`jumprelu_from_topk` turns a TopK SAE into a JumpReLU SAE with
per-latent thresholds chosen from activation statistics, and :func:`train_standard_sae`
trains a small ReLU + L1 SAE with SAELens' trainer on cached activations.

Chapters: intro/07
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from sae_lens import (
    SAE,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardTrainingSAEConfig,
)
from sae_lens.saes.sae import SAEMetadata
from torch import Tensor

from saebook.training import check_training_run, train_sae

__all__ = [
    "FORMULAS",
    "encode_from_formula",
    "firing_agreement",
    "jumprelu_from_topk",
    "pre_activations",
    "train_standard_sae",
]

#: The activation step of each architecture, in words (keys: ``sae.cfg.architecture()``).
FORMULAS: dict[str, str] = {
    "standard": "ReLU(pre)",
    "topk": "pre at the k largest entries of each token (ReLU'd), 0 elsewhere",
    "jumprelu": "pre where pre > threshold (per latent), 0 elsewhere",
    "transcoder": "ReLU(pre), read at one hook, decoded at another",
    "jumprelu_transcoder": "pre where pre > threshold, read at one hook, decoded at another",
}


def _check_input(sae: SAE, x: object) -> Tensor:
    if not isinstance(x, Tensor) or x.shape[-1] != sae.cfg.d_in:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor ending in sae.cfg.d_in={sae.cfg.d_in}, got {shape}")
    norm = getattr(sae.cfg, "normalize_activations", "none")
    if norm not in (None, "none"):
        raise ValueError(
            f"sae.cfg.normalize_activations must be 'none' for these formulas, got {norm!r}"
        )
    return x


@torch.no_grad()
def pre_activations(sae: SAE, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
    """The pre-activation ``(x - b_dec) W_enc + b_enc`` that ``sae``'s activation step receives.

    Computed from the formula; ``b_dec`` is subtracted only when ``apply_b_dec_to_input``, and
    a TopK SAE with ``rescale_acts_by_decoder_norm`` scales it by each decoder row's norm.
    """
    x = _check_input(sae, x).to(sae.W_enc.dtype)
    if getattr(sae.cfg, "apply_b_dec_to_input", False):
        x = x - sae.b_dec
    pre = x @ sae.W_enc + sae.b_enc
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        pre = pre * sae.W_dec.norm(dim=-1)
    return pre


@torch.no_grad()
def encode_from_formula(sae: SAE, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
    """``sae``'s latent activations on ``x``, computed from its architecture's formula.

    Supports the architectures in :data:`FORMULAS`; compare with ``sae.encode(x)``.
    """
    arch = sae.cfg.architecture()
    if arch not in FORMULAS:
        raise ValueError(f"sae.cfg.architecture() must be one of {sorted(FORMULAS)}, got {arch!r}")
    pre = pre_activations(sae, x)
    if arch in ("standard", "transcoder"):
        return pre.relu()
    if arch == "topk":
        values, index = pre.topk(sae.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, index, values.relu())
    return pre.relu() * (pre > sae.threshold)  # jumprelu, jumprelu_transcoder


@torch.no_grad()
def jumprelu_from_topk(sae: SAE, x_sample: Float[Tensor, "n d_in"]) -> JumpReLUSAE:
    """A JumpReLU SAE with ``sae``'s weights and per-latent thresholds fitted on ``x_sample``.

    A TopK SAE's cut-off moves with every token (the k-th largest pre-activation); a JumpReLU
    SAE has one fixed threshold per latent. For each latent the threshold is chosen so that
    it fires on ``x_sample`` exactly as often as under TopK: with ``c`` TopK firings among
    ``n`` rows, the threshold is the ``(c + 1)``-th largest pre-activation (a latent that
    never fires gets its largest one, so it stays off on the sample). The decoder-norm
    rescaling of a TopK SAE, if any, is folded into the encoder, and the thresholds are read
    from the pre-activations the returned SAE itself computes with those folded weights: the
    same numbers in another order of rounding could put a sample's value just above its own
    threshold. Returns a SAELens ``JumpReLUSAE`` with ``sae``'s metadata.
    """
    if sae.cfg.architecture() != "topk":
        raise ValueError(f"sae must be a TopK SAE, got architecture {sae.cfg.architecture()!r}")
    if x_sample.ndim != 2 or x_sample.shape[0] < 2:
        raise ValueError(
            f"x_sample must be a (n >= 2, d_in) tensor of activations, got {tuple(x_sample.shape)}"
        )
    counts = (encode_from_formula(sae, x_sample) > 0).sum(0)  # TopK firings per latent
    cfg = JumpReLUSAEConfig(
        d_in=sae.cfg.d_in,
        d_sae=sae.cfg.d_sae,
        dtype=sae.cfg.dtype,
        device=str(sae.W_enc.device),
        apply_b_dec_to_input=bool(sae.cfg.apply_b_dec_to_input),
        reshape_activations=sae.cfg.reshape_activations,
        metadata=SAEMetadata(**sae.cfg.metadata.to_dict()),
    )
    out = JumpReLUSAE(cfg)
    scale = (
        sae.W_dec.norm(dim=-1)
        if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False)
        else torch.ones(sae.cfg.d_sae, device=sae.W_dec.device)
    )
    weights = {
        "W_enc": sae.W_enc * scale,
        "b_enc": sae.b_enc * scale,
        "W_dec": sae.W_dec / scale[:, None],
        "b_dec": sae.b_dec,
    }
    out.load_state_dict({**weights, "threshold": torch.zeros_like(sae.b_enc)})
    pre = pre_activations(out, x_sample)  # the folded weights' own numbers
    ordered = pre.sort(dim=0, descending=True).values  # (n, d_sae)
    rank = counts.clamp(max=pre.shape[0] - 1)
    threshold = ordered.gather(0, rank[None]).squeeze(0)
    threshold = torch.where(counts == 0, ordered[0], threshold)
    threshold = torch.where(counts >= pre.shape[0], ordered[-1] - 1.0, threshold)
    # below zero a JumpReLU still outputs 0 (ReLU first), so negative thresholds act as 0
    out.threshold.data.copy_(threshold)
    return out


def firing_agreement(
    acts_a: Float[Tensor, "... d_sae"], acts_b: Float[Tensor, "... d_sae"]
) -> dict[str, float]:
    """How similarly two SAEs with the same latents fire on the same inputs.

    Returns ``recall`` (share of ``a``'s firings where ``b`` fires too), ``precision`` (share
    of ``b``'s firings where ``a`` fires), and ``value_corr``, the correlation of the two
    activations over the positions and latents where either fires.
    """
    if acts_a.shape != acts_b.shape:
        raise ValueError(
            f"acts_b must have acts_a's shape {tuple(acts_a.shape)}, got {tuple(acts_b.shape)}"
        )
    fa, fb = acts_a > 0, acts_b > 0
    both = (fa & fb).sum().float()
    either = fa | fb
    pair = torch.stack([acts_a[either].float(), acts_b[either].float()])
    corr = float(torch.corrcoef(pair)[0, 1]) if pair.shape[1] > 1 else float("nan")
    return {
        "recall": float(both / fa.sum().clamp(min=1)),
        "precision": float(both / fb.sum().clamp(min=1)),
        "value_corr": corr,
    }


def train_standard_sae(
    activations: Float[Tensor, "n d_in"],
    d_sae: int,
    l1_coefficient: float,
    metadata: dict,
    total_samples: int,
    batch_size: int = 512,
    lr: float = 1e-3,
    seed: int = 0,
) -> SAE:
    """Train a standard (ReLU + L1) SAE with SAELens (:func:`saebook.training.train_sae`) and
    return it for inference.

    The loss is SAELens' own: the squared reconstruction error plus ``l1_coefficient`` times
    the decoder-norm-weighted L1 norm of the latents. ``metadata`` goes into
    ``sae.cfg.metadata`` (``hook_name`` and friends).
    """
    check_training_run(activations, d_sae, batch_size, total_samples)
    if l1_coefficient < 0:
        raise ValueError(f"l1_coefficient must be >= 0, got {l1_coefficient}")
    cfg = StandardTrainingSAEConfig(
        d_in=activations.shape[1],
        d_sae=d_sae,
        l1_coefficient=l1_coefficient,
        metadata=SAEMetadata(**metadata),
    )
    steps = total_samples // batch_size
    run = train_sae(
        activations,
        cfg,
        total_samples,
        batch_size=batch_size,
        lr=lr,
        lr_warm_up_steps=min(50, steps // 10),
        lr_scheduler_name="cosineannealing",
        dead_feature_window=max(steps, 1),
        seed=seed,
    )
    return run.sae
