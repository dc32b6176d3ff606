"""Sphinx hooks for the saebook site, loaded through ``sphinx.local_extensions`` in _config.yml.

1. plotly.js: copies ``plotly.min.js`` from the installed plotly package (the exact version
   that produced the figures) into ``_build/html/_static/`` under a versioned name, and links
   it, without ``defer``, only from pages that contain a plotly figure div. Nothing large is
   committed and the site plots without internet access.
2. Renderer: sets ``SAEBOOK_PLOTLY_RENDERER=saebook_site`` for HTML builds. Kernels that
   myst-nb starts inherit it, so ``saebook.display.configure_plotly()`` emits plain HTML
   figures there (no plotly JSON mime part for myst-nb to skip, no MathJax 2 from a CDN).
3. Profile: ``SAEBOOK_PROFILE`` (default ``tiny``) becomes the Sphinx config value
   ``saebook_profile`` (a change re-reads every page instead of reusing the doctrees of
   another profile) and, unless ``execute.cache`` is set, picks a per-profile execution
   cache ``_build/.jupyter_cache/<profile>`` (jupyter-cache keys only on cell sources).
4. Execution data of pre-executed chapters: a site assembled from notebooks executed in
   separate jobs (``book/_ext/chapters.py``) builds with execution off, so myst-nb records no
   run times; the ``saebook_execution`` metadata those jobs wrote is handed to myst-nb
   instead, and the ``nb-exec-table`` of the appendix lists them as usual.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from chapters import EXECUTION_KEY  # book/_ext is on sys.path as the local extension dir
from sphinx.application import Sphinx
from sphinx.config import Config

from saebook.display import PLOTLY_DIV_CLASS, RENDERER_ENV, SITE_RENDERER


def _plotly_bundle() -> tuple[Path, str]:
    """Path of the installed plotly.min.js and the versioned name it is served under."""
    import plotly
    from plotly.offline import get_plotlyjs_version

    source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return source, f"plotly-{get_plotlyjs_version()}.min.js"


def _on_config_inited(app: Sphinx, config: Config) -> None:
    profile = os.environ.get("SAEBOOK_PROFILE", "").strip() or "tiny"
    os.environ["SAEBOOK_PROFILE"] = profile  # the kernels run what the cache is keyed on
    config.saebook_profile = profile
    if not config.nb_execution_cache_path:
        cache = Path(app.outdir).parent / ".jupyter_cache" / profile
        config.nb_execution_cache_path = str(cache)


def _on_builder_inited(app: Sphinx) -> None:
    if app.builder.format != "html":
        return
    os.environ[RENDERER_ENV] = SITE_RENDERER
    source, name = _plotly_bundle()
    target = Path(app.outdir) / "_static" / name
    if not target.exists() or target.stat().st_size != source.stat().st_size:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    app.config.saebook_plotly_js = name


def _on_html_page_context(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    if PLOTLY_DIV_CLASS in context.get("body", ""):
        # per-page asset: Sphinx resets the page's JS list after writing it
        app.add_js_file(app.config.saebook_plotly_js)


def _on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    from myst_nb.sphinx_ import NbMetadataCollector

    data = json.loads(source[0]).get("metadata", {}).get(EXECUTION_KEY)
    if data and NbMetadataCollector.get_exec_data(app.env, docname) is None:
        NbMetadataCollector.set_exec_data(app.env, docname, data)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("saebook_profile", "tiny", "env", types=[str])
    app.add_config_value("saebook_plotly_js", "", "", types=[str])
    # myst-nb reads its configuration on builder-inited, so this must run before it
    app.connect("config-inited", _on_config_inited, priority=400)
    app.connect("builder-inited", _on_builder_inited)
    app.connect("html-page-context", _on_html_page_context)
    app.connect("source-read", _on_source_read)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
