"""Training SAEs and transcoders on cached activations.

SAEs are trained with SAELens' own ``SAETrainer`` on an iterator of cached activation
batches (about 3x faster on a CPU than running the language model inside the training loop).
SAELens 6 has no transcoder trainer, so :func:`train_transcoder` is a short loop over a
SAELens ``Transcoder``. Both return inference SAELens objects, ready for
``HookedSAETransformer``.

Chapters: intro/07, deeper/03, training/01, training/02, training/04
"""

from __future__ import annotations

import functools
import tempfile
import time
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
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.saes.sae import SAEMetadata, TrainStepOutput
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
    "TrainingRun",
    "train_sae",
    "FAULTS",
    "train_planted_faults",
    "curve_signatures",
    "train_topk_sae",
    "check_training_run",
    "train_transcoder",
    "topk_adam_steps",
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

    ``metadata`` goes into ``sae.cfg.metadata`` (``hook_name``, ``model_name`` and friends).
    With ``reshape_hook_z`` the SAE reads a ``hook_z`` tensor of shape (..., heads, d_head)
    when spliced into a model, while training on its flattened rows. ``device`` is where it
    trains and is returned (default: the device of ``activations``).
    """
    check_training_run(activations, d_sae, batch_size, total_samples)
    check_int("k", k)
    if k >= d_sae:
        raise ValueError(f"k must be smaller than d_sae ({d_sae}), got {k}")
    cfg = TopKTrainingSAEConfig(
        d_in=activations.shape[1],
        d_sae=d_sae,
        k=k,
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
