"""Evaluating SAEs beyond reconstruction, and cross-checking our metrics with SAELens.

- :func:`saelens_evals` runs SAELens' own ``run_evals`` on a given batch of tokens (an
  in-memory dataset behind an ``ActivationsStore``), so its numbers can be compared with
  :func:`saebook.metrics.reconstruction_metrics` on exactly the same positions.
- :func:`max_correlations` scores latents against known feature activations (ground truth):
  for each true feature, the best Pearson correlation any latent reaches.
- :func:`pareto_front` marks the runs no other run beats on two metrics at once.

Chapters: training/01, training/04
"""

from __future__ import annotations

import warnings

import pandas as pd
import torch
from jaxtyping import Float, Int
from sae_lens import SAE, ActivationsStore, HookedSAETransformer
from sae_lens.evals import EvalConfig, run_evals
from sae_lens.training.activation_scaler import ActivationScaler
from torch import Tensor

from saebook.hooks import bos_token_id
from saebook.metrics import ReconstructionMetrics

__all__ = ["saelens_evals", "compare_with_saelens", "max_correlations", "pareto_front"]


@torch.no_grad()
def saelens_evals(
    model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "batch seq"]
) -> dict[str, float]:
    """SAELens' ``run_evals`` on exactly ``tokens`` (rows already start with BOS).

    The tokens become an in-memory Hugging Face dataset read by an ``ActivationsStore`` in
    order, one row per prompt and all rows in one evaluation batch. BOS positions are
    excluded (``exclude_special_tokens``), and the activation scaler is the identity (the
    SAE's normalisation, if any, is folded into its weights). Returns SAELens' flat metrics
    (``explained_variance``, ``mse``, ``l0``, ``l2_ratio``, ``ce_loss_with_sae``,
    ``kl_div_with_sae``, ...).
    """
    from datasets import Dataset

    if tokens.ndim != 2 or tokens.numel() == 0:
        raise ValueError(
            f"tokens must be a non-empty (batch, seq) tensor, got {tuple(tokens.shape)}"
        )
    bos = bos_token_id(model)
    if bos is None or not bool((tokens[:, 0] == bos).all()):
        raise ValueError("tokens must start every row with the model's BOS token")
    n_rows, seq_len = tokens.shape
    dataset = Dataset.from_dict({"input_ids": tokens.cpu().tolist()})
    config = EvalConfig(
        batch_size_prompts=n_rows,
        n_eval_reconstruction_batches=1,
        n_eval_sparsity_variance_batches=1,
        compute_kl=True,
        compute_ce_loss=True,
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
    )
    with warnings.catch_warnings():  # the store's notes on dataset size and tensor copies
        warnings.simplefilter("ignore", UserWarning)
        store = ActivationsStore.from_sae(
            model=model,
            sae=sae,
            dataset=dataset,
            context_size=seq_len,
            streaming=False,
            store_batch_size_prompts=n_rows,
            n_batches_in_buffer=1,
            train_batch_size_tokens=seq_len,
            total_tokens=tokens.numel(),
            device=str(tokens.device),
            disable_concat_sequences=True,
        )
        metrics, _ = run_evals(
            sae, store, model, ActivationScaler(), eval_config=config, exclude_special_tokens=[bos]
        )
    flat: dict[str, float] = {}
    for group in metrics.values():
        if isinstance(group, dict):
            flat.update({k: float(v) for k, v in group.items() if isinstance(v, int | float)})
    return flat


def compare_with_saelens(ours: ReconstructionMetrics, theirs: dict[str, float]) -> pd.DataFrame:
    """Side by side: our metrics and SAELens' for the quantities both compute.

    Columns ``metric``, ``saebook``, ``sae_lens`` and ``abs_diff``. One convention differs:
    SAELens averages the CE losses over the predictions made at non-BOS positions, ours over
    all predictions, so the CE rows differ by the (large) loss of predicting the first token.
    """
    pairs = {
        "explained_variance": ("explained_variance", ours.explained_variance),
        "mse": ("mse", ours.mse),
        "l0": ("l0", ours.l0),
        "l2_ratio": ("l2_ratio", ours.l2_ratio),
        "ce_loss_without_sae": ("ce_loss_without_sae", ours.ce_clean),
        "ce_loss_with_sae": ("ce_loss_with_sae", ours.ce_with_sae),
        "kl_div_with_sae": ("kl_div_with_sae", ours.kl_div),
    }
    missing = [k for k, (key, _) in pairs.items() if key not in theirs]
    if missing:
        raise KeyError(f"theirs lacks SAELens metrics {missing}; got keys {sorted(theirs)}")
    rows = [
        {"metric": name, "saebook": value, "sae_lens": theirs[key]}
        for name, (key, value) in pairs.items()
    ]
    table = pd.DataFrame(rows)
    table["abs_diff"] = (table["saebook"] - table["sae_lens"]).abs()
    return table


def max_correlations(
    latent_acts: Float[Tensor, "n d_sae"], feature_acts: Float[Tensor, "n n_features"]
) -> tuple[Float[Tensor, " n_features"], Int[Tensor, " n_features"]]:
    """For each true feature, the largest Pearson correlation of any latent with it, and which.

    Constant columns (a latent that never fires, a feature never present) correlate 0 with
    everything. The mean of the first output is the *mean max correlation* score.
    """
    if latent_acts.ndim != 2 or feature_acts.ndim != 2:
        raise ValueError(
            f"latent_acts and feature_acts must be 2-D, got {tuple(latent_acts.shape)} "
            f"and {tuple(feature_acts.shape)}"
        )
    if latent_acts.shape[0] != feature_acts.shape[0]:
        raise ValueError(
            f"feature_acts must have latent_acts' {latent_acts.shape[0]} rows, "
            f"got {feature_acts.shape[0]}"
        )

    def standardise(x: Tensor) -> Tensor:
        x = x.double() - x.double().mean(0)
        norm = x.norm(dim=0)
        return x / torch.where(norm > 1e-12, norm, torch.ones_like(norm))

    corr = standardise(feature_acts).T @ standardise(latent_acts)  # (n_features, d_sae)
    best = corr.max(dim=1)
    return best.values.float(), best.indices


def pareto_front(table: pd.DataFrame, x: str, y: str) -> pd.Series:
    """Boolean mask of the rows no other row beats: lower or equal ``x`` and higher or equal
    ``y``, strictly better on at least one (e.g. ``x="l0"``, ``y="explained_variance"``)."""
    for col in (x, y):
        if col not in table.columns:
            raise KeyError(f"table has no column {col!r}; columns are {list(table.columns)}")
    xs, ys = table[x].to_numpy(), table[y].to_numpy()
    keep = []
    for i in range(len(table)):
        dominated = ((xs <= xs[i]) & (ys >= ys[i]) & ((xs < xs[i]) | (ys > ys[i]))).any()
        keep.append(not dominated)
    return pd.Series(keep, index=table.index, name="on_front")
