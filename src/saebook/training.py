"""Training SAEs and transcoders on cached activations.

SAEs are trained with SAELens' own ``SAETrainer`` on an iterator of cached activation
batches (about 3x faster on a CPU than running the language model inside the training loop).
SAELens 6 has no transcoder trainer, so :func:`train_transcoder` is a short loop over a
SAELens ``Transcoder``. Both return inference SAELens objects, ready for
``HookedSAETransformer``.

The same recording trainer also runs inside SAELens' ``LanguageModelSAETrainingRunner``
(:func:`train_sae_with_runner`), which streams activations from the language model and can
log to Weights & Biases; :func:`read_wandb_history` reads such a run's offline log back.

Chapters: intro/07, deeper/03, training/01, training/02, training/04, training/06
"""

from __future__ import annotations

import functools
import json
import logging
import os
import struct
import tempfile
import time
import uuid
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from sae_lens import (
    SAE,
    BatchTopKTrainingSAEConfig,
    GatedTrainingSAEConfig,
    JumpReLUTrainingSAEConfig,
    LanguageModelSAERunnerConfig,
    LanguageModelSAETrainingRunner,
    MatryoshkaBatchTopKTrainingSAEConfig,
    SAETrainer,
    StandardTrainingSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
    TrainingSAE,
    TrainingSAEConfig,
    Transcoder,
    TranscoderConfig,
)
from sae_lens import llm_sae_training_runner as runner_module
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.saes.sae import SAEMetadata, TrainStepInput, TrainStepOutput
from sae_lens.training import activation_scaler as activation_scaler_module
from sae_lens.training import sae_trainer as sae_trainer_module
from torch import Tensor
from tqdm import tqdm
from transformer_lens import HookedTransformer

from saebook.hooks import bos_mask, stop_layer
from saebook.validate import check_int, check_tensor, check_tokens

__all__ = [
    "ARCHITECTURES",
    "collect_activations",
    "activation_batches",
    "training_sae_config",
    "RecordingTrainer",
    "GatheredTopKTrainingSAE",
    "TrainingRun",
    "train_sae",
    "FAULTS",
    "train_planted_faults",
    "curve_signatures",
    "train_topk_sae",
    "check_training_run",
    "train_transcoder",
    "topk_adam_steps",
    "train_sae_with_runner",
    "read_wandb_history",
    "dead_fraction_curve",
    "join_log_chunks",
    "topk_aux_loss",
]

# architecture -> (SAELens training config class, the config field the sparsity knob sets)
ARCHITECTURES: dict[str, tuple[type[TrainingSAEConfig], str]] = {
    "standard": (StandardTrainingSAEConfig, "l1_coefficient"),
    "topk": (TopKTrainingSAEConfig, "k"),
    "batchtopk": (BatchTopKTrainingSAEConfig, "k"),
    "jumprelu": (JumpReLUTrainingSAEConfig, "l0_coefficient"),
    "gated": (GatedTrainingSAEConfig, "l1_coefficient"),
    "matryoshka": (MatryoshkaBatchTopKTrainingSAEConfig, "k"),
}


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
    stop = stop_layer(*hook_names)  # the last block a hook lives in (None: the whole model)
    keep = bos_mask(model, tokens, exclude_bos)
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


def check_training_run(
    activations: Tensor, d_sae: int, batch_size: int, total_samples: int
) -> None:
    """Check the arguments every SAE training run shares, naming the first bad one.

    ``activations``: 2-D, floating, finite, with at least ``batch_size`` rows; ``d_sae`` and
    ``batch_size`` positive ints; ``total_samples`` at least one batch.
    """
    check_tensor("activations", activations, ndim=2, floating=True, finite=True)
    check_int("d_sae", d_sae)
    check_int("batch_size", batch_size)
    check_int("total_samples", total_samples, minimum=batch_size)  # at least one step
    if activations.shape[0] < batch_size:
        raise ValueError(
            f"activations must have at least batch_size={batch_size} rows, "
            f"got {activations.shape[0]}"
        )


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
    device: str | None = None,
) -> SAE:
    """Train a TopK SAE with SAELens' ``SAETrainer`` and return it as an inference SAE.

    The SAE has the TopK form of Gao et al. (the top ``k`` pre-activations, not rescaled by
    the decoder rows' norms: SAELens' ``rescale_acts_by_decoder_norm=False``) and SAELens'
    ``expected_average_only_in`` input normalisation (folded into the weights at the end, so
    the SAE reads raw activations). On the tiny world's residual stream (2,048 latents, 2.5M
    activations, batches of 256 at 3e-3) SAELens' defaults recovered 9 of the 28
    ground-truth labels, no rescaling 16 (with each of two seeds), both changes 17; keeping
    the decoder rows at unit norm as well recovered 3. So the decoder rows keep the norms they
    learn, and SAELens refuses to fold those into the encoder (``fold_W_dec_norm``, which
    sae-dashboard's runner calls), since that would change which latents win the top ``k``.
    ``metadata`` goes into ``sae.cfg.metadata`` (``hook_name``, ``model_name`` and friends).
    With ``reshape_hook_z`` the SAE reads a ``hook_z`` tensor of shape (..., heads, d_head)
    when spliced into a model, while training on its flattened rows. ``device`` is where it
    trains and is returned (default: the device of ``activations``). It trains through
    :class:`GatheredTopKTrainingSAE` (the same loss and gradients as SAELens' class).
    """
    check_training_run(activations, d_sae, batch_size, total_samples)
    check_int("k", k)
    if k >= d_sae:
        raise ValueError(f"k must be smaller than d_sae ({d_sae}), got {k}")
    cfg = TopKTrainingSAEConfig(
        d_in=activations.shape[1],
        d_sae=d_sae,
        k=k,
        rescale_acts_by_decoder_norm=False,
        normalize_activations="expected_average_only_in",
        reshape_activations="hook_z" if reshape_hook_z else "none",
        metadata=SAEMetadata(**metadata),
    )
    return train_sae(
        activations,
        cfg,
        total_samples,
        batch_size=batch_size,
        lr=lr,
        lr_warm_up_steps=50,
        lr_scheduler_name="cosineannealing",
        dead_feature_window=200,
        feature_sampling_window=500,
        seed=seed,
        device=device,
        gathered=True,
    ).sae


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
    device: str | None = None,
) -> Transcoder:
    """Train a ReLU transcoder mapping ``inputs`` (an MLP's input) to ``targets`` (its output).

    The loss is the normalised MSE plus an L1 penalty on latent activations weighted by decoder
    norms. The L1 coefficient is steered multiplicatively towards ``target_l0`` during the
    first 80% of steps and then frozen, so the sparsity is a chosen number rather than a
    side effect of a guessed coefficient. ``metadata`` needs ``hook_name`` (input hook) and
    ``hook_name_out`` (output hook). ``device`` is where it trains and is returned (default:
    the device of ``inputs``).
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
    device = str(inputs.device) if device is None else str(device)
    sae.to(device)
    target_var = float((targets - targets.mean(0)).pow(2).sum(-1).mean())
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    steps = total_samples // batch_size
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr / 10)
    l1_coeff, adapt_until = 1e-3, int(0.8 * steps)
    batches = activation_batches(inputs, targets, batch_size=batch_size, seed=seed)
    bar = tqdm(range(steps), desc="Training transcoder", unit="step")
    for step in bar:
        x, y = (t.to(device) for t in next(batches))
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
        return SAE.load_from_disk(tmp, device=device)


def training_sae_config(
    architecture: str,
    d_in: int,
    d_sae: int,
    sparsity: float,
    metadata: dict | None = None,
    normalize_activations: str = "expected_average_only_in",
    **overrides: Any,
) -> TrainingSAEConfig:
    """A SAELens training config for ``architecture`` with its sparsity knob set to ``sparsity``.

    ``sparsity`` is the L1 coefficient (``standard``, ``gated``), the L0 coefficient
    (``jumprelu``) or k (``topk``, ``batchtopk``, ``matryoshka``); :data:`ARCHITECTURES` says
    which. Matryoshka SAEs get nested prefixes of 1/8, 1/4, 1/2 and all of ``d_sae``.
    ``normalize_activations`` defaults to SAELens' ``expected_average_only_in`` (inputs scaled
    to norm ``sqrt(d_in)`` during training, folded into the weights afterwards), so the same
    coefficients suit models whose activations have very different norms. ``overrides`` go to
    the config class unchanged.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {list(ARCHITECTURES)}, got {architecture!r}")
    if d_in < 1 or d_sae < 1:
        raise ValueError(f"d_in and d_sae must be positive, got d_in={d_in}, d_sae={d_sae}")
    if sparsity <= 0:
        raise ValueError(f"sparsity must be positive, got {sparsity!r}")
    cls, knob = ARCHITECTURES[architecture]
    if knob == "k" and sparsity >= d_sae:
        raise ValueError(f"sparsity (k) must be smaller than d_sae ({d_sae}), got {sparsity}")
    kwargs: dict[str, Any] = {knob: int(sparsity) if knob == "k" else float(sparsity)}
    if architecture == "matryoshka":
        widths = sorted({max(1, d_sae // 8), max(1, d_sae // 4), max(1, d_sae // 2), d_sae})
        kwargs["matryoshka_widths"] = widths
    kwargs.update(overrides)
    return cls(
        d_in=d_in,
        d_sae=d_sae,
        normalize_activations=normalize_activations,
        metadata=SAEMetadata(**(metadata or {})),
        **kwargs,
    )


class RecordingTrainer(SAETrainer):
    """SAELens' ``SAETrainer`` that also records a row of metrics at every training step.

    Each row of :attr:`history` has ``step``, ``loss`` (the total training loss), every named
    loss SAELens reports (``mse_loss``, ``l1_loss``, ...), ``l0`` (latents firing per input),
    ``explained_variance`` of the batch, ``dead_fraction`` (latents that have not fired for
    more than ``dead_feature_window`` steps) and ``lr``. Everything else is SAELens' own
    ``fit()``: schedules, normalisation, checkpoints and the final folding of the scaler.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.history: list[dict[str, float]] = []

    def step(self, batch: Tensor) -> TrainStepOutput:
        """SAELens' training step on ``batch``, then one row of metrics appended to history."""
        lr = self.optimizer.param_groups[0]["lr"]
        out = super().step(batch)
        with torch.no_grad():
            x, x_hat = out.sae_in.float(), out.sae_out.float()
            resid = (x - x_hat).pow(2).sum(-1).mean()
            total = (x - x.mean(0)).pow(2).sum(-1).mean()
            row = {
                "step": self.n_training_steps,
                "loss": float(out.loss),
                **{name: float(value) for name, value in out.losses.items()},
                "l0": float((out.feature_acts != 0).float().sum(-1).mean()),
                "explained_variance": float(1 - resid / total),
                "dead_fraction": float(self.dead_neurons.float().mean()),
                "lr": float(lr),
            }
        self.history.append(row)
        return out


class GatheredTopKTrainingSAE(TopKTrainingSAE):
    """SAELens' ``TopKTrainingSAE`` whose training step touches only the latents it selects.

    The loss, its gradients and the trainer's statistics are those of SAELens' class (the
    tests compare the two on the same weights), but after the one dense encoder product that
    picks each row's top ``k`` (and, with dead latents, the aux-k loss's top ``k_aux``), the
    kept pre-activations are recomputed from the gathered encoder columns and decoded from the
    gathered decoder rows, so the decoder and the backward pass cost ``n * (k + k_aux) * d_in``
    instead of dense ``n * d_sae * d_in`` products. The benchmark's ``topk_step_vs_saelens``
    measures the gain: 1.7x for the tiny world's residual SAE (its build took about half the
    time), but 0.84x at gpt2's shape (768 x 24,576, k = 32), where the gathers of the aux-k
    loss's latents and the dense gradient buffers cost more than the products they save; so
    :func:`train_topk_sae` uses it and :func:`train_sae` only when asked. SAELens'
    own sparse path, ``use_sparse_activations``, fails in backward on CPU (sparse tensors there
    have no ``view``). Forward hooks of the SAE are not called during training; the trained
    weights save and load as an ordinary SAELens TopK SAE.
    """

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        """SAELens' TopK loss (MSE plus aux-k) on ``step_input``, computed on gathered latents."""
        sae_in = self.process_sae_in(step_input.sae_in)
        norms = self.W_dec.norm(dim=-1) if self.cfg.rescale_acts_by_decoder_norm else None
        with torch.no_grad():
            hidden_pre = sae_in @ self.W_enc + self.b_enc
            if norms is not None:
                hidden_pre = hidden_pre * norms
            top = hidden_pre.topk(self.cfg.k, dim=-1, sorted=False).indices
        enc_rows = self.W_enc.T.contiguous()  # (d_sae, d_in): row gathers, index_add backward
        acts, sae_out = self._gathered_pass(sae_in, enc_rows, top, norms, relu=True)
        feature_acts = torch.zeros_like(hidden_pre).scatter(-1, top, acts)
        sae_out = self.run_time_activation_norm_fn_out(sae_out + self.b_dec)
        sae_out = self.reshape_fn_out(sae_out, self.d_head)
        mse_loss = self.mse_loss_fn(sae_out, step_input.sae_in).sum(dim=-1).mean()
        aux = self._gathered_aux_loss(step_input, sae_in, enc_rows, sae_out, hidden_pre, norms)
        return TrainStepOutput(
            sae_in=step_input.sae_in,
            sae_out=sae_out,
            feature_acts=feature_acts,
            hidden_pre=hidden_pre,
            loss=mse_loss + aux,
            losses={"mse_loss": mse_loss, "auxiliary_reconstruction_loss": aux},
        )

    def _gathered_pass(
        self, sae_in: Tensor, enc_rows: Tensor, idx: Tensor, norms: Tensor | None, relu: bool
    ) -> tuple[Tensor, Tensor]:
        """Activations of the latents ``idx`` (rows x kept) and their decoding (no bias)."""
        flat = idx.flatten()
        w_enc = enc_rows.index_select(0, flat).view(*idx.shape, -1)
        bias = self.b_enc.index_select(0, flat).view(idx.shape)
        acts = (sae_in.unsqueeze(1) * w_enc).sum(-1) + bias
        kept_norms = None if norms is None else norms.index_select(0, flat).view(idx.shape)
        if kept_norms is not None:
            acts = acts * kept_norms
        if relu:
            acts = acts.relu()
        decoded = acts if kept_norms is None else acts / kept_norms
        w_dec = self.W_dec.index_select(0, flat).view(*idx.shape, -1)
        return acts, (decoded.unsqueeze(-1) * w_dec).sum(1)

    def _gathered_aux_loss(
        self,
        step_input: TrainStepInput,
        sae_in: Tensor,
        enc_rows: Tensor,
        sae_out: Tensor,
        hidden_pre: Tensor,
        norms: Tensor | None,
    ) -> Tensor:
        """SAELens' aux-k loss: the top dead latents reconstruct the residual (zero if none)."""
        dead = step_input.dead_neuron_mask
        if dead is None or (n_dead := int(dead.sum())) == 0:
            return sae_out.new_tensor(0.0)
        k_aux = step_input.sae_in.shape[-1] // 2
        scale = min(n_dead / k_aux, 1.0)
        with torch.no_grad():
            dead_ids = dead.nonzero().squeeze(-1)
            pick = hidden_pre[:, dead_ids].topk(min(k_aux, n_dead), dim=-1, sorted=False).indices
            idx = dead_ids[pick]
        _, recons = self._gathered_pass(sae_in, enc_rows, idx, norms, relu=False)
        recons = self.reshape_fn_out(recons, self.d_head)
        residual = (step_input.sae_in - sae_out).detach()
        return self.cfg.aux_loss_coefficient * scale * (recons - residual).pow(2).sum(-1).mean()


@dataclass
class TrainingRun:
    """One finished training run: the inference SAE, its per-step curves and its cost."""

    sae: SAE
    curves: pd.DataFrame  # one row per step, columns as in RecordingTrainer.history
    seconds: float
    config: TrainingSAEConfig
    trainer_config: SAETrainerConfig
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        """SAELens' name for the architecture (``standard``, ``topk``, ...)."""
        return self.config.architecture()


@contextmanager
def _saelens_bars(progress: bool) -> Iterator[None]:
    """SAELens' trainer and scaler draw their own tqdm bars; silence them unless ``progress``."""
    modules = [sae_trainer_module, activation_scaler_module]
    originals = [m.tqdm for m in modules]
    try:
        for m in modules:
            m.tqdm = functools.partial(tqdm, disable=not progress)
        yield
    finally:
        for m, original in zip(modules, originals, strict=True):
            m.tqdm = original


def train_sae(
    activations: Float[Tensor, "n d_in"],
    config: TrainingSAEConfig,
    total_samples: int,
    batch_size: int = 512,
    lr: float = 1e-3,
    lr_warm_up_steps: int | None = None,
    lr_scheduler_name: str = "constant",
    dead_feature_window: int = 100,
    feature_sampling_window: int | None = None,
    checkpoint_path: str | Path | None = None,
    n_checkpoints: int = 0,
    seed: int = 0,
    progress: bool = True,
    device: str | None = None,
    gathered: bool = False,
) -> TrainingRun:
    """Train the SAE described by ``config`` on rows of ``activations`` with SAELens.

    Batches of ``batch_size`` rows are drawn (reshuffled every pass) until ``total_samples``
    rows have been seen. ``lr_warm_up_steps`` defaults to 5% of the steps and
    ``feature_sampling_window`` (SAELens' window for firing statistics) to all of them. With
    ``checkpoint_path`` SAELens saves ``n_checkpoints`` intermediate checkpoints and the final
    one there (each loadable with ``SAE.load_from_disk``). Returns a :class:`TrainingRun` whose
    ``sae`` is the inference SAE after a save/load round trip through SAELens' format, so what
    you evaluate is exactly what you would ship. ``device`` is where it trains and is
    returned (default: the device of ``activations``, so a GPU profile trains on the GPU).
    With ``gathered`` a ``TopKTrainingSAEConfig`` trains through
    :class:`GatheredTopKTrainingSAE` (SAELens' loss and gradients, a step that is faster for
    small SAEs on a CPU).
    """
    if activations.ndim != 2 or activations.shape[1] != config.d_in:
        raise ValueError(
            f"activations must be (n, d_in={config.d_in}), got {tuple(activations.shape)}"
        )
    if total_samples < batch_size:
        raise ValueError(
            f"total_samples must be at least batch_size ({batch_size}), got {total_samples}"
        )
    steps = total_samples // batch_size
    warm = max(1, steps // 20) if lr_warm_up_steps is None else lr_warm_up_steps
    torch.manual_seed(seed)
    if gathered and type(config) is not TopKTrainingSAEConfig:
        raise ValueError(
            f"gathered=True needs a TopKTrainingSAEConfig, got {type(config).__name__}"
        )
    if gathered:
        sae: TrainingSAE = GatheredTopKTrainingSAE(config)
    else:
        sae = TrainingSAE.from_dict(config.to_dict())
    inference, history, seconds, trainer_cfg = _fit(
        sae,
        activations,
        total_samples,
        batch_size,
        lr,
        seed,
        device,
        progress,
        lr_scheduler_name=lr_scheduler_name,
        lr_warm_up_steps=warm,
        dead_feature_window=dead_feature_window,
        feature_sampling_window=(
            max(steps, 1) if feature_sampling_window is None else feature_sampling_window
        ),
        n_checkpoints=n_checkpoints,
        checkpoint_path=None if checkpoint_path is None else str(checkpoint_path),
        save_final_checkpoint=checkpoint_path is not None,
        n_batches_for_norm_estimate=min(50, max(1, activations.shape[0] // batch_size)),
    )
    return TrainingRun(
        sae=inference,
        curves=pd.DataFrame(history),
        seconds=seconds,
        config=config,
        trainer_config=trainer_cfg,
    )


def _fit(
    sae: TrainingSAE,
    activations: Tensor,
    total_samples: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str | None,
    progress: bool,
    **trainer_options: Any,
) -> tuple[SAE, list[dict[str, float]], float, SAETrainerConfig]:
    """The one SAELens training set-up: fit ``sae`` on shuffled batches of ``activations``.

    The learning rate decays to ``lr / 10``; ``trainer_options`` (schedule, windows,
    checkpoints) go to ``SAETrainerConfig`` (no wandb logging); ``device`` (default: the
    activations' device) is where the trainer puts the SAE and every batch. Returns the
    inference SAE after a save/load round trip through SAELens' format (on ``device``), the
    per-step history of :class:`RecordingTrainer`, the seconds ``fit()`` took and the config.
    """
    device = str(activations.device) if device is None else str(device)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=total_samples,
        train_batch_size_samples=batch_size,
        lr=lr,
        lr_end=lr / 10,
        device=device,
        logger=LoggingConfig(log_to_wandb=False),
        **trainer_options,
    )
    trainer = RecordingTrainer(
        cfg=trainer_cfg,
        sae=sae,
        data_provider=activation_batches(activations, batch_size=batch_size, seed=seed),
    )
    start = time.perf_counter()
    with _saelens_bars(progress):
        trained = trainer.fit()
    seconds = time.perf_counter() - start
    # What is shipped is what is loaded: round-trip through SAELens' inference format.
    with tempfile.TemporaryDirectory() as tmp:
        trained.save_inference_model(tmp)
        inference = SAE.load_from_disk(tmp, device=device)
    return inference, trainer.history, seconds, trainer_cfg


# Planted faults for the "diagnose the run" exercise: fault -> changes to a healthy L1 run.
# ``l1``/``lr`` multiply the healthy values; ``scale`` multiplies the inputs.
FAULTS: dict[str, dict[str, Any]] = {
    "healthy": {},
    "sparsity coefficient too small": {"l1": 1 / 30},
    "sparsity coefficient too large": {"l1": 15.0},
    "learning rate too high": {"lr": 15.0},
    "no warm-up": {"warm_up": False},
    "bad input normalisation": {"scale": 30.0, "normalize": "none"},
}


def train_planted_faults(
    activations: Float[Tensor, "n d_in"],
    d_sae: int,
    total_samples: int,
    l1_coefficient: float = 2.0,
    lr: float = 1e-2,
    batch_size: int = 512,
    faults: list[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, TrainingRun]:
    """One short standard (L1) SAE run per entry of :data:`FAULTS` (or of ``faults``).

    The healthy run warms up both the learning rate and the L1 coefficient over the first
    20% of steps and normalises its inputs to norm ``sqrt(d_in)``; each faulty run changes
    exactly one of these decisions. Dead latents are counted over a window of 25 steps.
    Returns fault name -> :class:`TrainingRun`.
    """
    names = list(FAULTS) if faults is None else faults
    unknown = [f for f in names if f not in FAULTS]
    if unknown:
        raise ValueError(f"faults must be names from FAULTS {list(FAULTS)}, got {unknown}")
    warm = max(1, (total_samples // batch_size) // 5)
    runs = {}
    for name in tqdm(names, desc="Planted-fault runs", disable=not progress):
        fault = FAULTS[name]
        warm_up = fault.get("warm_up", True)
        config = training_sae_config(
            "standard",
            activations.shape[1],
            d_sae,
            l1_coefficient * fault.get("l1", 1.0),
            normalize_activations=fault.get("normalize", "expected_average_only_in"),
            l1_warm_up_steps=warm if warm_up else 0,
        )
        runs[name] = train_sae(
            activations * fault.get("scale", 1.0),
            config,
            total_samples,
            batch_size=batch_size,
            lr=lr * fault.get("lr", 1.0),
            lr_warm_up_steps=warm if warm_up else 0,
            dead_feature_window=25,
            seed=seed,
            progress=False,
        )
    return runs


def curve_signatures(curves: pd.DataFrame, tail: float = 0.25) -> dict[str, float]:
    """Summary numbers that tell training curves apart (one run's ``TrainingRun.curves``).

    ``final_l0`` and ``final_ev``: means over the last ``tail`` of the steps; ``loss_scale``:
    the first step's loss; ``max_jump``: the largest ratio of a step's loss to the median of
    the 10 steps before it (spikes); ``ev_noise``: the standard deviation of the step-to-step
    change in explained variance over the second half; ``max_dead``: the largest dead
    fraction; ``early_l0``: L0 at 5% of the steps (how fast sparsity set in).
    """
    needed = {"loss", "l0", "explained_variance", "dead_fraction"}
    if not needed <= set(curves.columns) or len(curves) < 20:
        raise ValueError(
            f"curves must have columns {sorted(needed)} and at least 20 rows, "
            f"got columns {list(curves.columns)} and {len(curves)} rows"
        )
    n = len(curves)
    last = curves.iloc[-max(1, int(n * tail)) :]
    half = curves.iloc[n // 2 :]
    baseline = curves["loss"].rolling(10, min_periods=1).median().shift(1)
    return {
        "final_l0": float(last["l0"].mean()),
        "final_ev": float(last["explained_variance"].mean()),
        "loss_scale": float(curves["loss"].iloc[0]),
        "max_jump": float((curves["loss"] / baseline).iloc[1:].max()),
        "ev_noise": float(half["explained_variance"].diff().std()),
        "max_dead": float(curves["dead_fraction"].max()),
        "early_l0": float(curves["l0"].iloc[max(1, n // 20)]),
    }


def topk_adam_steps(
    x: Float[Tensor, "n d_in"],
    params: dict[str, Tensor],
    k: int,
    lr: float,
    batch_size: int,
) -> dict[str, Tensor]:
    """Train a TopK SAE from given weights: one Adam step per consecutive batch of ``x``.

    ``params`` holds ``W_enc`` ``(d_in, d_sae)``, ``b_enc``, ``W_dec`` ``(d_sae, d_in)`` and
    ``b_dec``. The loss of each step is SAELens' own ``TopKTrainingSAE`` training loss
    (default configuration, no dead-latent mask so no auxiliary term); the optimizer is
    ``torch.optim.Adam`` with its default betas; the batches are ``x[0:b], x[b:2b], ...``
    (a last partial batch is used too). Returns the trained parameters (copies).
    """
    from sae_lens.saes.sae import TrainStepInput

    names = ("W_enc", "b_enc", "W_dec", "b_dec")
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"params must hold {list(names)}, missing {missing}")
    d_in, d_sae = params["W_enc"].shape
    check_tensor("x", x, finite=True)
    if x.ndim != 2 or x.shape[1] != d_in:
        raise ValueError(f"x must be (n, d_in={d_in}), got {tuple(x.shape)}")
    check_int("batch_size", batch_size, minimum=1)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=int(d_in), d_sae=int(d_sae), k=k))
    with torch.no_grad():
        for n in names:
            getattr(sae, n).copy_(params[n])
    optimizer = torch.optim.Adam([getattr(sae, n) for n in names], lr=lr)
    for start in range(0, x.shape[0], batch_size):
        step = TrainStepInput(
            sae_in=x[start : start + batch_size].float(),
            coefficients={},
            dead_neuron_mask=None,
            n_training_steps=0,
            is_logging_step=False,
        )
        optimizer.zero_grad()
        sae.training_forward_pass(step).loss.backward()
        optimizer.step()
    return {n: getattr(sae, n).detach().clone() for n in names}


# --- Training with SAELens' language-model runner ---------------------------------------------


@contextmanager
def _recording_runner(trainers: list[RecordingTrainer]) -> Iterator[None]:
    """Make SAELens' runner build a :class:`RecordingTrainer` (appended to ``trainers``)."""

    class _KeptTrainer(RecordingTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            trainers.append(self)

    original = runner_module.SAETrainer
    runner_module.SAETrainer = _KeptTrainer
    try:
        yield
    finally:
        runner_module.SAETrainer = original


@contextmanager
def _wandb_offline(wandb_dir: Path | None) -> Iterator[None]:
    """Point wandb at ``wandb_dir`` in offline mode (every folder it writes), then restore."""
    if wandb_dir is None:
        yield
        return
    names = ("WANDB_MODE", "WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR")
    saved = {n: os.environ.get(n) for n in (*names, "WANDB_SILENT")}
    os.environ.update({n: str(wandb_dir) for n in names[1:]})
    os.environ.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    import wandb

    wandb.teardown()  # wandb keeps the folder of its first run per process; start afresh
    try:
        yield
    finally:
        wandb.teardown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check_runner_inputs(
    model: HookedTransformer, dataset: Any, hook_name: str, total_tokens: int, batch_size: int
) -> None:
    """The argument checks of :func:`train_sae_with_runner` (errors name the argument)."""
    if hook_name not in model.hook_dict:
        raise KeyError(f"hook_name must be a hook of the model, got {hook_name!r}")
    if "input_ids" not in getattr(dataset, "column_names", []):
        raise ValueError(
            f"dataset must be a datasets.Dataset with an 'input_ids' column, "
            f"got {type(dataset).__name__} with columns {getattr(dataset, 'column_names', None)}"
        )
    check_int("batch_size_tokens", batch_size)
    check_int("total_tokens", total_tokens, minimum=batch_size)


def _log_schedule(steps: int) -> tuple[int, int]:
    """(log every this many steps, evaluate every this many logs) for a run of ``steps``:
    (5, 4) on runs of 25 steps or more; shorter runs log more often (at least 3 logs when
    ``steps >= 3``) and still evaluate once. SAELens logs at steps ``n`` with
    ``(n + 1) % log_every == 0`` and evaluates at every ``eval_every``-th of them."""
    log_every = max(1, min(5, steps // 5))
    return log_every, max(1, min(4, steps // log_every - 1))


def train_sae_with_runner(
    model: HookedTransformer,
    dataset: Any,
    config: TrainingSAEConfig,
    hook_name: str,
    total_tokens: int,
    batch_size_tokens: int = 512,
    lr: float = 1e-3,
    dead_feature_window: int = 100,
    wandb_dir: str | Path | None = None,
    log_every: int | None = None,
    eval_every: int | None = None,
    output_path: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> TrainingRun:
    """Train ``config``'s SAE on ``hook_name`` with SAELens' ``LanguageModelSAETrainingRunner``.

    The runner streams activations from ``model`` over ``dataset`` (a ``datasets.Dataset``
    with an ``input_ids`` column of equal-length token rows, BOS first; BOS positions are
    left out of training) for ``total_tokens`` tokens in batches of ``batch_size_tokens``,
    with a cosine learning-rate schedule (5% warm-up, decay to ``lr / 10``). Its trainer is a
    :class:`RecordingTrainer`, so the returned :class:`TrainingRun` has per-step ``curves``.
    With ``wandb_dir`` the runner also logs to Weights & Biases in offline mode under that
    folder (every ``log_every`` steps; its evals every ``eval_every`` logs; by default
    :func:`_log_schedule`: every 5 steps and every 4th log, more often on short runs so that a
    run logs at least 3 times and evaluates at least once) and ``extra["wandb_file"]`` is the
    run's ``.wandb`` file (see :func:`read_wandb_history`).
    The final SAE is saved in SAELens' format to ``output_path`` (default: a temporary
    folder) and ``sae`` is that saved SAE loaded back; ``extra["output_path"]`` says where.
    """
    _check_runner_inputs(model, dataset, hook_name, total_tokens, batch_size_tokens)
    context = len(dataset[0]["input_ids"])
    steps = total_tokens // batch_size_tokens
    auto_log, auto_eval = _log_schedule(steps)
    log_every = auto_log if log_every is None else log_every
    eval_every = auto_eval if eval_every is None else eval_every
    out = Path(tempfile.mkdtemp() if output_path is None else output_path)
    log_cfg = LoggingConfig(
        log_to_wandb=wandb_dir is not None,
        wandb_project="saebook",
        wandb_id=uuid.uuid4().hex[:8],
        wandb_log_frequency=log_every,
        eval_every_n_wandb_logs=eval_every,
        log_weights_to_wandb=False,
    )
    cfg = LanguageModelSAERunnerConfig(
        sae=config,
        model_name=model.cfg.model_name,
        hook_name=hook_name,
        dataset_path="(passed in memory)",
        is_dataset_tokenized=True,
        streaming=False,
        context_size=context,
        prepend_bos=False,  # the rows already start with BOS
        exclude_special_tokens=True,
        training_tokens=total_tokens,
        train_batch_size_tokens=batch_size_tokens,
        store_batch_size_prompts=max(1, 4 * batch_size_tokens // context),
        # SAELens' buffer holds n_batches_in_buffer * context tokens: at least one batch
        n_batches_in_buffer=max(4, -(-batch_size_tokens // context)),
        lr=lr,
        lr_warm_up_steps=max(1, steps // 20),
        lr_scheduler_name="cosineannealing",
        dead_feature_window=dead_feature_window,
        feature_sampling_window=max(steps, 1),
        n_batches_for_norm_estimate=min(10, steps),
        n_eval_batches=2,
        eval_batch_size_prompts=max(1, batch_size_tokens // context),
        logger=log_cfg,
        checkpoint_path=None,
        output_path=str(out),
        device=str(model.cfg.device),
        seed=seed,
        verbose=False,
        # the runner is handed the model and never loads one: recording the default loading
        # kwargs would make every reload of the SAE warn about them
        model_from_pretrained_kwargs={},
    )
    return _run_runner(model, dataset, cfg, wandb_dir, progress)


def _run_runner(
    model: HookedTransformer,
    dataset: Any,
    cfg: LanguageModelSAERunnerConfig,
    wandb_dir: str | Path | None,
    progress: bool,
) -> TrainingRun:
    """Run SAELens' runner on ``cfg`` with a recording trainer; the pieces of a TrainingRun."""
    trainers: list[RecordingTrainer] = []
    wandb_path = None if wandb_dir is None else Path(wandb_dir)
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    saelens_logger = logging.getLogger("sae_lens")
    level = saelens_logger.level
    # quiet: the runner warns that the overrides are not in its config, and logs a caught
    # view error (it falls back to reshape) on every hook_z batch
    saelens_logger.setLevel(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),  # SAELens compares dataset rows with tokens, and more
            _wandb_offline(wandb_path),
            _recording_runner(trainers),
            _saelens_bars(progress),
        ):
            warnings.filterwarnings("ignore", category=UserWarning, module=r"sae_lens\.")
            runner = LanguageModelSAETrainingRunner(
                cfg, override_model=model, override_dataset=dataset
            )
            runner.run()
            sae = SAE.load_from_disk(cfg.output_path, device=cfg.device)
    finally:
        saelens_logger.setLevel(level)
    seconds = time.perf_counter() - start
    wandb_file = None
    if wandb_path is not None:
        run_id = cfg.logger.wandb_id
        found = sorted(wandb_path.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
        if not found:
            raise FileNotFoundError(f"wandb wrote no offline run {run_id!r} under {wandb_path}")
        wandb_file = found[-1]
    return TrainingRun(
        sae=sae,
        curves=pd.DataFrame(trainers[0].history),
        seconds=seconds,
        config=cfg.sae,
        trainer_config=cfg.to_sae_trainer_config(),
        extra={"wandb_file": wandb_file, "output_path": Path(cfg.output_path), "runner": cfg},
    )


# wandb's offline run file (``run-<id>.wandb``): a 7-byte header, then LevelDB-log framing.
_WANDB_HEADER = struct.Struct("<4sHB")  # b":W&B", magic 0xBEE1, version 0
_CHUNK_HEADER = struct.Struct("<IHB")  # CRC-32 of (type byte + payload), length, type
_BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def join_log_chunks(chunks: list[tuple[int, bytes]]) -> list[bytes]:
    """Reassemble records from LevelDB-log chunks ``(type, payload)``, in file order.

    A record is one ``FULL`` chunk (type 1), or a ``FIRST`` chunk (2), any number of
    ``MIDDLE`` chunks (3) and a ``LAST`` chunk (4), whose payloads are concatenated. Returns
    the records' bytes; a chunk out of that order raises a ValueError naming its position.
    """
    records: list[bytes] = []
    pending: bytes | None = None
    for i, (kind, payload) in enumerate(chunks):
        if kind == FULL and pending is None:
            records.append(payload)
        elif kind == FIRST and pending is None:
            pending = payload
        elif kind in (MIDDLE, LAST) and pending is not None:
            pending += payload
            if kind == LAST:
                records.append(pending)
                pending = None
        else:
            raise ValueError(
                f"chunks[{i}] has type {kind}, which cannot follow "
                f"{'an open record' if pending is not None else 'a finished record'}"
            )
    if pending is not None:
        raise ValueError("chunks must end a record, got a FIRST/MIDDLE chunk with no LAST")
    return records


def _read_log_chunks(data: bytes) -> list[tuple[int, bytes]]:
    """The ``(type, payload)`` chunks of a wandb run file, each one's CRC-32 checked."""
    ident, magic, version = _WANDB_HEADER.unpack_from(data)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"not a wandb run file: header {data[:7]!r}")
    pos, chunks = _WANDB_HEADER.size, []
    while pos + _CHUNK_HEADER.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK_HEADER.size:  # a block's tail too short for a header is padding
            pos += left
            continue
        crc, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding after the last record
            break
        payload = data[pos + _CHUNK_HEADER.size : pos + _CHUNK_HEADER.size + length]
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) != crc:
            raise ValueError(f"wandb run file: bad checksum in the chunk at byte {pos}")
        chunks.append((kind, payload))
        pos += _CHUNK_HEADER.size + length
    return chunks


def read_wandb_history(run_file: str | Path) -> pd.DataFrame:
    """The logged history of an offline Weights & Biases run, read from its ``.wandb`` file.

    wandb 0.31 ships no reader for offline runs, so this one reads the file's framing (a
    ``:W&B`` header, then LevelDB-log chunks, each checked against its CRC-32) and decodes
    each record with the protobuf schema wandb ships (``wandb.proto.wandb_internal_pb2``).
    Returns one row per history record, indexed by ``_step``, one column per logged key
    (values as logged; histograms and other media are dropped).
    """
    from wandb.proto import wandb_internal_pb2

    path = Path(run_file)
    if not path.is_file():
        raise FileNotFoundError(f"run_file must be a wandb .wandb file, got {path}")
    rows = []
    for raw in join_log_chunks(_read_log_chunks(path.read_bytes())):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in record.history.item:
            value = json.loads(item.value_json)
            if isinstance(value, int | float) and not isinstance(value, bool):
                row[item.key or "/".join(item.nested_key)] = value
        rows.append(row)
    if not rows:
        raise ValueError(f"run_file {path} holds no history records")
    return pd.DataFrame(rows).set_index("_step").sort_index()


def topk_aux_loss(
    sae_in: Float[Tensor, "n d_in"],
    sae_out: Float[Tensor, "n d_in"],
    hidden_pre: Float[Tensor, "n d_sae"],
    dead_mask: Tensor,
    W_dec: Float[Tensor, "d_sae d_in"],
    coefficient: float = 1.0,
    rescale_by_decoder_norm: bool = False,
) -> Tensor:
    """SAELens' TopK auxiliary ("aux-k") loss, computed by SAELens on the given tensors.

    With ``rescale_by_decoder_norm`` (the default of SAELens' ``TopKTrainingSAEConfig``)
    each kept activation is divided by its decoder row's norm before decoding; without it
    (our default, the form of the paper) the activations are decoded as they are.

    The top ``k_aux = min(d_in // 2, n_dead)`` dead latents by pre-activation (of each row)
    reconstruct, through ``W_dec`` and without a bias, the residual ``sae_in - sae_out``;
    the loss is the mean squared error times ``coefficient * min(n_dead / (d_in // 2), 1)``.
    Zero when no latent is dead. Returns a scalar tensor.
    """
    check_tensor("W_dec", W_dec, ndim=2, floating=True)
    d_sae, d_in = W_dec.shape
    check_tensor("hidden_pre", hidden_pre, ndim=2, floating=True)
    if hidden_pre.shape[1] != d_sae or sae_in.shape != sae_out.shape or sae_in.shape[1] != d_in:
        raise ValueError(
            f"shapes must be sae_in/sae_out (n, {d_in}) and hidden_pre (n, {d_sae}), got "
            f"{tuple(sae_in.shape)}, {tuple(sae_out.shape)}, {tuple(hidden_pre.shape)}"
        )
    if dead_mask.shape != (d_sae,) or dead_mask.dtype != torch.bool:
        raise ValueError(f"dead_mask must be a bool tensor of shape ({d_sae},), got {dead_mask}")
    cfg = TopKTrainingSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        k=1,
        aux_loss_coefficient=coefficient,
        rescale_acts_by_decoder_norm=rescale_by_decoder_norm,
    )
    sae = TopKTrainingSAE(cfg)
    with torch.no_grad():
        sae.W_dec.copy_(W_dec)
    return sae.calculate_topk_aux_loss(sae_in, sae_out, hidden_pre, dead_mask)


def dead_fraction_curve(fired: Tensor, window: int) -> Float[Tensor, " steps"]:
    """Fraction of latents counted dead after each training step, as SAELens counts them.

    ``fired`` is a bool tensor ``(steps, d_sae)``: whether each latent fired in each step's
    batch. A latent's counter of steps since it last fired starts at 0, grows by one every
    step and returns to 0 on a step where it fires; after a step the latent is dead when the
    counter exceeds ``window``. Returns the dead fraction after each step.
    """
    check_tensor("fired", fired, ndim=2)
    if fired.dtype != torch.bool:
        raise ValueError(f"fired must be a bool tensor, got dtype {fired.dtype}")
    check_int("window", window, minimum=0)
    since = torch.zeros(fired.shape[1], dtype=torch.long)
    out = torch.empty(fired.shape[0])
    for step, did_fire in enumerate(fired.cpu()):
        since = torch.where(did_fire, 0, since + 1)
        out[step] = (since > window).float().mean()
    return out
