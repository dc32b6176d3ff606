"""Latent dashboards: what makes a latent fire, and what it writes to the logits.

A dashboard for one latent combines

* its activation histogram and firing density (from a :class:`~saebook.latent_stats.LatentStats`
  computed once for all latents);
* the direct effect of its decoder direction on the logits: the direction is taken to the
  residual stream (through ``W_O`` for a ``hook_z`` SAE, through ``W_out`` for an MLP
  ``hook_post`` SAE; a transcoder already writes the MLP output) and multiplied by the
  unembedding ``W_U`` through the final LayerNorm's weight and centring, ignoring its scale;
* its top activating contexts and a uniform sample of contexts split by activation quantile,
  each token shaded by the latent's activation there, with the details on hover.

:func:`latent_dashboard` returns a :class:`Dashboard` whose :meth:`~Dashboard.to_html` is one
self-contained HTML fragment (inline CSS; the two small figures are drawn by the page's
``Plotly`` global when there is one, otherwise by an inline SVG fallback), typically
40-80 kB. Nothing here runs the model once per latent: :func:`latent_dashboards` (and
:func:`write_dashboards`, which writes one page per latent without keeping them) sends the
example rows of all requested latents through the model in one pass, and computes their logit
effects as one matrix product per chunk of latents; :func:`latent_dashboard` is the same for
one latent.

Chapters: intro/02, intro/03, intro/06, deeper/05, training/02, training/03, circuits/02,
circuits/03
"""

from __future__ import annotations

import html
import itertools
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from saebook.directions import (
    check_latent,
    decoder_directions,
    effective_unembedding,
    logit_effects,
)
from saebook.files import atomic_write_text, remove_stale_text_temporaries
from saebook.hooks import reachable
from saebook.latent_stats import Example, Interval, LatentStats, encode_at_hook
from saebook.neuronpedia import NEURONPEDIA_HOST
from saebook.validate import check_int

__all__ = [
    "Dashboard",
    "latent_logits",
    "top_logits",
    "logit_table",
    "latent_dashboard",
    "latent_dashboards",
    "write_dashboards",
    "show_dashboard",
    "density_histogram",
    "neuronpedia_embed",
    "NEURONPEDIA_HOST",
    "CONTEXT",
]

#: tokens shown before and after each example's token; pass it as ``latent_stats(...,
#: window=CONTEXT)`` and the dashboards need no second model pass
CONTEXT: tuple[int, int] = (12, 4)


# ---------------------------------------------------------------------------------------------
# Logit effects
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def latent_logits(model: HookedSAETransformer, sae: SAE, latent: int) -> Float[Tensor, " d_vocab"]:
    """Direct effect of ``latent``'s decoder direction on every logit, through the final
    LayerNorm's weight and centring (:func:`saebook.directions.logit_effects`)."""
    latent = check_latent(sae, latent)
    direction = decoder_directions(model, sae, [latent])[0]
    return logit_effects(model, direction).cpu()


def top_logits(
    model: HookedSAETransformer, sae: SAE, latent: int, k: int = 10, largest: bool = True
) -> tuple[Float[Tensor, " k"], Int[Tensor, " k"]]:
    """The ``k`` largest (or smallest) logit effects of ``latent`` and their token ids."""
    logits = latent_logits(model, sae, latent)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= logits.numel():
        raise ValueError(f"k must be an int in [1, {logits.numel()}] (d_vocab), got {k!r}")
    values, ids = logits.topk(k, largest=largest)
    return values, ids


def _token_strings(model: HookedSAETransformer, ids: Iterable[int]) -> dict[int, str]:
    """The text of each token id decoded on its own (the id itself without a tokenizer)."""
    ids = sorted(set(ids))
    tok = model.tokenizer
    if tok is None:
        return {i: str(i) for i in ids}
    texts = tok.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    return {i: str(i) if t is None else t for i, t in zip(ids, texts, strict=True)}


def logit_table(model: HookedSAETransformer, sae: SAE, latent: int, k: int = 10) -> pd.DataFrame:
    """The ``k`` tokens whose logits ``latent`` raises most and lowers most, side by side."""
    up, up_ids = top_logits(model, sae, latent, k, largest=True)
    down, down_ids = top_logits(model, sae, latent, k, largest=False)
    text = _token_strings(model, up_ids.tolist() + down_ids.tolist())
    return pd.DataFrame(
        {
            "promoted": [text[int(i)] for i in up_ids],
            "logit +": up.numpy(),
            "suppressed": [text[int(i)] for i in down_ids],
            "logit -": down.numpy(),
        }
    )


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def _r(x: float) -> float:
    """Round to 4 significant digits (keeps the inlined figure data small)."""
    return float(f"{x:.4g}") if math.isfinite(x) else 0.0


def density_histogram(stats: LatentStats, title: str | None = None) -> go.Figure:
    """Histogram of log10 firing density over all latents, dead latents counted apart."""
    if not isinstance(stats, LatentStats):
        raise TypeError(
            f"stats must be a LatentStats from latent_stats(), got {type(stats).__name__}"
        )
    density = stats.density
    alive = density[density > 0].log10().numpy()
    n_dead = int((density == 0).sum())
    fig = go.Figure(go.Histogram(x=alive, nbinsx=50, marker_color="#4c72b0"))
    fig.update_layout(
        title=title
        or f"Firing density of {stats.d_sae} latents on {stats.n_tokens:,} tokens "
        f"({n_dead} never fired, not shown)",
        xaxis_title="log10(firing density)",
        yaxis_title="latents",
        bargap=0.05,
    )
    return fig


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 tick values between ``lo`` and ``hi`` (both > 0)."""
    ticks = [
        m * 10.0**e
        for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        for m in (1, 2, 5)
    ]
    inside = [t for t in ticks if lo <= t <= hi]
    return inside if len(inside) >= 2 else [lo, hi]


def _latent_numbers(stats: LatentStats, latent: int) -> tuple[int, float, float, float]:
    """Count, density, mean activation when firing (NaN if never) and maximum of one latent:
    the entries of ``stats.density`` and ``stats.mean_activation``, computed for that latent
    only (those properties compute every latent's, once per dashboard adds up for many)."""
    count = int(stats.count[latent])
    mean = float(stats.sum[latent]) / count if count > 0 else float("nan")
    return count, count / stats.n_tokens, mean, float(stats.max[latent])


def _activation_plot(stats: LatentStats, latent: int) -> tuple[dict, dict, list, list]:
    """(data, layout, heights, labels) of one latent's activation histogram.

    The bins are log-spaced, so the bars are drawn at log10 of their centres on a linear
    axis (equal widths) with tick labels in activation units.
    """
    counts, edges = stats.latent_hist(latent)
    used = torch.nonzero(counts).flatten()
    lo, hi = (int(used[0]), int(used[-1]) + 1) if used.numel() else (0, 0)
    log_edges = edges.log10()
    centers = ((log_edges[:-1] + log_edges[1:]) / 2)[lo:hi].tolist()
    heights = counts[lo:hi].tolist()
    density = _latent_numbers(stats, latent)[1]
    step = float(log_edges[1] - log_edges[0])
    ticks = _log_ticks(float(edges[lo]), float(edges[hi])) if heights else [1.0]
    data = {
        "type": "bar",
        "x": [_r(c) for c in centers],
        "y": heights,
        "width": _r(step * 0.92),
        "marker": {"color": "#e67e22"},
        "customdata": [_r(10**c) for c in centers],
        "hovertemplate": "activation ≈ %{customdata}<br>%{y} positions<extra></extra>",
    }
    layout = {
        "title": {"text": f"Activations (density {density:.3%})", "font": {"size": 13}},
        "xaxis": {
            "title": {"text": "activation (log scale)"},
            "tickvals": [_r(math.log10(t)) for t in ticks],
            "ticktext": [f"{t:g}" for t in ticks],
        },
        "yaxis": {"title": {"text": "positions"}},
    }
    labels = [f"{_r(float(edges[lo]))}", f"{_r(float(edges[hi]))}"] if heights else ["", ""]
    return data, layout, heights, labels


def _logit_plot(counts: list[int], lo: float, hi: float) -> tuple[dict, dict, list, list]:
    """(data, layout, heights, labels) of the histogram of one latent's logit effects."""
    n_bins = len(counts)
    width = (hi - lo) / n_bins
    centers = [lo + (i + 0.5) * width for i in range(n_bins)]
    colours = ["#c0392b" if c < 0 else "#2e86c1" for c in centers]
    data = {
        "type": "bar",
        "x": [_r(c) for c in centers],
        "y": list(counts),
        "marker": {"color": colours},
        "hovertemplate": "logit effect ≈ %{x}<br>%{y} tokens<extra></extra>",
    }
    layout = {
        "title": {"text": "Logit effects over the vocabulary", "font": {"size": 13}},
        "xaxis": {"title": {"text": "direct effect on the logit"}},
        "yaxis": {"title": {"text": "tokens"}},
        "bargap": 0.05,
    }
    return data, layout, data["y"], [f"{_r(lo)}", f"{_r(hi)}"]


_PLOT_LAYOUT = {
    "height": 230,
    "margin": {"l": 50, "r": 10, "t": 35, "b": 40},
    "showlegend": False,
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "font": {"size": 11},
}


def _svg_bars(heights: list, labels: list, colour: str) -> str:
    """A dependency-free bar chart: the fallback when the page has no Plotly."""
    if not heights:
        return "<div class='sbd-note'>no data</div>"
    w, h, top = 320, 110, max(heights) or 1
    step = w / len(heights)
    bars = "".join(
        f"<rect x='{i * step:.1f}' y='{h - 95 * v / top:.1f}' width='{max(step - 1, 0.5):.1f}' "
        f"height='{95 * v / top:.1f}'/>"
        for i, v in enumerate(heights)
    )
    return (
        f"<svg class='sbd-fb' viewBox='0 0 {w} {h + 14}' width='100%'>"
        f"<g fill='{colour}'>{bars}</g>"
        f"<text x='0' y='{h + 12}' font-size='10' fill='currentColor'>{html.escape(labels[0])}"
        f"</text><text x='{w}' y='{h + 12}' font-size='10' text-anchor='end' "
        f"fill='currentColor'>{html.escape(labels[1])}</text></svg>"
    )


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

_CSS = """
.sbd{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:13px;line-height:1.5;
border:1px solid #8a8fa0;border-radius:6px;padding:10px 12px;margin:8px 0;max-width:100%}
.sbd h4{margin:.2em 0 .4em;font-size:15px}.sbd h5{margin:.8em 0 .3em;font-size:13px}
.sbd .sbd-meta{color:#6b7080;margin-bottom:6px}
.sbd .sbd-row{display:flex;flex-wrap:wrap;gap:12px}.sbd .sbd-fig{flex:1 1 300px;min-width:260px}
.sbd .sbd-ft{font-weight:600;font-size:12px;text-align:center}
.sbd table{border-collapse:collapse;font-size:12px;margin:4px 0}
.sbd td,.sbd th{padding:1px 8px;text-align:left;border-bottom:1px solid rgba(128,128,128,.25)}
.sbd td.n{text-align:right;font-variant-numeric:tabular-nums}
.sbd .up{color:#2e86c1}.sbd .dn{color:#c0392b}
.sbd .ex{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;
margin:1px 0;overflow-wrap:anywhere}
.sbd .v{display:inline-block;min-width:4.5em;color:#6b7080;font-family:system-ui,sans-serif}
.sbd .ex span[title]{border-radius:2px}
.sbd .hi{outline:1.5px solid #c0392b;font-weight:700}
.sbd .a1{background:rgba(230,126,34,.12)}.sbd .a2{background:rgba(230,126,34,.22)}
.sbd .a3{background:rgba(230,126,34,.32)}.sbd .a4{background:rgba(230,126,34,.42)}
.sbd .a5{background:rgba(230,126,34,.54)}.sbd .a6{background:rgba(230,126,34,.66)}
.sbd .a7{background:rgba(230,126,34,.8)}.sbd .a8{background:rgba(230,126,34,.95)}
.sbd .sbd-note{color:#6b7080;font-style:italic}
""".strip()

_IDS = itertools.count()


def _figure_html(fig_id: str, data: dict, layout: dict, fallback: str, title: str) -> str:
    """A figure div (drawn by :func:`_plot_script`) with its SVG fallback right after it."""
    spec = {
        "data": [data],
        "layout": {
            **_PLOT_LAYOUT,
            **{k: v for k, v in layout.items() if k != "title"},
            "margin": {**_PLOT_LAYOUT["margin"], "t": 10},
        },
    }
    payload = json.dumps(spec, separators=(",", ":")).replace("</", "<\\/")
    return (
        f"<div class='sbd-fig'><div class='sbd-ft'>{html.escape(title)}</div>"
        f"<div id='{fig_id}' class='plotly-graph-div' style='display:none;height:230px;"
        f"width:100%' data-spec='{html.escape(payload, quote=True)}'></div>{fallback}</div>"
    )


def _plot_script(root_id: str) -> str:
    """One script at the end of a dashboard: when the page has ``window.Plotly``, draw every
    figure of the dashboard (now that the whole layout exists) and hide the SVG fallbacks."""
    return (
        "<script>(function(){var P=window.Plotly,r=document.getElementById('" + root_id + "');"
        "if(!P||!r)return;r.querySelectorAll('div[data-spec]').forEach(function(d){"
        "var s=JSON.parse(d.getAttribute('data-spec'));d.style.display='block';"
        "if(d.nextElementSibling)d.nextElementSibling.style.display='none';"
        "P.newPlot(d,s.data,s.layout,{displayModeBar:false,responsive:true});});})();</script>"
    )


def _shade(value: float, top: float) -> int:
    if value <= 0 or top <= 0:
        return 0
    return max(1, min(8, math.ceil(8 * value / top)))


def _visible(text: str) -> str:
    return text.replace("\n", "↵").replace("\t", "⇥").replace("\r", "")


@dataclass
class Dashboard:
    """One latent's dashboard: numbers, plotly figures, logit table and an HTML rendering."""

    latent: int
    hook_name: str
    density: float
    mean_activation: float
    max_activation: float
    top: list[Example]
    intervals: list[Interval]
    html: str = field(repr=False)
    figure_specs: dict[str, tuple[dict, dict]] = field(repr=False, default_factory=dict)
    logit_columns: dict[str, list] = field(repr=False, default_factory=dict)

    @property
    def logits(self) -> pd.DataFrame:
        """The promoted and suppressed tokens with their direct logit effects (see
        :func:`logit_table`); built on access, like :attr:`figures`."""
        cols = self.logit_columns
        return pd.DataFrame(
            {
                "promoted": cols["promoted"],
                "logit +": np.asarray(cols["logit +"], dtype=np.float32),
                "suppressed": cols["suppressed"],
                "logit -": np.asarray(cols["logit -"], dtype=np.float32),
            }
        )

    @property
    def figures(self) -> dict[str, go.Figure]:
        """The activation histogram and the logit histogram as plotly figures.

        Built on access: plotly validates every property of a figure it constructs, which
        costs more than the rest of a dashboard, and the HTML does not need them.
        """
        return {
            name: go.Figure(data=[data], layout=layout)
            for name, (data, layout) in self.figure_specs.items()
        }

    def to_html(self) -> str:
        """The self-contained HTML fragment (inline CSS; figures via the page's Plotly)."""
        return self.html

    @property
    def size_bytes(self) -> int:
        """Size of :meth:`to_html` in UTF-8 bytes."""
        return len(self.html.encode("utf-8"))

    def _repr_html_(self) -> str:
        return self.html


def _check_stats(model, sae: SAE, tokens: Tensor, stats: LatentStats) -> None:
    if not isinstance(stats, LatentStats):
        raise TypeError(
            f"stats must be a LatentStats from latent_stats(), got {type(stats).__name__}"
        )
    if stats.d_sae != sae.cfg.d_sae or stats.hook_name != sae.cfg.metadata.hook_name:
        raise ValueError(
            f"stats must come from this SAE (d_sae {sae.cfg.d_sae} at "
            f"{sae.cfg.metadata.hook_name!r}), got stats of d_sae {stats.d_sae} at "
            f"{stats.hook_name!r}"
        )
    if not isinstance(tokens, Tensor) or tuple(tokens.shape) != (stats.n_rows, stats.seq_len):
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(
            f"tokens must be the ({stats.n_rows}, {stats.seq_len}) tensor the stats were "
            f"computed on, got {shape}"
        )


@dataclass(frozen=True)
class _Options:
    """The layout options of :func:`latent_dashboards`, checked once."""

    n_top: int = 10
    n_intervals: int = 4
    per_interval: int = 4
    context: tuple[int, int] = CONTEXT
    n_logits: int = 10
    batch_size: int = 32

    def __post_init__(self) -> None:
        ctx = self.context
        if (
            not isinstance(ctx, tuple | list)
            or len(ctx) != 2
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in ctx)
        ):
            raise ValueError(f"context must be two non-negative ints (before, after), got {ctx!r}")
        check_int("n_top", self.n_top, minimum=0)
        check_int("n_intervals", self.n_intervals)
        check_int("per_interval", self.per_interval)
        check_int("n_logits", self.n_logits)
        check_int("batch_size", self.batch_size)


# --- data: examples, the activations around them, logit effects ------------------------------


def _examples(stats: LatentStats, latent: int, opt: _Options):
    """(top examples, [(interval, its shown examples)]) of one latent."""
    top = stats.top_examples(latent, opt.n_top)
    intervals = []
    for interval in stats.quantile_examples(latent, opt.n_intervals):
        ex = interval.examples
        step = max(1, len(ex) // opt.per_interval)
        intervals.append((interval, ex[::step][: opt.per_interval]))
    return top, intervals


@torch.no_grad()
def _window_activations(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Tensor,
    wanted: Int[Tensor, "n 3"],
    context: tuple[int, int],
    batch_size: int,
) -> Float[Tensor, "n window"]:
    """Activation of latent ``l`` at positions ``pos - before .. pos + after`` of row ``r``
    for each ``(l, r, pos)`` row of ``wanted`` (0 outside the sequence).

    One pass over the rows that hold any example, ``batch_size`` rows at a time: every
    requested latent shares it, so N dashboards cost one forward pass, not N.
    """
    before, after = context
    n, seq = wanted.shape[0], tokens.shape[1]
    out = torch.zeros(n, before + after + 1)
    if n == 0:
        return out
    lat, row, pos = wanted.unbind(1)
    cols = pos[:, None] + torch.arange(-before, after + 1)
    inside = (cols >= 0) & (cols < seq)
    cols = cols.clamp(0, seq - 1)
    rows = torch.unique(row)
    local = torch.full((tokens.shape[0],), -1, dtype=torch.long)
    for start in range(0, rows.numel(), batch_size):
        chunk = rows[start : start + batch_size]
        acts = encode_at_hook(model, sae, tokens[chunk.to(tokens.device)])
        local[chunk] = torch.arange(chunk.numel())
        here = torch.nonzero(local[row] >= 0).squeeze(1)
        r = local[row[here]].to(acts.device)
        got = acts[r[:, None], cols[here].to(acts.device), lat[here, None].to(acts.device)]
        out[here] = got.float().cpu()
        local[chunk] = -1
    return out * inside


@torch.no_grad()
def _logit_summaries(
    model: HookedSAETransformer, sae: SAE, latents: list[int], k: int, n_bins: int = 50,
    chunk: int = 256,
) -> list[tuple[list, list, list, list, list[int], float, float]]:  # fmt: skip
    """Per latent: top ``k`` logit effects and ids, bottom ``k`` and ids, a histogram of all
    ``d_vocab`` effects in ``n_bins`` equal bins, and its range; ``chunk`` latents at a time
    (a chunk holds ``chunk x d_vocab`` floats)."""
    w_u = effective_unembedding(model)  # as latent_logits: see directions.logit_effects
    out = []
    for start in range(0, len(latents), chunk):
        group = latents[start : start + chunk]
        logits = decoder_directions(model, sae, group).to(w_u.device) @ w_u
        up, down = logits.topk(k, dim=1), logits.topk(k, dim=1, largest=False)
        lo, hi = logits.amin(1), logits.amax(1)
        hi = torch.where(hi > lo, hi, lo + 1e-6)
        bins = ((logits - lo[:, None]) / (hi - lo)[:, None] * n_bins).long().clamp_(0, n_bins - 1)
        counts = torch.zeros(len(group), n_bins, dtype=torch.long, device=bins.device)
        counts.scatter_add_(1, bins, torch.ones_like(bins))
        out.extend(zip(up.values.tolist(), up.indices.tolist(), down.values.tolist(),
                       down.indices.tolist(), counts.tolist(), lo.tolist(), hi.tolist(),
                       strict=True))  # fmt: skip
    return out


# --- HTML ------------------------------------------------------------------------------------


class _Tokens:
    """Escaped text and tooltip prefix of every token id a batch of dashboards shows."""

    def __init__(self, model: HookedSAETransformer, ids: Iterable[int]) -> None:
        self.text = _token_strings(model, ids)
        self.shown = {i: html.escape(_visible(t)) for i, t in self.text.items()}
        self.tip = {i: html.escape(repr(t), quote=True) for i, t in self.text.items()}


def _example_html(example: Example, acts: list[float], token_row: list[int],
                  toks: _Tokens, before: int, top_act: float) -> str:  # fmt: skip
    """One example: its context tokens, each shaded by the latent's activation there."""
    seq = len(token_row)
    lo, hi = max(0, example.pos - before), min(seq, example.pos + len(acts) - before)
    spans = []
    for p in range(lo, hi):
        tok, a = token_row[p], acts[p - example.pos + before]
        cls = f"a{_shade(a, top_act)}" if a > 0 else ""
        if p == example.pos:
            cls = f"{cls} hi" if cls else "hi"
        attr = f" class='{cls}'" if cls else ""
        tip = f"{toks.tip[tok]} · act {a:.3g} · row {example.row}, pos {p}"
        spans.append(f"<span{attr} title='{tip}'>{toks.shown[tok]}</span>")
    return f"<div class='ex'><span class='v'>{example.value:.3g}</span>{''.join(spans)}</div>"


def _logit_rows_html(cols: dict[str, list]) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(repr(p))}</td><td class='n up'>{u:+.3f}</td>"
        f"<td>{esc(repr(s))}</td><td class='n dn'>{d:+.3f}</td></tr>"
        for p, u, s, d in zip(cols["promoted"], cols["logit +"], cols["suppressed"],
                              cols["logit -"], strict=True)
    )  # fmt: skip
    return (
        "<h5>Direct logit effects (decoder direction · W_U)</h5><table><tr><th>promoted</th>"
        f"<th></th><th>suppressed</th><th></th></tr>{rows}</table>"
    )


def _dashboard_html(
    stats: LatentStats, latent: int, plots: dict, cols: dict[str, list], top: list[str],
    intervals: list[tuple[Interval, list[str]]],
) -> str:  # fmt: skip
    """The HTML fragment of one dashboard from its parts (examples already rendered)."""
    uid = f"sbd{next(_IDS)}-{latent}"
    esc = html.escape
    count, density, mean, top_act = _latent_numbers(stats, latent)
    (act_data, act_layout, act_h, act_l), (lg_data, lg_layout, lg_h, lg_l) = plots.values()
    parts = [
        f"<div class='sbd' id='{uid}'><style>{_CSS}</style>",
        f"<h4>Latent {latent}</h4>",
        f"<div class='sbd-meta'>{esc(stats.hook_name)} · d_sae {stats.d_sae:,} · fires on "
        f"{count:,} of {stats.n_tokens:,} positions ({density:.3%}) · mean {mean:.3g}"
        f" · max {top_act:.3g}</div>",
        "<div class='sbd-row'>",
        _figure_html(f"{uid}-a", act_data, act_layout,
                     _svg_bars(act_h, act_l, "#e67e22"), act_layout["title"]["text"]),
        _figure_html(f"{uid}-l", lg_data, lg_layout,
                     _svg_bars(lg_h, lg_l, "#7f8c8d"), lg_layout["title"]["text"]),
        "</div>",
        _logit_rows_html(cols),
        f"<h5>Top {len(top)} activations</h5>",
    ]  # fmt: skip
    if top:
        parts.extend(top)
    else:
        parts.append(
            f"<div class='sbd-note'>This latent never fired on the {stats.n_tokens:,} "
            "positions of the sample.</div>"
        )
    if intervals:
        parts.append("<h5>Samples across the activation distribution</h5>")
        for interval, examples in reversed(intervals):
            parts.append(
                f"<div class='sbd-meta'>quantiles {interval.q_lo:.0%}–{interval.q_hi:.0%} of "
                f"firings: activations {interval.lo:.3g}–{interval.hi:.3g}</div>"
            )
            parts.extend(examples)
    parts.append(_plot_script(uid) + "</div>")
    return "".join(parts)


# --- assembling ------------------------------------------------------------------------------


def _iter_dashboards(model, sae, tokens, stats, latents, opt: _Options,
                     chunk: int = 1024) -> Iterator[Dashboard]:  # fmt: skip
    """Dashboards of ``latents`` in order: the examples' activation windows (kept by
    ``latent_stats(window=...)``, else one model pass for all of them), then logit effects
    and HTML ``chunk`` latents at a time (memory: one chunk's pages)."""
    _check_stats(model, sae, tokens, stats)
    if isinstance(latents, Tensor):
        latents = latents.flatten().tolist()
    if isinstance(latents, int) or not isinstance(latents, Iterable):
        raise TypeError(f"latents must be a list of latent indices, got {type(latents).__name__}")
    latents = [check_latent(sae, latent, "latents[i]") for latent in latents]
    if not latents:
        raise ValueError("latents must name at least one latent, got an empty list")
    chosen = [_examples(stats, latent, opt) for latent in latents]
    wanted = [(lat, e.row, e.pos) for lat, (top, iv) in zip(latents, chosen, strict=True)
              for e in top + [e for _, ex in iv for e in ex]]  # fmt: skip
    wanted_t = torch.tensor(wanted, dtype=torch.long).view(-1, 3)
    # windows kept by the statistics pass (latent_stats(window=...)) spare a second pass
    kept = stats.windows_at(wanted_t, opt.context)
    if kept is None:
        kept = _window_activations(model, sae, tokens, wanted_t, opt.context, opt.batch_size)
    windows = kept.tolist()
    rows = sorted({r for _, r, _ in wanted})
    token_rows = dict(zip(rows, tokens[rows].tolist(), strict=True)) if rows else {}
    k_logits = min(opt.n_logits, model.cfg.d_vocab)
    done = 0
    for start in range(0, len(latents), chunk):
        group = latents[start : start + chunk]
        summaries = _logit_summaries(model, sae, group, k_logits)
        ids = {t for s in summaries for t in s[1] + s[3]}
        ids |= {t for r in rows for t in token_rows[r]}
        toks = _Tokens(model, ids)
        for latent, picked, summary in zip(group, chosen[start : start + chunk], summaries,
                                           strict=True):  # fmt: skip
            n_shown = len(picked[0]) + sum(len(ex) for _, ex in picked[1])
            acts = windows[done : done + n_shown]
            done += n_shown
            yield _one_dashboard(stats, latent, picked, acts, summary, token_rows, toks, opt)


def _one_dashboard(stats: LatentStats, latent: int, picked: tuple, acts: list[list[float]],
                   summary: tuple, token_rows: dict[int, list[int]], toks: _Tokens,
                   opt: _Options) -> Dashboard:  # fmt: skip
    """Assemble one dashboard from its examples, their activation windows (in the order top,
    then each interval's) and its logit summary."""
    top, iv = picked
    _, density, mean, top_act = _latent_numbers(stats, latent)

    def render(e: Example, a: list[float]) -> str:
        return _example_html(e, a, token_rows[e.row], toks, opt.context[0], top_act)

    html_top = [render(e, a) for e, a in zip(top, acts, strict=False)]
    rest, html_iv = acts[len(top) :], []
    for interval, ex in iv:
        html_iv.append((interval, [render(e, a) for e, a in zip(ex, rest, strict=False)]))
        rest = rest[len(ex) :]
    up, up_ids, down, down_ids, counts, lo, hi = summary
    cols = {"promoted": [toks.text[i] for i in up_ids], "logit +": up,
            "suppressed": [toks.text[i] for i in down_ids], "logit -": down}  # fmt: skip
    act_plot, lg_plot = _activation_plot(stats, latent), _logit_plot(counts, lo, hi)
    page = _dashboard_html(stats, latent, {"a": act_plot, "l": lg_plot}, cols, html_top, html_iv)
    return Dashboard(
        latent=latent,
        hook_name=stats.hook_name,
        density=density,
        mean_activation=mean,
        max_activation=top_act,
        top=top,
        intervals=[i for i, _ in iv],
        html=page,
        figure_specs={
            "activations": (act_plot[0], {**act_plot[1], "height": 300}),
            "logits": (lg_plot[0], {**lg_plot[1], "height": 300}),
        },
        logit_columns=cols,
    )


def latent_dashboards(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, "rows seq"],
    stats: LatentStats,
    latents: list[int] | Int[Tensor, " n"],
    *,
    n_top: int = 10,
    n_intervals: int = 4,
    per_interval: int = 4,
    context: tuple[int, int] = CONTEXT,
    n_logits: int = 10,
    batch_size: int = 32,
) -> list[Dashboard]:
    """The dashboards of ``latents``, from ``stats`` computed by ``latent_stats`` on ``tokens``.

    When ``stats`` kept activation windows covering ``context`` (``latent_stats(...,
    window=context)``), the examples need no model pass at all; otherwise the example rows of
    all the latents go through the model together (one pass over the rows that hold any
    example, ``batch_size`` rows at a time). The logit effects are one matrix product per
    chunk of latents, so N dashboards cost far less than N single ones.
    For many latents prefer :func:`write_dashboards`, which does not keep every page.

    Args:
        n_top: top activating examples shown (at most the ``k`` of the stats).
        n_intervals: quantile slices of the activation distribution to sample from.
        per_interval: examples shown per slice.
        context: tokens shown before and after each example's token.
        n_logits: promoted and suppressed tokens listed.
        batch_size: rows per forward pass over the example rows.
    """
    opt = _Options(n_top, n_intervals, per_interval, tuple(context), n_logits, batch_size)
    return list(_iter_dashboards(model, sae, tokens, stats, latents, opt))


def latent_dashboard(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, "rows seq"],
    stats: LatentStats,
    latent: int,
    **options,
) -> Dashboard:
    """The dashboard of one ``latent``; ``options`` as for :func:`latent_dashboards`."""
    latent = check_latent(sae, latent)
    return latent_dashboards(model, sae, tokens, stats, [latent], **options)[0]


def write_dashboards(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, "rows seq"],
    stats: LatentStats,
    latents: list[int] | Int[Tensor, " n"],
    folder: str | Path,
    *,
    chunk: int = 1024,
    **options,
) -> list[Path]:
    """Write one standalone HTML page per latent (``latent_<i>.html``) into ``folder``.

    Same work as :func:`latent_dashboards` (``options`` as there), but each page is written as
    soon as it is built, so memory holds ``chunk`` pages at most. Returns the paths, in the
    order of ``latents``.
    """
    check_int("chunk", chunk)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    opt = _Options(**{**options, "context": tuple(options.get("context", CONTEXT))})
    paths = []
    if isinstance(latents, Tensor):
        latents = latents.flatten().tolist()
    elif isinstance(latents, Iterable) and not isinstance(latents, str | bytes):
        latents = list(latents)  # read once here, once by _iter_dashboards (which checks it)
    if isinstance(latents, list):  # one sweep of killed writers' temporaries for all pages
        remove_stale_text_temporaries(folder, {f"latent_{lat}.html" for lat in latents})
    for dash in _iter_dashboards(model, sae, tokens, stats, latents, opt, chunk):
        path = folder / f"latent_{dash.latent}.html"
        atomic_write_text(
            path,
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>Latent {dash.latent} · {html.escape(dash.hook_name)}</title></head>"
            f"<body>{dash.html}</body></html>",
            clean=False,  # swept once above
        )
        paths.append(path)
    return paths


def show_dashboard(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, "rows seq"],
    stats: LatentStats,
    latent: int,
    **kwargs,
) -> Dashboard:
    """Build :func:`latent_dashboard` and display it (HTML, with a text fallback); return it."""
    dash = latent_dashboard(model, sae, tokens, stats, latent, **kwargs)
    text = (
        f"latent {latent} @ {dash.hook_name}: density {dash.density:.3%}, "
        f"mean {dash.mean_activation:.3g}, max {dash.max_activation:.3g}\n"
        + dash.logits.to_string(index=False)
    )
    try:
        from IPython.display import display
    except ImportError:  # pragma: no cover
        print(text)
        return dash
    display({"text/html": dash.html, "text/plain": text}, raw=True)
    return dash


# ---------------------------------------------------------------------------------------------
# Neuronpedia
# ---------------------------------------------------------------------------------------------


def _reachable(host: tuple[str, int], timeout: float = 2.0) -> bool:
    """:func:`saebook.hooks.reachable` (a name the tests and :mod:`saebook.steering` patch)."""
    return reachable(host, timeout)


def neuronpedia_embed(sae: SAE, latent: int, height: int = 360) -> str:
    """An ``<iframe>`` of the latent's Neuronpedia page, or a one-line notice saying why not.

    The iframe comes back only when the SAE has ``cfg.metadata.neuronpedia_id`` and
    neuronpedia.org answers within 2 s; otherwise the notice (never an exception).
    """
    latent = check_latent(sae, latent)
    np_id = sae.cfg.metadata.neuronpedia_id
    if not np_id:
        return (
            f"No Neuronpedia page for latent {latent}: this SAE has no "
            "cfg.metadata.neuronpedia_id (its dashboards here are computed locally)."
        )
    if not _reachable(NEURONPEDIA_HOST):
        return (
            f"Neuronpedia ({NEURONPEDIA_HOST[0]}) is not reachable from this machine; "
            f"latent {latent} of {np_id} is at https://{NEURONPEDIA_HOST[0]}/{np_id}/{latent}."
        )
    url = (
        f"https://{NEURONPEDIA_HOST[0]}/{html.escape(np_id)}/{latent}?embed=true"
        "&embedexplanation=true&embedplots=true&embedtest=true"
    )
    return (
        f"<iframe src='{url}' title='Neuronpedia: {html.escape(np_id)} latent {latent}' "
        f"style='width:100%;height:{int(height)}px;border:1px solid #8a8fa0;border-radius:6px' "
        "loading='lazy'></iframe>"
    )
