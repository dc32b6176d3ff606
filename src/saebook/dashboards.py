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
40-80 kB. Nothing here runs the model once per latent: the only forward pass a dashboard
makes is over the few rows that hold its examples.
"""

from __future__ import annotations

import html
import itertools
import json
import math
import socket
from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from saebook.directions import check_latent, decoder_directions, logit_effects
from saebook.latent_stats import Example, LatentStats, latent_activations
from saebook.validate import check_int

__all__ = [
    "Dashboard",
    "latent_logits",
    "top_logits",
    "logit_table",
    "latent_dashboard",
    "show_dashboard",
    "density_histogram",
    "neuronpedia_embed",
    "NEURONPEDIA_HOST",
]

NEURONPEDIA_HOST = ("www.neuronpedia.org", 443)


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


_TOKEN_CACHE: dict[tuple[object, int], str] = {}  # (tokenizer, id) -> text; holds the tokenizer


def _token_str(model: HookedSAETransformer, token: int) -> str:
    tok = model.tokenizer
    key = (tok, token)
    if key not in _TOKEN_CACHE:
        text = None if tok is None else tok.decode([token], clean_up_tokenization_spaces=False)
        _TOKEN_CACHE[key] = str(token) if text is None else text
    return _TOKEN_CACHE[key]


def logit_table(model: HookedSAETransformer, sae: SAE, latent: int, k: int = 10) -> pd.DataFrame:
    """The ``k`` tokens whose logits ``latent`` raises most and lowers most, side by side."""
    up, up_ids = top_logits(model, sae, latent, k, largest=True)
    down, down_ids = top_logits(model, sae, latent, k, largest=False)
    return pd.DataFrame(
        {
            "promoted": [_token_str(model, int(i)) for i in up_ids],
            "logit +": up.numpy(),
            "suppressed": [_token_str(model, int(i)) for i in down_ids],
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
    density = float(stats.density[latent])
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


def _logit_plot(logits: Tensor, n_bins: int = 50) -> tuple[dict, dict, list, list]:
    lo, hi = float(logits.min()), float(logits.max())
    if hi <= lo:
        hi = lo + 1e-6
    counts = torch.histc(logits.float(), bins=n_bins, min=lo, max=hi)
    width = (hi - lo) / n_bins
    centers = [lo + (i + 0.5) * width for i in range(n_bins)]
    colours = ["#c0392b" if c < 0 else "#2e86c1" for c in centers]
    data = {
        "type": "bar",
        "x": [_r(c) for c in centers],
        "y": [int(c) for c in counts.tolist()],
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
    logits: pd.DataFrame
    top: list[Example]
    intervals: list
    html: str = field(repr=False)
    figure_specs: dict[str, tuple[dict, dict]] = field(repr=False, default_factory=dict)

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


def latent_dashboard(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, "rows seq"],
    stats: LatentStats,
    latent: int,
    *,
    n_top: int = 10,
    n_intervals: int = 4,
    per_interval: int = 4,
    context: tuple[int, int] = (12, 4),
    n_logits: int = 10,
) -> Dashboard:
    """The dashboard of ``latent``, from ``stats`` computed by ``latent_stats`` on ``tokens``.

    Args:
        n_top: top activating examples shown (at most the ``k`` of the stats).
        n_intervals: quantile slices of the activation distribution to sample from.
        per_interval: examples shown per slice.
        context: tokens shown before and after each example's token.
        n_logits: promoted and suppressed tokens listed.
    """
    latent = check_latent(sae, latent)
    _check_stats(model, sae, tokens, stats)
    before, after = context
    if min(before, after) < 0:
        raise ValueError(f"context must be two non-negative ints (before, after), got {context!r}")
    check_int("n_top", n_top, minimum=0)
    check_int("n_intervals", n_intervals)
    check_int("per_interval", per_interval)
    check_int("n_logits", n_logits)

    top = stats.top_examples(latent, n_top)
    intervals = []
    for interval in stats.quantile_examples(latent, n_intervals):
        ex = interval.examples
        step = max(1, len(ex) // per_interval)
        intervals.append((interval, ex[::step][:per_interval]))
    shown = top + [e for _, ex in intervals for e in ex]
    rows = sorted({e.row for e in shown})
    acts = (
        latent_activations(model, sae, tokens[rows], [latent])[..., 0]
        if rows
        else torch.zeros(0, tokens.shape[1])
    )
    row_of = {r: i for i, r in enumerate(rows)}
    token_rows = tokens[rows].tolist() if rows else []
    top_act = float(stats.max[latent])

    def render(example: Example) -> str:
        i = row_of[example.row]
        lo, hi = max(0, example.pos - before), min(tokens.shape[1], example.pos + after + 1)
        spans = []
        for p in range(lo, hi):
            tok = _token_str(model, token_rows[i][p])
            a = float(acts[i, p])
            cls = [f"a{_shade(a, top_act)}"] if a > 0 else []
            if p == example.pos:
                cls.append("hi")
            tip = html.escape(f"{tok!r} · act {a:.3g} · row {example.row}, pos {p}", quote=True)
            attr = f" class='{' '.join(cls)}'" if cls else ""
            spans.append(f"<span{attr} title='{tip}'>{html.escape(_visible(tok))}</span>")
        return f"<div class='ex'><span class='v'>{example.value:.3g}</span>{''.join(spans)}</div>"

    logits = latent_logits(model, sae, latent)
    k_logits = min(n_logits, logits.numel())
    table = logit_table(model, sae, latent, k_logits)
    act_data, act_layout, act_h, act_l = _activation_plot(stats, latent)
    lg_data, lg_layout, lg_h, lg_l = _logit_plot(logits)
    specs = {
        "activations": (act_data, {**act_layout, "height": 300}),
        "logits": (lg_data, {**lg_layout, "height": 300}),
    }

    uid = f"sbd{next(_IDS)}-{latent}"
    density = float(stats.density[latent])
    mean = float(stats.mean_activation[latent])
    esc = html.escape
    parts = [
        f"<div class='sbd' id='{uid}'><style>{_CSS}</style>",
        f"<h4>Latent {latent}</h4>",
        f"<div class='sbd-meta'>{esc(stats.hook_name)} · d_sae {stats.d_sae:,} · fires on "
        f"{int(stats.count[latent]):,} of {stats.n_tokens:,} positions ({density:.3%}) · "
        f"mean {mean:.3g} · max {top_act:.3g}</div>",
        "<div class='sbd-row'>",
        _figure_html(f"{uid}-a", act_data, act_layout,
                     _svg_bars(act_h, act_l, "#e67e22"), act_layout["title"]["text"]),
        _figure_html(f"{uid}-l", lg_data, lg_layout,
                     _svg_bars(lg_h, lg_l, "#7f8c8d"), lg_layout["title"]["text"]),
        "</div>",
    ]  # fmt: skip
    rows_html = "".join(
        f"<tr><td>{esc(repr(r['promoted']))}</td><td class='n up'>{r['logit +']:+.3f}</td>"
        f"<td>{esc(repr(r['suppressed']))}</td><td class='n dn'>{r['logit -']:+.3f}</td></tr>"
        for r in table.to_dict("records")
    )
    parts.append(
        "<h5>Direct logit effects (decoder direction · W_U)</h5><table><tr><th>promoted</th>"
        f"<th></th><th>suppressed</th><th></th></tr>{rows_html}</table>"
    )
    parts.append(f"<h5>Top {len(top)} activations</h5>")
    if top:
        parts.extend(render(e) for e in top)
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
            parts.extend(render(e) for e in examples)
    parts.append(_plot_script(uid) + "</div>")
    return Dashboard(
        latent=latent,
        hook_name=stats.hook_name,
        density=density,
        mean_activation=mean,
        max_activation=top_act,
        logits=table,
        top=top,
        intervals=[i for i, _ in intervals],
        html="".join(parts),
        figure_specs=specs,
    )


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
    try:
        socket.create_connection(host, timeout=timeout).close()
    except OSError:
        return False
    return True


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
