"""The site assembled from separately executed chapters: the GPU build's fan-out, on CPU.

nbmake executes every chapter under the tiny profile (tests/chapter_runner.py) and leaves the
executed notebooks in `_build/executed/`; here `book/_ext/chapters.py assemble` builds the site from
them with execution off and warnings as errors, as the site workflow's last job does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "_build" / "executed"
OUT = ROOT / "_build" / "assembled"  # the site_html fixture (conftest.py) builds it here

from chapters import EXECUTION_KEY, site_chapters, stage_book  # noqa: E402


@pytest.fixture(scope="module")
def site(site_html: Path) -> tuple[Path, dict[str, dict]]:
    if os.environ.get("SAEBOOK_SITE_HTML"):
        pytest.skip("SAEBOOK_SITE_HTML points at another site; these tests check the assembled one")
    executions = {
        entry: json.loads((EXECUTED / f"{entry}.ipynb").read_text(encoding="utf-8"))["metadata"][
            EXECUTION_KEY
        ]
        for entry in site_chapters()
    }
    return site_html, executions


def test_stage_book_names_missing_chapters(tmp_path: Path) -> None:
    (tmp_path / "executed").mkdir()
    with pytest.raises(FileNotFoundError, match="executed must hold a notebook per chapter"):
        stage_book(tmp_path / "executed", tmp_path / "stage")


def test_every_chapter_page_is_built_from_its_executed_notebook(site) -> None:
    html, executions = site
    for entry in executions:
        page = html / f"{entry}.html"
        assert page.is_file(), f"no page for {entry}"
        text = page.read_text(encoding="utf-8")
        assert "profile" in text and "tiny" in text, f"{entry}: the setup banner is missing"
    log = (OUT / "build.log").read_text(encoding="utf-8")
    assert "Executing" not in log, "the assembly build executed a notebook"


def test_figures_load_plotly_from_the_site(site) -> None:
    html, executions = site
    pages = [html / f"{e}.html" for e in executions]
    with_figures = [p for p in pages if "plotly-graph-div" in p.read_text(encoding="utf-8")]
    assert with_figures, "no chapter page has a plotly figure"
    for page in with_figures:
        assert "_static/plotly-" in page.read_text(encoding="utf-8"), f"{page}: no plotly.js"


def test_execution_table_lists_every_chapter(site) -> None:
    html, executions = site
    table = (html / "book" / "appendix" / "execution_times.html").read_text(encoding="utf-8")
    for entry in executions:
        assert entry in table, f"{entry} missing from the execution-times table"
    assert "nbmake (tiny)" in table


def test_circuitsvis_widgets_use_the_served_bundle() -> None:
    import circuitsvis
    import saebook_site
    from circuitsvis.utils.render import render_cdn, render_local

    pattern = torch.rand(1, 3, 3).tril()
    for html in (
        render_local("AttentionPatterns", tokens=["a", "b", "c"], attention=pattern),
        render_cdn("AttentionPatterns", tokens=["a", "b", "c"], attention=pattern),
    ):
        served = saebook_site.serve_circuitsvis(html)
        assert len(served) < 5_000 < len(html) or "unpkg.com" in html, len(served)
        assert "unpkg.com" not in served
        assert "CircuitsVis.render(" in served and "CircuitsVis.AttentionPatterns" in served
    assert circuitsvis.__version__ in saebook_site._circuitsvis_bundle()[1]
