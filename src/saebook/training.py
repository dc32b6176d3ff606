"""Training SAEs and transcoders on cached activations.

SAEs are trained with SAELens' own ``SAETrainer`` on an iterator of cached activation
batches (about 3x faster on a CPU than running the language model inside the training loop).
SAELens 6 has no transcoder trainer, so :func:`train_transcoder` is a short loop over a
SAELens ``Transcoder``. Both return inference SAELens objects, ready for
``HookedSAETransformer``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from jaxtyping import Float, Int
from sae_lens import (
    SAE,
    SAETrainer,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
    Transcoder,
    TranscoderConfig,
)
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.saes.sae import SAEMetadata
from torch import Tensor
from tqdm import tqdm
from transformer_lens import HookedTransformer

from saebook.validate import check_int, check_tensor, check_tokens

__all__ = ["collect_activations", "activation_batches", "train_topk_sae", "train_transcoder"]


@torch.no_grad()
def collect_activations(
    model: HookedTransformer,
    tokens: Int[Tensor, "rows seq"],
    hook_names: list[str],
    batch_size: int = 64,
    exclude_bos: bool = True,
    progress: bool = True,
) -> dict[str, Float[Tensor, "n d"]]:
    """Activations of ``model`` at ``hook_names`` over ``tokens``, one row per token position.

    Head-indexed hooks (``hook_z``) are flattened to ``n_heads * d_head``. With
    ``exclude_bos`` the positions holding the BOS token are dropped: their activations are
    outliers that an SAE should not spend latents on. The forward pass stops after the last
    layer any hook needs.
    """
    missing = [h for h in hook_names if h not in model.hook_dict]
    if missing:
        raise KeyError(f"hook_names must be hooks of the model, got {missing} (not in hook_dict)")
    tokens = check_tokens(tokens, model)
    batch_size = check_int("batch_size", batch_size)
    # stop the forward pass after the last block a hook lives in (None: run the whole model)
    stop = (
        max(int(h.split(".")[1]) for h in hook_names) + 1
        if all(h.startswith("blocks.") for h in hook_names)
        else None
    )
    keep = (
        (tokens != model.tokenizer.bos_token_id) if exclude_bos else torch.ones_like(tokens).bool()
    )
    chunks: dict[str, list[Tensor]] = {h: [] for h in hook_names}
    starts = range(0, tokens.shape[0], batch_size)
    for start in tqdm(starts, desc="Caching activations", disable=not progress):
        rows = tokens[start : start + batch_size]
        _, cache = model.run_with_cache(
            rows, names_filter=lambda name: name in hook_names, stop_at_layer=stop
        )
        mask = keep[start : start + batch_size]
        for h in hook_names:
            acts = cache[h]
            chunks[h].append(acts.flatten(2)[mask] if acts.ndim == 4 else acts[mask])
    return {h: torch.cat(c) for h, c in chunks.items()}


def activation_batches(
    *tensors: Tensor, batch_size: int, seed: int = 0
) -> Iterator[Tensor | tuple[Tensor, ...]]:
    """Endless shuffled mini-batches over the rows of ``tensors`` (all of the same length).

    Each pass over the data uses a fresh permutation from a seeded generator. With one tensor
    the batches are tensors, with several they are tuples aligned by row.
    """
    if not tensors:
        raise ValueError("tensors must hold at least one tensor, got none")
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(
            f"tensors must share their first dimension, got {[t.shape[0] for t in tensors]}"
        )
    check_int("batch_size", batch_size)
    if batch_size > n:
        raise ValueError(f"batch_size must be at most the number of rows ({n}), got {batch_size}")
    return _batches(tensors, batch_size, seed)


def _batches(
    tensors: tuple[Tensor, ...], batch_size: int, seed: int
) -> Iterator[Tensor | tuple[Tensor, ...]]:
    n = tensors[0].shape[0]
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield tensors[0][idx] if len(tensors) == 1 else tuple(t[idx] for t in tensors)


def train_topk_sae(
    activations: Float[Tensor, "n d_in"],
    d_sae: int,
    k: int,
    metadata: dict,
    total_samples: int,
    batch_size: int = 512,
    lr: float = 1e-3,
    seed: int = 0,
    reshape_hook_z: bool = False,
) -> SAE:
    """Train a TopK SAE with SAELens' ``SAETrainer`` and return it as an inference SAE.

    ``metadata`` goes into ``sae.cfg.metadata`` (``hook_name``, ``model_name`` and friends).
    With ``reshape_hook_z`` the SAE reads a ``hook_z`` tensor of shape (..., heads, d_head)
    when spliced into a model, while training on its flattened rows.
    """
    check_tensor("activations", activations, ndim=2, floating=True, finite=True)
    check_int("d_sae", d_sae)
    check_int("k", k)
    check_int("batch_size", batch_size)
    check_int("total_samples", total_samples, minimum=batch_size)  # at least one step
    if k >= d_sae:
        raise ValueError(f"k must be smaller than d_sae ({d_sae}), got {k}")
    torch.manual_seed(seed)
    cfg = TopKTrainingSAEConfig(
        d_in=activations.shape[1],
        d_sae=d_sae,
        k=k,
        reshape_activations="hook_z" if reshape_hook_z else "none",
        metadata=SAEMetadata(**metadata),
    )
    sae = TopKTrainingSAE(cfg)
    trainer = SAETrainer(
        cfg=SAETrainerConfig(
            total_training_samples=total_samples,
            train_batch_size_samples=batch_size,
            lr=lr,
            lr_end=lr / 10,
            lr_scheduler_name="cosineannealing",
            lr_warm_up_steps=50,
            dead_feature_window=200,
            feature_sampling_window=500,
            logger=LoggingConfig(log_to_wandb=False),
        ),
        sae=sae,
        data_provider=activation_batches(activations, batch_size=batch_size, seed=seed),
    )
    trained = trainer.fit()
    # Round-trip through SAELens' inference save format: what is shipped is what is loaded.
    with tempfile.TemporaryDirectory() as tmp:
        trained.save_inference_model(tmp)
        return SAE.load_from_disk(tmp)


def train_transcoder(
    inputs: Float[Tensor, "n d_in"],
    targets: Float[Tensor, "n d_out"],
    d_sae: int,
    metadata: dict,
    total_samples: int,
    target_l0: float = 16.0,
    batch_size: int = 1024,
    lr: float = 3e-3,
    seed: int = 0,
) -> Transcoder:
    """Train a ReLU transcoder mapping ``inputs`` (an MLP's input) to ``targets`` (its output).

    The loss is the normalised MSE plus an L1 penalty on latent activations weighted by decoder
    norms. The L1 coefficient is steered multiplicatively towards ``target_l0`` during the
    first 80% of steps and then frozen, so the sparsity is a chosen number rather than a
    side effect of a guessed coefficient. ``metadata`` needs ``hook_name`` (input hook) and
    ``hook_name_out`` (output hook).
    """
    for key in ("hook_name", "hook_name_out"):
        if key not in metadata:
            raise ValueError(f"metadata must contain {key!r}, got keys {sorted(metadata)}")
    check_tensor("inputs", inputs, ndim=2, floating=True, finite=True)
    check_tensor("targets", targets, ndim=2, floating=True, finite=True)
    if targets.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"targets must have the inputs' {inputs.shape[0]} rows, got {targets.shape[0]}"
        )
    check_int("d_sae", d_sae)
    check_int("batch_size", batch_size)
    check_int("total_samples", total_samples, minimum=batch_size)  # at least one step
    torch.manual_seed(seed)
    sae = Transcoder(
        TranscoderConfig(
            d_in=inputs.shape[1],
            d_sae=d_sae,
            d_out=targets.shape[1],
            apply_b_dec_to_input=False,
            metadata=SAEMetadata(**metadata),
        )
    )
    with torch.no_grad():
        sae.W_dec.data = torch.randn(d_sae, targets.shape[1])
        sae.W_dec.data /= sae.W_dec.norm(dim=1, keepdim=True) * 10
        sae.b_dec.data = targets.mean(0)
    target_var = float((targets - targets.mean(0)).pow(2).sum(-1).mean())
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    steps = total_samples // batch_size
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr / 10)
    l1_coeff, adapt_until = 1e-3, int(0.8 * steps)
    batches = activation_batches(inputs, targets, batch_size=batch_size, seed=seed)
    bar = tqdm(range(steps), desc="Training transcoder", unit="step")
    for step in bar:
        x, y = next(batches)
        acts = sae.encode(x)
        recon = sae.decode(acts)
        mse = (recon - y).pow(2).sum(-1).mean() / target_var
        l1 = (acts * sae.W_dec.norm(dim=1)).sum(-1).mean()
        loss = mse + l1_coeff * l1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        l0 = float((acts > 0).float().sum(-1).mean())
        if step < adapt_until:
            l1_coeff *= float(
                torch.tensor(0.02 * (l0 - target_l0) / target_l0).clamp(-0.05, 0.05).exp()
            )
        if step % 20 == 0:
            bar.set_postfix(nmse=f"{mse.item():.3f}", l0=f"{l0:.1f}")
    sae.eval()
    with tempfile.TemporaryDirectory() as tmp:
        sae.save_model(Path(tmp))
        return SAE.load_from_disk(tmp)
