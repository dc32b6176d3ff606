"""The logit lens for SAE latents: what every latent writes towards the output vocabulary.

A latent adds its decoder direction ``d_i`` (taken to the residual stream by
:func:`saebook.directions.decoder_directions`) to the residual stream. Read straight through
the unembedding, ``d_i @ W_U`` is one weight per vocabulary token: the latent's *logit-weight
distribution*. This module computes it for all latents at once (optionally through the final
LayerNorm, frozen: centred for a LayerNorm model and scaled by its learned weight), summarises
each distribution by its moments (a latent that promotes a few tokens has a long right tail:
large skew and kurtosis), builds token sets from the vocabulary (by predicates, or from word
lists passed in as data) and tests every latent's logits for enrichment in each set:

* a hypergeometric test on the ``k`` most promoted tokens (how many of them are in the set,
  against drawing ``k`` tokens at random), with the fold enrichment as effect size;
* a one-sided Mann-Whitney U test on the whole distribution (do set tokens get larger logit
  weights than the rest?), with the AUC ``U / (n_in * n_out)`` as effect size;

both with Benjamini-Hochberg false-discovery-rate control over all (latent, set) tests.

Chapters: deeper/05, deeper/07
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE, HookedSAETransformer
from scipy import stats as sps
from torch import Tensor

from saebook.directions import decoder_directions, logit_effects

__all__ = [
    "latent_logit_weights",
    "skew_kurtosis",
    "logit_statistics",
    "vocab_strings",
    "token_set",
    "generic_token_sets",
    "word_token_sets",
    "hypergeometric_enrichment",
    "mannwhitney_enrichment",
    "enrichment_table",
    "volcano_plot",
]


@torch.no_grad()
def latent_logit_weights(
    model: HookedSAETransformer,
    sae: SAE,
    latents: Sequence[int] | Int[Tensor, " n"] | None = None,
    fold_ln: bool = True,
) -> Float[Tensor, "n d_vocab"]:
    """Direct logit weights of ``latents`` (default: all), on the CPU.

    With ``fold_ln`` (the default) the direction goes through the final normalisation as a
    linear map, :func:`saebook.directions.logit_effects`: a LayerNorm removes its mean over
    ``d_model`` and its learned weight ``ln_final.w`` (when it was not folded into ``W_U`` at
    load time) scales it; the division by the residual norm is a positive per-position factor
    that changes no ranking, and is left out. ``fold_ln=False`` gives the bare product
    ``d_i @ W_U``, which is the logit effect only on a model whose final LayerNorm weight was
    folded and is kept to show the difference.
    """
    dirs = decoder_directions(model, sae, latents).to(model.W_U.device)
    if fold_ln:
        return logit_effects(model, dirs).cpu()
    return (dirs @ model.W_U.float()).cpu()


def skew_kurtosis(
    x: Float[Tensor, "*batch n"],
) -> tuple[Float[Tensor, " *batch"], Float[Tensor, " *batch"]]:
    """Sample skewness and excess (Fisher) kurtosis along the last axis.

    The biased moment estimators, as ``scipy.stats.skew(x, axis=-1)`` and
    ``scipy.stats.kurtosis(x, axis=-1)`` compute them: ``m3 / m2**1.5`` and ``m4 / m2**2 - 3``
    with ``m_r`` the r-th central moment. Computed in float64; a constant row gives NaN.
    """
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[-1] < 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor with at least 2 values on its last axis, got {shape}")
    x = x.double()
    centred = x - x.mean(-1, keepdim=True)
    m2 = centred.pow(2).mean(-1)
    m3 = centred.pow(3).mean(-1)
    m4 = centred.pow(4).mean(-1)
    flat = m2 <= 1e-30 * x.abs().amax(-1).pow(2).clamp(min=1e-300)
    nan = torch.full_like(m2, float("nan"))
    skew = torch.where(flat, nan, m3 / m2.clamp(min=1e-300).pow(1.5))
    kurt = torch.where(flat, nan, m4 / m2.clamp(min=1e-300).pow(2) - 3.0)
    return skew, kurt


def logit_statistics(
    logits: Float[Tensor, "n d_vocab"], latents: Sequence[int] | Tensor | None = None
) -> pd.DataFrame:
    """One row per latent: ``latent``, ``mean``, ``std``, ``skew``, ``kurtosis``, ``max``, ``min``.

    ``latents`` names the rows of ``logits`` (default ``0..n-1``).
    """
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a 2-D tensor (latents, d_vocab), got {shape}")
    ids = list(range(logits.shape[0])) if latents is None else [int(i) for i in latents]
    if len(ids) != logits.shape[0]:
        raise ValueError(f"latents must name the {logits.shape[0]} rows of logits, got {len(ids)}")
    skew, kurt = skew_kurtosis(logits)
    x = logits.double()
    return pd.DataFrame(
        {
            "latent": ids,
            "mean": x.mean(-1).numpy(),
            "std": x.std(-1, correction=0).numpy(),
            "skew": skew.numpy(),
            "kurtosis": kurt.numpy(),
            "max": x.amax(-1).numpy(),
            "min": x.amin(-1).numpy(),
        }
    )


# ---------------------------------------------------------------------------------------------
# Token sets
# ---------------------------------------------------------------------------------------------


def vocab_strings(model: HookedSAETransformer) -> list[str]:
    """The text of every token id of ``model``'s tokenizer (one decode per id)."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError("model must have a tokenizer to read its vocabulary, got None")
    return [tok.decode([i], clean_up_tokenization_spaces=False) for i in range(model.cfg.d_vocab)]


def token_set(vocab: Sequence[str], predicate: Callable[[str], bool]) -> Bool[Tensor, " d_vocab"]:
    """A boolean mask over ``vocab``: True where ``predicate(token_text)`` holds."""
    if not callable(predicate):
        raise TypeError(f"predicate must be callable, got {type(predicate).__name__}")
    return torch.tensor([bool(predicate(t)) for t in vocab], dtype=torch.bool)


def generic_token_sets(vocab: Sequence[str]) -> dict[str, Bool[Tensor, " d_vocab"]]:
    """Token sets that make sense for any tokenizer.

    ``starts_with_space`` (a word-initial token), ``all_digits`` (digits only, a leading space
    allowed), ``capitalised`` (first non-space character upper-case, then lower-case
    letters) and ``punctuation`` (non-empty, no letter, digit or space).
    """

    def digits(t: str) -> bool:
        s = t.lstrip(" ")
        return bool(s) and s.isascii() and s.isdigit()

    def capitalised(t: str) -> bool:
        s = t.lstrip(" ")
        return len(s) >= 2 and s[0].isupper() and s[1:].isalpha() and s[1:].islower()

    def punctuation(t: str) -> bool:
        return bool(t) and not any(c.isalnum() or c.isspace() for c in t)

    return {
        "starts_with_space": token_set(vocab, lambda t: t.startswith(" ") and len(t.strip()) > 0),
        "all_digits": token_set(vocab, digits),
        "capitalised": token_set(vocab, capitalised),
        "punctuation": token_set(vocab, punctuation),
    }


def word_token_sets(
    vocab: Sequence[str],
    words: Mapping[str, Iterable[str]],
    case_sensitive: bool = False,
    min_size: int = 1,
) -> dict[str, Bool[Tensor, " d_vocab"]]:
    """For each named word list, the tokens whose text (spaces stripped) is one of its words.

    Only whole-word tokens count: ``" Lily"`` is in the set of a list holding ``"Lily"``, the
    piece ``" Li"`` is not. Sets with fewer than ``min_size`` tokens are left out.
    """
    if not isinstance(words, Mapping):
        raise TypeError(f"words must map a set name to a list of words, got {type(words).__name__}")
    stripped = [t.strip() if case_sensitive else t.strip().lower() for t in vocab]
    out = {}
    for name, lst in words.items():
        if isinstance(lst, str):
            raise TypeError(f"words[{name!r}] must be a list of words, got the string {lst!r}")
        wanted = {w if case_sensitive else w.lower() for w in lst}
        mask = torch.tensor([s in wanted and s != "" for s in stripped], dtype=torch.bool)
        if int(mask.sum()) >= min_size:
            out[name] = mask
    return out


# ---------------------------------------------------------------------------------------------
# Enrichment tests
# ---------------------------------------------------------------------------------------------


def _check_set(logits: Tensor, in_set: Tensor, name: str = "in_set") -> None:
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a 2-D tensor (latents, d_vocab), got {shape}")
    if not isinstance(in_set, Tensor) or in_set.dtype != torch.bool:
        kind = in_set.dtype if isinstance(in_set, Tensor) else type(in_set).__name__
        raise TypeError(f"{name} must be a bool tensor over the vocabulary, got {kind}")
    if in_set.shape != (logits.shape[1],):
        raise ValueError(
            f"{name} must have shape ({logits.shape[1]},) (d_vocab), got {tuple(in_set.shape)}"
        )


def hypergeometric_enrichment(
    logits: Float[Tensor, "n d_vocab"], in_set: Bool[Tensor, " d_vocab"], k: int = 20
) -> tuple[Int[Tensor, " n"], Float[Tensor, " n"]]:
    """How many of each row's ``k`` largest logits are set tokens, and the one-sided p-value.

    The p-value is ``P(X >= observed)`` for ``X`` hypergeometric: ``k`` draws without
    replacement from ``d_vocab`` tokens of which ``in_set.sum()`` are in the set. Returns
    ``(in_top, p)``, both of shape ``(n,)`` (``p`` in float64).
    """
    _check_set(logits, in_set)
    n_vocab = logits.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_vocab:
        raise ValueError(f"k must be an int in [1, {n_vocab}] (d_vocab), got {k!r}")
    top = logits.topk(k, dim=-1).indices
    in_top = in_set.to(top.device)[top].sum(-1).cpu()
    p = sps.hypergeom.sf(in_top.numpy() - 1, n_vocab, int(in_set.sum()), k)
    return in_top, torch.as_tensor(np.asarray(p, dtype=np.float64))


def mannwhitney_enrichment(
    logits: Float[Tensor, "n d_vocab"], in_set: Bool[Tensor, " d_vocab"]
) -> tuple[Float[Tensor, " n"], Float[Tensor, " n"]]:
    """AUC and one-sided Mann-Whitney p-value that set tokens get larger logits, per row.

    ``U`` is the rank-sum statistic of the set tokens (ties get average ranks), the AUC is
    ``U / (n_in * n_out)`` (0.5: no preference) and ``p`` is the normal approximation with
    continuity and tie correction, as ``scipy.stats.mannwhitneyu(x_in, x_out,
    alternative="greater", method="asymptotic")`` gives. A set that is empty or the whole
    vocabulary gives NaN.
    """
    _check_set(logits, in_set)
    x = logits.double().cpu()
    n = x.shape[1]
    n1 = int(in_set.sum())
    n2 = n - n1
    if n1 == 0 or n2 == 0:
        nan = torch.full((x.shape[0],), float("nan"), dtype=torch.float64)
        return nan, nan.clone()
    ranks, tie_term = _average_ranks(x)
    return _mannwhitney_from_ranks(ranks, tie_term, in_set.cpu())


def _mannwhitney_from_ranks(
    ranks: Tensor, tie_term: Tensor, in_set: Tensor
) -> tuple[Tensor, Tensor]:
    """AUC and p-value of :func:`mannwhitney_enrichment` from precomputed ranks."""
    n = ranks.shape[1]
    n1 = int(in_set.sum())
    n2 = n - n1
    if n1 == 0 or n2 == 0:
        nan = torch.full((ranks.shape[0],), float("nan"), dtype=torch.float64)
        return nan, nan.clone()
    r1 = ranks[:, in_set].sum(-1)
    u = r1 - n1 * (n1 + 1) / 2
    mu = n1 * n2 / 2
    sigma = torch.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    z = (u - mu - 0.5) / sigma
    p = torch.as_tensor(sps.norm.sf(z.numpy()), dtype=torch.float64)
    return u / (n1 * n2), p


def _average_ranks(x: Tensor) -> tuple[Tensor, Tensor]:
    """Average ranks (1-based) along the last axis and the tie term ``sum(t**3 - t)`` per row."""
    order = x.argsort(dim=-1, stable=True)
    sorted_x = x.gather(-1, order)
    n = x.shape[-1]
    new_run = torch.ones_like(sorted_x, dtype=torch.bool)
    new_run[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    run_id = new_run.long().cumsum(-1) - 1  # (rows, n)
    pos = torch.arange(1, n + 1, dtype=torch.float64).expand_as(sorted_x)
    sums = torch.zeros_like(sorted_x).scatter_add_(-1, run_id, pos)
    counts = torch.zeros_like(sorted_x).scatter_add_(-1, run_id, torch.ones_like(pos))
    avg_sorted = (sums / counts.clamp(min=1)).gather(-1, run_id)
    ranks = torch.empty_like(avg_sorted).scatter_(-1, order, avg_sorted)
    tie_term = (counts.pow(3) - counts).sum(-1)
    return ranks, tie_term


def enrichment_table(
    logits: Float[Tensor, "n d_vocab"],
    token_sets: Mapping[str, Bool[Tensor, " d_vocab"]],
    k: int = 20,
    latents: Sequence[int] | Tensor | None = None,
    alpha: float = 0.05,
    chunk: int = 256,
    progress: bool = True,
) -> pd.DataFrame:
    """Enrichment of every latent's logits in every token set, both tests, FDR-controlled.

    One row per (latent, token set) with columns ``latent``, ``token_set``, ``set_size``,
    ``in_top_k`` (set tokens among the ``k`` most promoted), ``fold`` (``in_top_k / k`` over
    the set's share of the vocabulary) and ``log2_fold`` (``log2((in_top_k + 0.5) / (expected
    + 0.5))``, finite at zero counts), ``p_hypergeom``, ``auc``, ``p_mannwhitney``, and
    ``q_hypergeom`` / ``q_mannwhitney``: Benjamini-Hochberg adjusted p-values over all rows,
    with ``significant`` = ``q_hypergeom < alpha``. ``latents`` names the rows of ``logits``.
    Rows are ranked ``chunk`` at a time, which bounds the memory to ``chunk x d_vocab``.
    Rows come grouped by chunk, then by set. ``progress`` shows a bar over the chunks.
    """
    from tqdm import tqdm

    if not token_sets:
        raise ValueError("token_sets must hold at least one named set, got none")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    ids = list(range(logits.shape[0])) if latents is None else [int(i) for i in latents]
    if len(ids) != logits.shape[0]:
        raise ValueError(f"latents must name the {logits.shape[0]} rows of logits, got {len(ids)}")
    n_vocab = logits.shape[1]
    for name, mask in token_sets.items():
        _check_set(logits, mask, f"token_sets[{name!r}]")
    frames = []
    starts = range(0, logits.shape[0], chunk)
    for start in tqdm(starts, desc="enrichment", disable=not progress, leave=False):
        block = logits[start : start + chunk].double().cpu()
        ranks, tie_term = _average_ranks(block)
        for name, mask in token_sets.items():
            mask = mask.cpu()
            in_top, p_h = hypergeometric_enrichment(block, mask, k)
            auc, p_u = _mannwhitney_from_ranks(ranks, tie_term, mask)
            size = int(mask.sum())
            expected = k * size / n_vocab
            hits = in_top.double().numpy()
            frames.append(
                pd.DataFrame(
                    {
                        "latent": ids[start : start + chunk],
                        "token_set": name,
                        "set_size": size,
                        "in_top_k": in_top.numpy(),
                        "fold": hits / expected if size else np.full_like(hits, np.nan),
                        "log2_fold": np.log2((hits + 0.5) / (expected + 0.5)),
                        "p_hypergeom": p_h.numpy(),
                        "auc": auc.numpy(),
                        "p_mannwhitney": p_u.numpy(),
                    }
                )
            )
    table = pd.concat(frames, ignore_index=True)
    for test in ("hypergeom", "mannwhitney"):
        p = table[f"p_{test}"].to_numpy()
        q = np.full_like(p, np.nan)
        ok = np.isfinite(p)
        if ok.any():
            q[ok] = sps.false_discovery_control(np.clip(p[ok], 0.0, 1.0), method="bh")
        table[f"q_{test}"] = q
    table["significant"] = table["q_hypergeom"] < alpha
    return table


def volcano_plot(
    table: pd.DataFrame,
    effect: str = "log2_fold",
    p: str = "p_hypergeom",
    alpha: float = 0.05,
    title: str = "Token-set enrichment of latent logits",
) -> go.Figure:
    """Volcano plot of an :func:`enrichment_table`: effect size against ``-log10 p``.

    One trace per token set; points with ``q < alpha`` (the q column matching ``p``) are
    drawn solid, the rest faded. Hover shows the latent and its counts.
    """
    for col in (effect, p, "latent", "token_set", "in_top_k"):
        if col not in table.columns:
            raise KeyError(
                f"table must have a {col!r} column (an enrichment_table), got {list(table.columns)}"
            )
    q_col = "q_" + p.removeprefix("p_")
    fig = go.Figure()
    floor = np.finfo(float).tiny
    for name, group in table.groupby("token_set", sort=False):
        y = -np.log10(np.clip(group[p].to_numpy(dtype=float), floor, 1.0))
        sig = group[q_col].to_numpy() < alpha if q_col in group else np.zeros(len(group), bool)
        fig.add_trace(
            go.Scattergl(
                x=group[effect].round(4), y=np.round(y, 3), mode="markers", name=str(name),
                marker={"size": 6, "opacity": [0.9 if s else 0.25 for s in sig]},
                customdata=np.stack([group["latent"], group["in_top_k"]], -1),
                hovertemplate="latent %{customdata[0]}<br>in top-k %{customdata[1]}"
                f"<br>{effect} %{{x}}<br>-log10 p %{{y}}<extra>{name}</extra>",
            )
        )  # fmt: skip
    fig.update_layout(title=title, xaxis_title=effect, yaxis_title=f"-log10 {p}", height=450)
    return fig
