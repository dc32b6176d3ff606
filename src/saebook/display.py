"""Display helpers for the book's notebooks.

The same chapter runs in three places, and each wants figures and tables delivered
differently:

* the built HTML site (executed by myst-nb during ``jupyter-book build``): outputs must be
  plain ``text/html`` whose scripts use the plotly.js bundle that the site serves from its own
  ``_static`` folder, so pages work without internet access;
* Jupyter (Lab, Notebook 7, classic) and VS Code: the richest renderer the frontend has;
* Google Colab, which has its own plotly renderer and no ``myst_nb``.

Everything here degrades to plain text when IPython is not available (e.g. in a script).
"""

from __future__ import annotations

import html
import importlib.util
import os
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "RENDERER_ENV",
    "SITE_RENDERER",
    "banner",
    "configure_plotly",
    "glue",
    "in_colab",
    "reference_table",
    "show_table",
]

#: Where ``make test`` writes the rows of "How this book checks itself" (tests/conftest.py).
REFERENCE_CHECKS = "_build/reference_checks.json"

#: Environment variable that forces a plotly renderer. The book's Sphinx extension
#: (``book/_ext/saebook_site.py``) sets it to :data:`SITE_RENDERER` for the kernels that
#: myst-nb starts during an HTML build; readers may set it to any plotly renderer name.
RENDERER_ENV = "SAEBOOK_PLOTLY_RENDERER"

#: Name under which :func:`configure_plotly` registers the site renderer with plotly.
SITE_RENDERER = "saebook_site"

#: Renderer used in Jupyter and VS Code. Frontends with a plotly mime renderer (JupyterLab,
#: Notebook 7, VS Code) draw the ``application/vnd.plotly.v1+json`` part; the classic
#: notebook falls back to the HTML part, which loads plotly.js from its CDN.
NOTEBOOK_RENDERER = "plotly_mimetype+notebook_connected"

#: Marker class that plotly puts on every figure div; the site extension looks for it to
#: decide which pages need plotly.js.
PLOTLY_DIV_CLASS = "plotly-graph-div"


def in_colab() -> bool:
    """Return True when running inside Google Colab (``google.colab`` is importable)."""
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):  # no ``google`` package, or a broken namespace
        return False


def _site_renderer_class() -> type:
    """Build the site renderer class lazily, so importing this module stays cheap."""
    from plotly.io._base_renderers import MimetypeRenderer

    class SiteRenderer(MimetypeRenderer):
        """Emit only ``text/html``: the figure div plus a ``Plotly.newPlot`` call.

        No plotly.js (the page links the copy in ``_static``), no MathJax (the site loads
        MathJax 3 itself; plotly's default injects MathJax 2 from a CDN, which clashes),
        and no plotly JSON mime part (myst-nb cannot render it and would warn).
        """

        def __init__(self, height: int = 450) -> None:
            self.height = height

        def to_mimebundle(self, fig_dict: dict) -> dict[str, str]:
            from plotly.io import to_html

            page = to_html(
                fig_dict,
                include_plotlyjs=False,
                include_mathjax=False,
                full_html=False,
                default_width="100%",
                default_height=self.height,
                config={"responsive": True, "displaylogo": False},
                validate=False,
            )
            return {"text/html": page}

    return SiteRenderer


def configure_plotly(renderer: str | None = None) -> str:
    """Select the plotly renderer for the current environment and return its name.

    The choice, first match wins:

    1. ``renderer`` if given;
    2. the ``SAEBOOK_PLOTLY_RENDERER`` environment variable (the site build sets it to
       ``"saebook_site"``, see below);
    3. ``"colab"`` when ``google.colab`` is importable;
    4. ``"plotly_mimetype+notebook_connected"`` otherwise (Jupyter, VS Code, nbclient).

    ``"saebook_site"`` is registered here: it emits a single ``text/html`` output with the
    figure's ``<div class="plotly-graph-div">`` and a script calling ``Plotly.newPlot``. It
    relies on the page having loaded plotly.js already, which the book's Sphinx extension
    arranges by copying ``plotly.min.js`` from the installed plotly package into the site's
    ``_static`` folder and linking it from every page that contains a figure div.

    Args:
        renderer: a plotly renderer name (or ``"a+b"`` combination) to force.

    Returns:
        The renderer name now set as ``plotly.io.renderers.default``.
    """
    import plotly.io as pio

    if SITE_RENDERER not in pio.renderers:
        pio.renderers[SITE_RENDERER] = _site_renderer_class()()

    chosen = renderer or os.environ.get(RENDERER_ENV, "").strip()
    if not chosen:
        chosen = "colab" if in_colab() else NOTEBOOK_RENDERER
    unknown = [part for part in chosen.split("+") if part not in pio.renderers]
    if unknown:
        source = "renderer" if renderer else RENDERER_ENV
        raise ValueError(
            f"{source} must name plotly renderers (one of {sorted(pio.renderers)}, joined "
            f"by '+'), got {chosen!r}"
        )
    pio.renderers.default = chosen  # validates the name, raising ValueError if unknown
    return chosen


def _display_bundle(bundle: Mapping[str, str]) -> None:
    """Display a raw mime bundle, or print its text part outside IPython."""
    try:
        from IPython.display import display as ipy_display
    except ImportError:  # pragma: no cover - IPython ships with every notebook kernel
        print(bundle.get("text/plain", ""))
        return
    ipy_display(dict(bundle), raw=True)


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for ``{glue:text}``/``{glue}`` roles in the prose.

    Calls :func:`myst_nb.glue` when myst-nb is importable (the site build, Jupyter with the
    book's requirements); the value then appears where the prose cites it, and as a cell
    output too only with ``display``. Without myst-nb (Colab) the prose cannot show it, so
    ``name = value`` is always displayed.

    Args:
        name: the key used by the roles, unique within the chapter.
        value: any object with a rich or plain-text representation.
        display: also show the value as a cell output in builds with myst-nb.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        myst_glue = None
    if myst_glue is not None:
        myst_glue(name, value, display=display)
        return
    _display_bundle({"text/plain": f"{name} = {value}"})


_BANNER_STYLE = (
    "border:1px solid #8a8fa0;border-left:6px solid #4c72b0;border-radius:4px;"
    "padding:6px 10px;margin:4px 0;font-size:0.9em;line-height:1.45;"
)


def banner(profile: str, model: str, saes: dict[str, str], device: str) -> None:
    """Display a compact box saying what this chapter runs on.

    Shown as HTML (a bordered box readable on light and dark themes) with a plain-text
    fallback for terminals and text-only frontends.

    Args:
        profile: the profile name (``tiny``, ``gpt2``, ``gemma``, ...).
        model: a short description of the language model.
        saes: role (``resid``, ``attn``, ...) -> short description of the SAE in that role.
        device: where tensors live (``cpu``, ``cuda``, ...).
    """
    esc = html.escape
    rows = "".join(
        f"<li><code>{esc(str(role))}</code>: {esc(str(desc))}</li>" for role, desc in saes.items()
    )
    sae_html = f"<ul style='margin:2px 0 0 1.2em;padding:0'>{rows}</ul>" if rows else " none"
    page = (
        f"<div class='saebook-banner' style='{_BANNER_STYLE}'>"
        f"<b>saebook</b> &middot; profile <code>{esc(profile)}</code> &middot; "
        f"device <code>{esc(device)}</code><br>"
        f"<b>Model:</b> {esc(model)}<br>"
        f"<b>SAEs:</b>{sae_html}</div>"
    )
    lines = [f"saebook | profile: {profile} | device: {device}", f"model: {model}", "SAEs:"]
    lines += [f"  {role}: {desc}" for role, desc in saes.items()] or ["  none"]
    _display_bundle({"text/html": page, "text/plain": "\n".join(lines)})


def _to_frame(df_or_rows: Any, columns: Iterable[str] | None = None) -> Any:
    """Coerce a DataFrame, Series, dict of columns or sequence of rows to a DataFrame."""
    import pandas as pd

    if isinstance(df_or_rows, (str, bytes)) or not isinstance(df_or_rows, Iterable):
        raise TypeError(
            "df_or_rows must be a DataFrame, Series, mapping of columns or sequence of rows, "
            f"got {type(df_or_rows).__name__}"
        )
    if isinstance(df_or_rows, pd.DataFrame):
        return df_or_rows
    if isinstance(df_or_rows, pd.Series):
        return df_or_rows.to_frame()
    cols = list(columns) if columns is not None else None
    if isinstance(df_or_rows, Mapping):
        return pd.DataFrame(dict(df_or_rows), columns=cols)
    return pd.DataFrame(list(df_or_rows), columns=cols)


def show_table(
    df_or_rows: Any,
    caption: str | None = None,
    *,
    columns: Iterable[str] | None = None,
    index: bool = False,
    digits: int = 4,
    max_rows: int = 60,
) -> None:
    """Display a small table as HTML (with a plain-text fallback).

    Args:
        df_or_rows: a ``pandas.DataFrame`` or ``Series``, a mapping of column -> values, or
            a sequence of rows (dicts, or tuples together with ``columns``).
        caption: optional caption shown above the table.
        columns: column names when ``df_or_rows`` is a sequence of tuples.
        index: show the DataFrame index.
        digits: significant digits for floats.
        max_rows: rows beyond this are elided (pandas shows the head and tail).
    """
    frame = _to_frame(df_or_rows, columns)

    def fmt(x: float) -> str:
        return f"{x:.{digits}g}"

    table = frame.to_html(
        index=index,
        border=0,
        classes=["saebook-table"],
        float_format=fmt,
        max_rows=max_rows,
        escape=True,
    )
    text = frame.to_string(index=index, float_format=fmt, max_rows=max_rows)
    if caption:
        cap = f"<caption style='caption-side:top'>{html.escape(caption)}</caption>"
        table = table.replace(">", ">" + cap, 1)  # right after the opening <table ...>
        text = f"{caption}\n{text}"
    _display_bundle({"text/html": table, "text/plain": text})


def reference_table(path: str | os.PathLike | None = None) -> Any:
    """The rows the tests recorded in ``_build/reference_checks.json``, as a DataFrame.

    One row per (technique, quantity): ``technique``, ``reference`` (the independent
    reference it was compared with), ``quantity``, ``measured`` (the agreement on the profile
    the tests ran on), ``tolerance`` (what the test asserts), ``result`` ("pass"/"FAIL"),
    ``test`` (the pytest node id) and ``recorded`` (UTC time); sorted by technique. ``path``
    defaults to :data:`REFERENCE_CHECKS` in the current directory or the nearest parent that
    has it. Returns None when there is no such file (the tests have not run here); raises
    ValueError naming the file when it holds no ``rows`` list.
    """
    import json
    from pathlib import Path

    import pandas as pd

    if path is None:
        here = Path.cwd().resolve()
        found = [d / REFERENCE_CHECKS for d in (here, *here.parents)]
        path = next((f for f in found if f.is_file()), found[0])
    path = Path(path)
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"{path} must hold {{'rows': [...]}} as tests/conftest.py writes it")
    columns = ["technique", "reference", "quantity", "measured", "tolerance", "result", "test",
               "recorded"]
    frame = pd.DataFrame(
        [{**r, "result": "pass" if r.get("ok") else "FAIL"} for r in rows],
        columns=[*columns, "note"],
    )
    frame = frame.sort_values(["technique", "quantity"], kind="stable").reset_index(drop=True)
    return frame[columns + (["note"] if frame["note"].fillna("").astype(bool).any() else [])]
