"""Display helpers and the chapter set-up call."""

from __future__ import annotations

import builtins
import sys

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch

from saebook import display


@pytest.fixture
def shown(monkeypatch):
    """Capture what display helpers hand to IPython (raw mime bundles)."""
    bundles = []
    monkeypatch.setattr(display, "_display_bundle", bundles.append)
    return bundles


def test_configure_plotly_order_of_choice(monkeypatch):
    monkeypatch.delenv(display.RENDERER_ENV, raising=False)
    monkeypatch.setattr(display, "in_colab", lambda: False)
    assert display.configure_plotly() == display.NOTEBOOK_RENDERER
    monkeypatch.setattr(display, "in_colab", lambda: True)
    assert display.configure_plotly() == "colab"
    monkeypatch.setenv(display.RENDERER_ENV, display.SITE_RENDERER)
    assert display.configure_plotly() == display.SITE_RENDERER
    assert display.configure_plotly("json") == "json"
    with pytest.raises(ValueError):
        display.configure_plotly("no-such-renderer")


def test_site_renderer_emits_only_html_without_external_scripts():
    display.configure_plotly(display.SITE_RENDERER)
    bundle = pio.renderers[display.SITE_RENDERER].to_mimebundle(
        go.Figure(go.Bar(x=[1, 2], y=[3, 4])).to_dict()
    )
    assert list(bundle) == ["text/html"]
    html = bundle["text/html"]
    assert display.PLOTLY_DIV_CLASS in html and "Plotly.newPlot" in html
    assert "<script src=" not in html and "cdn" not in html.lower()


def test_glue_without_myst_nb_shows_the_value(monkeypatch, shown):
    real_import = builtins.__import__

    def no_myst(name, *args, **kwargs):
        if name == "myst_nb":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "myst_nb", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_myst)
    display.glue("answer", 42)
    assert shown == [{"text/plain": "answer = 42"}]


def test_banner_names_profile_model_saes_and_device(shown):
    display.banner("tiny", "saebook-tiny", {"resid": "topk x2048"}, "cpu")
    html, text = shown[0]["text/html"], shown[0]["text/plain"]
    for part in ("tiny", "saebook-tiny", "resid", "topk x2048", "cpu"):
        assert part in html and part in text


def test_show_table_has_caption_and_escapes(shown):
    display.show_table(pd.DataFrame({"a": ["<b>"], "b": [1.23456]}), caption="Cap & more")
    html = shown[0]["text/html"]
    assert "<caption" in html and "Cap &amp; more" in html
    assert "&lt;b&gt;" in html and "1.235" in html


def test_setup_seeds_and_returns_the_tiny_profile(monkeypatch, shown):
    import saebook

    monkeypatch.delenv("SAEBOOK_PROFILE", raising=False)
    profile = saebook.setup(seed=3)
    first = torch.rand(3)
    assert profile.name == "tiny" and "resid" in profile.saes
    saebook.setup(seed=3, show=False)
    assert torch.equal(first, torch.rand(3))
    assert any("tiny" in b.get("text/plain", "") for b in shown)  # the banner was shown once
    assert len(shown) == 1


def test_setup_threads_follow_saebook_threads(monkeypatch, shown):
    import saebook

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("SAEBOOK_THREADS", "1")
        saebook.setup(show=False)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("SAEBOOK_THREADS", "two")
        with pytest.raises(ValueError, match="SAEBOOK_THREADS must be a positive integer.*'two'"):
            saebook.setup(show=False)
    finally:
        torch.set_num_threads(before)


def test_reference_table_reads_the_rows(tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)
    assert display.reference_table() is None  # no file: the tests have not run here
    (tmp_path / "_build").mkdir()
    rows = [
        {"technique": "b", "reference": "r", "quantity": "q", "measured": "1.0",
         "tolerance": "t", "ok": False, "note": "", "test": "tests/x.py::t", "recorded": "now"},
        {"technique": "a", "reference": "r", "quantity": "q", "measured": "2.0",
         "tolerance": "t", "ok": True, "note": "", "test": "tests/x.py::u", "recorded": "now"},
    ]
    (tmp_path / "_build" / "reference_checks.json").write_text(json.dumps({"rows": rows}))
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")  # found in a parent folder
    table = display.reference_table()
    assert table["technique"].tolist() == ["a", "b"]
    assert table["result"].tolist() == ["pass", "FAIL"]
    assert "note" not in table.columns
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    with pytest.raises(ValueError, match="bad.json"):
        display.reference_table(bad)
