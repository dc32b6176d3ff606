"""Transcoders: a sparse stand-in for an MLP, spliced into the model and read from its weights.

A transcoder reads the MLP's input (``hook_name``, e.g. ``blocks.0.ln2.hook_normalized``) and
predicts the MLP's output (``hook_name_out``, e.g. ``blocks.0.hook_mlp_out``) through sparse
latents. This module measures what splicing it in costs the model (:func:`splice_report`) and
predicts what a latent responds to from weights alone:

* the **direct pullback** of a latent's encoder vector through the token embedding,
  ``W_E @ W_enc[:, i]``: a score per vocabulary token that ignores LayerNorm, positions and
  every earlier layer;
* the **attention-free de-embedding**: the latent's pre-activation when the model sees the
  token alone on the *attention-free path* (:func:`attention_free_inputs`): every attention
  layer's output set to zero and the positional embedding replaced by its mean over
  positions, LayerNorms and earlier MLPs kept. For a layer-0 transcoder this is the encoder
  applied to ``LN(W_E[t] + mean W_pos)``; read at ``blocks.1.hook_resid_pre`` the same path
  gives the **extended embedding** ``W_E[t] + mean W_pos + MLP_0(LN(W_E[t] + mean W_pos))``.

:func:`de_embedding_overlap` then checks the prediction against the tokens where each latent
actually fires hardest, with a chance level from other latents' predictions.

Chapters: circuits/02, circuits/03
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from saebook.directions import check_latents
from saebook.hooks import bos_mask, check_sae_hooks, exclude_special_tokens, stop_layer
from saebook.latent_gradients import pre_activations
from saebook.latent_stats import LatentStats
from saebook.validate import check_int

__all__ = [
    "SpliceReport",
    "splice_report",
    "spliced_logits",
    "prediction_overlap",
    "attention_free_inputs",
    "extended_embedding",
    "de_embedding",
    "activating_tokens",
    "de_embedding_overlap",
    "sample_alive_latents",
    "fit_learning_rate",
    "fit_mlp_transcoder",
]


@dataclass
class SpliceReport:
    """Next-token loss (nats) of the model with an MLP replaced, BOS positions excluded."""

    ce_clean: float
    ce_spliced: float  # the transcoder in place of the MLP (no error term)
    ce_mean_ablation: float  # the MLP output replaced by its mean over the tokens
    ce_zero_ablation: float  # the MLP output set to zero
    kl_spliced: float  # mean KL(clean || spliced) of the next-token distributions
    top1_agreement: float  # share of positions where the top prediction is unchanged

    @property
    def loss_recovered(self) -> float:
        """Share of the mean-ablation loss gap that the transcoder closes."""
        gap = self.ce_mean_ablation - self.ce_clean
        return float("nan") if gap == 0 else (self.ce_mean_ablation - self.ce_spliced) / gap

    def as_dict(self) -> dict[str, float]:
        """All fields plus ``loss_recovered``."""
        return {**asdict(self), "loss_recovered": self.loss_recovered}


@torch.no_grad()
def spliced_logits(
    model: HookedSAETransformer, transcoder: SAE, tokens: Int[Tensor, "batch seq"]
) -> Float[Tensor, "batch seq d_vocab"]:
    """Logits of ``model`` with ``transcoder`` in place of the MLP it imitates.

    The transcoder reads ``hook_name`` and its output (no error term) replaces
    ``hook_name_out`` at every position except BOS tokens, where the model's own MLP output
    is kept (SAELens' ``run_with_saes`` with ``exclude_special_tokens``).
    """
    hook_in, hook_out = check_sae_hooks(model, transcoder)
    if hook_in == hook_out:
        raise ValueError(
            "transcoder must read and write different hooks (cfg.metadata.hook_name_out), "
            f"got an SAE reading and writing {hook_in!r}"
        )
    return model.run_with_saes(
        tokens, saes=[transcoder], exclude_special_tokens=exclude_special_tokens(model)
    )


@torch.no_grad()
def splice_report(
    model: HookedSAETransformer, transcoder: SAE, tokens: Int[Tensor, "batch seq"]
) -> SpliceReport:
    """Compare the clean model with the transcoder spliced in place of its MLP on ``tokens``.

    The transcoder's output replaces ``hook_name_out`` at every non-BOS position (SAELens'
    ``model.saes(...)`` without error term, BOS bypassed as in training). Baselines replace
    the MLP output by its mean over non-BOS positions of ``tokens``, or by zero.
    """
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be a (batch, seq >= 2) tensor, got {tuple(tokens.shape)}")
    hook_in, hook_out = check_sae_hooks(model, transcoder)
    if hook_in == hook_out:
        raise ValueError(
            "transcoder must read and write different hooks (cfg.metadata.hook_name_out), "
            f"got an SAE reading and writing {hook_in!r}"
        )
    keep = bos_mask(model, tokens)  # no BOS token: the first column is left out instead
    target = tokens[:, 1:]
    mask = keep[:, :-1] & keep[:, 1:]  # predict a non-BOS token from a non-BOS position

    def loss(logits: Tensor) -> Tensor:
        lp = logits[:, :-1].log_softmax(-1)
        return -lp.gather(-1, target[..., None])[..., 0]

    clean_logits, cache = model.run_with_cache(tokens, names_filter=hook_out)
    mean_out = cache[hook_out][keep].mean(0)

    def set_to(value: Tensor):
        def hook(act: Tensor, hook: object) -> Tensor:
            return torch.where(keep[..., None], value.expand_as(act), act)

        return hook

    spliced = spliced_logits(model, transcoder, tokens)
    mean_logits = model.run_with_hooks(tokens, fwd_hooks=[(hook_out, set_to(mean_out))])
    zero_logits = model.run_with_hooks(
        tokens, fwd_hooks=[(hook_out, set_to(torch.zeros_like(mean_out)))]
    )
    lp_clean = clean_logits.log_softmax(-1)
    lp_spliced = spliced.log_softmax(-1)
    kl = (lp_clean.exp() * (lp_clean - lp_spliced)).sum(-1)
    pos = keep  # KL and agreement at every non-BOS position
    return SpliceReport(
        ce_clean=float(loss(clean_logits)[mask].mean()),
        ce_spliced=float(loss(spliced)[mask].mean()),
        ce_mean_ablation=float(loss(mean_logits)[mask].mean()),
        ce_zero_ablation=float(loss(zero_logits)[mask].mean()),
        kl_spliced=float(kl[pos].mean()),
        top1_agreement=float((clean_logits.argmax(-1) == spliced.argmax(-1))[pos].float().mean()),
    )


@torch.no_grad()
def attention_free_inputs(
    model: HookedSAETransformer, hook: str, batch_size: int = 4096
) -> Float[Tensor, "d_vocab d"]:
    """The activation at ``hook`` for each vocabulary token on the attention-free path.

    Each token is run alone (one position) with every ``blocks.*.hook_attn_out`` set to zero
    and ``hook_pos_embed`` (when the model has learned positions) replaced by the mean
    positional embedding over positions ``1..n_ctx-1`` (position 0 is the BOS slot). What
    remains is the embedding, the LayerNorms and the MLPs before ``hook``. Returns
    ``(d_vocab, d)`` on the model's device (trailing axes of e.g. ``hook_z`` are flattened).
    """
    if hook not in model.hook_dict:
        raise ValueError(f"hook must be a hook of the model, got {hook!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    box: dict[str, Tensor] = {}

    def capture(act: Tensor, hook: object) -> None:
        box["x"] = act[:, 0].flatten(1)

    hooks = []
    if "hook_pos_embed" in model.hook_dict:  # learned positions (rotary models have none)
        mean_pos = model.W_pos[1:].mean(0)
        hooks.append(("hook_pos_embed", lambda act, hook: mean_pos.expand_as(act).clone()))
    hooks += [(f"blocks.{layer}.hook_attn_out", lambda act, hook: torch.zeros_like(act))
              for layer in range(model.cfg.n_layers)]  # fmt: skip
    hooks.append((hook, capture))
    out = []
    vocab = torch.arange(model.cfg.d_vocab, device=model.cfg.device)
    for chunk in vocab.split(batch_size):
        model.run_with_hooks(chunk[:, None], fwd_hooks=hooks, stop_at_layer=stop_layer(hook))
        out.append(box.pop("x"))
    return torch.cat(out)


def extended_embedding(
    model: HookedSAETransformer, layer: int = 1
) -> Float[Tensor, "d_vocab d_model"]:
    """``blocks.{layer}.hook_resid_pre`` on the attention-free path: what later layers read.

    For ``layer=1`` this is ``W_E[t] + mean W_pos + MLP_0(LN_2(W_E[t] + mean W_pos))``.
    """
    if not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"layer must be in [0, {model.cfg.n_layers}), got {layer}")
    return attention_free_inputs(model, f"blocks.{layer}.hook_resid_pre")


_DE_EMBEDDING_BLOCK = 1 << 25  # floats of pre-activations held at once (128 MB in float32)


@torch.no_grad()
def de_embedding(
    model: HookedSAETransformer,
    sae: SAE,
    latents: list[int] | Tensor | None = None,
    path: str = "attention_free",
) -> Float[Tensor, "n_latents d_vocab"]:
    """A score per vocabulary token for each latent: how strongly the token alone drives it.

    ``path="attention_free"``: the latent's pre-activation on :func:`attention_free_inputs`
    at the SAE's input hook (exact for that path, LayerNorm and biases included).
    ``path="direct"``: the pure-weights pullback ``W_E @ W_enc[:, latent]`` (no LayerNorm, no
    position, no bias; only meaningful for an SAE that reads the residual stream near the
    embedding).
    Memory is bounded: vocabulary rows go through the SAE in blocks, and only the ``latents``
    asked for are kept (``(n_latents, d_vocab)``).
    """
    hook_in, _ = check_sae_hooks(model, sae)
    index = torch.arange(sae.cfg.d_sae) if latents is None else check_latents(sae, latents)
    index = index.to(sae.W_enc.device)
    if path == "direct":
        if sae.cfg.d_in != model.cfg.d_model:
            raise ValueError(
                f"path='direct' needs an SAE reading a d_model={model.cfg.d_model} hook, got "
                f"d_in={sae.cfg.d_in}"
            )
        return (model.W_E.to(sae.W_enc.device) @ sae.W_enc[:, index]).T.cpu()
    if path != "attention_free":
        raise ValueError(f"path must be 'attention_free' or 'direct', got {path!r}")
    x = attention_free_inputs(model, hook_in).to(sae.W_enc.device)
    # only the asked latents' encoder columns (200 of 24,576 cost 1/120 of the full product),
    # a block of vocabulary rows at a time; peak about _DE_EMBEDDING_BLOCK floats plus the result
    rows = max(1, _DE_EMBEDDING_BLOCK // index.numel())
    out = torch.empty(index.numel(), x.shape[0], dtype=sae.W_enc.dtype)
    for start in range(0, x.shape[0], rows):
        pre = pre_activations(sae, x[start : start + rows], columns=index)  # (rows, n)
        out[:, start : start + rows] = pre.T.cpu()
    return out


def activating_tokens(
    stats: LatentStats, tokens: Int[Tensor, "rows seq"], latent: int, n: int = 20
) -> list[int]:
    """Token ids at ``latent``'s ``n`` top activating positions (from :func:`latent_stats`)."""
    if tuple(tokens.shape) != (stats.n_rows, stats.seq_len):
        raise ValueError(
            f"tokens must be the ({stats.n_rows}, {stats.seq_len}) tensor the stats came from, "
            f"got {tuple(tokens.shape)}"
        )
    return [int(tokens[e.row, e.pos]) for e in stats.top_examples(latent, n)]


def de_embedding_overlap(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, "rows seq"],
    stats: LatentStats,
    latents: list[int] | Tensor,
    *,
    k: int = 10,
    n_top: int = 20,
    path: str = "attention_free",
    scores: Tensor | None = None,
) -> pd.DataFrame:
    """How well each latent's top-``k`` de-embedding tokens predict where it fires.

    For each latent, ``overlap`` is the share of its ``n_top`` top activating positions whose
    token is among its ``k`` highest-scoring de-embedding tokens. ``chance`` is the same share
    computed with every *other* listed latent's top-``k`` tokens, averaged: what a prediction
    unrelated to this latent scores on its activating tokens (it accounts for frequent
    tokens). ``scores`` may pass precomputed :func:`de_embedding` rows for ``latents``.
    """
    index = check_latents(sae, latents)
    if index.numel() < 2:
        raise ValueError(
            f"latents must hold at least 2 latents (for the chance level), got {index.tolist()}"
        )
    if not 1 <= k <= model.cfg.d_vocab:
        raise ValueError(f"k must be in [1, {model.cfg.d_vocab}] (d_vocab), got {k}")
    if scores is None:
        scores = de_embedding(model, sae, index, path=path)
    if scores.shape != (index.numel(), model.cfg.d_vocab):
        raise ValueError(
            f"scores must have shape ({index.numel()}, {model.cfg.d_vocab}), "
            f"got {tuple(scores.shape)}"
        )
    fired = [activating_tokens(stats, tokens, int(i), n_top) for i in index]
    overlap, chance = prediction_overlap(scores, fired, k)
    return pd.DataFrame(
        {
            "latent": index.tolist(),
            "overlap": overlap,
            "chance": chance,
            "n_activations": [len(f) for f in fired],
        }
    )


def prediction_overlap(
    scores: Float[Tensor, "n d_vocab"], fired: list[list[int]], k: int
) -> tuple[list[float], list[float]]:
    """Overlap of each latent's top-``k`` scored tokens with the tokens it fired on.

    ``scores[a]`` scores every token for latent ``a`` (e.g. its de-embedding), ``fired[a]``
    lists the token ids at its top activating positions. ``overlap[a]`` is the share of
    ``fired[a]`` that lies among latent ``a``'s ``k`` highest-scoring tokens; ``chance[a]``
    is the mean of the same share computed with every *other* latent's top ``k`` (NaN for a
    latent with no activation). Needs at least two latents.
    """
    if scores.ndim != 2 or scores.shape[0] != len(fired) or len(fired) < 2:
        raise ValueError(
            f"scores must be (n >= 2, d_vocab) with one row per entry of fired ({len(fired)}), "
            f"got {tuple(scores.shape)}"
        )
    predicted = [set(row.tolist()) for row in scores.topk(k, dim=-1).indices]

    def share(pred: set[int], toks: list[int]) -> float:
        return sum(t in pred for t in toks) / len(toks) if toks else float("nan")

    n = len(fired)
    overlap = [share(predicted[a], fired[a]) for a in range(n)]
    chance = [sum(share(predicted[b], fired[a]) for b in range(n) if b != a) / (n - 1)
              for a in range(n)]  # fmt: skip
    return overlap, chance


def sample_alive_latents(
    stats: LatentStats, n: int, min_count: int = 20, seed: int = 0
) -> list[int]:
    """``n`` latents drawn at random among those that fired at least ``min_count`` times."""
    alive = torch.nonzero(stats.count >= min_count).flatten().tolist()
    if not alive:
        raise ValueError(
            f"no latent fired at least min_count={min_count} times on the stats' tokens"
        )
    rng = random.Random(seed)
    return sorted(rng.sample(alive, min(n, len(alive))))


def fit_learning_rate(d_in: int) -> float:
    """The learning rate :func:`fit_mlp_transcoder` trains with: ``3e-3 * min(1, 128 / d_in)``."""
    return 3e-3 * min(1.0, 128 / check_int("d_in", d_in))


def fit_mlp_transcoder(
    model: HookedSAETransformer,
    tokens: Int[Tensor, "rows seq"],
    layer: int,
    d_sae: int | None = None,
    target_l0: float = 16.0,
    epochs: int = 2,
    progress: bool = True,
) -> SAE:
    """Train a ReLU transcoder for the MLP of ``layer`` on ``tokens`` (for models without one).

    It reads ``blocks.{layer}.ln2.hook_normalized`` and predicts ``blocks.{layer}.hook_mlp_out``
    (BOS positions left out), with :func:`saebook.training.train_transcoder` on the CPU for
    ``epochs`` passes over the positions; ``d_sae`` defaults to ``4 * d_model``. A quick fit:
    expect a looser stand-in than a transcoder trained on billions of tokens. Returned on the
    model's device.

    The learning rate is ``3e-3 * min(1, 128 / d_model)``: Adam moves every weight by about
    the learning rate per step, so a latent's pre-activation moves by about ``lr * sum|x_i|``,
    which grows with the width. 3e-3 suits the tiny model's 128 dimensions; on gpt2's 768 it
    killed every latent within 15 steps (2 of 3072 alive; at 5e-4, 2916).
    """
    from saebook.training import collect_activations, train_transcoder

    if not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"layer must be in [0, {model.cfg.n_layers}), got {layer}")
    d_sae = 4 * model.cfg.d_model if d_sae is None else d_sae
    hook_in, hook_out = f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"
    acts = collect_activations(model, tokens, [hook_in, hook_out], progress=progress)
    x, y = acts[hook_in].float().cpu(), acts[hook_out].float().cpu()
    batch = min(1024, x.shape[0])
    tc = train_transcoder(
        x, y, d_sae=d_sae, target_l0=target_l0, batch_size=batch,
        total_samples=epochs * x.shape[0], lr=fit_learning_rate(x.shape[1]),
        metadata={"hook_name": hook_in, "hook_name_out": hook_out,
                  "model_name": model.cfg.model_name},
    )  # fmt: skip
    return tc.to(model.cfg.device)
