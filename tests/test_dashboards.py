"""Latent dashboards on the micro build: logit effects, HTML rendering, Neuronpedia paths."""

from __future__ import annotations

import html
import re
import socket

import pytest
import torch

from saebook import dashboards
from saebook.dashboards import (
    Dashboard,
    latent_dashboard,
    latent_logits,
    logit_table,
    neuronpedia_embed,
    show_dashboard,
    top_logits,
)
from saebook.latent_stats import latent_stats

MAX_BYTES = 150_000


@pytest.fixture(scope="module")
def setup(micro_model):
    model, saes, _ = micro_model
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(1, model.cfg.d_vocab, (24, 32), generator=gen)
    tokens[:, 0] = model.tokenizer.bos_token_id
    stats = {
        role: latent_stats(model, saes[role], tokens, batch_size=8, progress=False)
        for role in ("resid", "attn", "transcoder")
    }
    return model, saes, tokens, stats


def test_logits_and_table(setup):
    model, saes, _, _ = setup
    sae = saes["resid"]
    logits = latent_logits(model, sae, 5)
    d = sae.W_dec[5] - sae.W_dec[5].mean()  # through the final LayerNorm: centred, weighted
    assert torch.allclose(logits, (d * model.ln_final.w) @ model.W_U, atol=1e-5)
    values, ids = top_logits(model, sae, 5, k=7)
    assert torch.equal(ids, logits.topk(7).indices)
    low, _ = top_logits(model, sae, 5, k=3, largest=False)
    assert torch.allclose(low, logits.topk(3, largest=False).values)
    table = logit_table(model, sae, 5, k=4)
    assert list(table.columns) == ["promoted", "logit +", "suppressed", "logit -"]
    assert (table["logit +"].diff().dropna() <= 0).all()
    assert table["promoted"][0] == model.tokenizer.decode(
        [int(ids[0])], clean_up_tokenization_spaces=False
    )
    for bad in (0, model.cfg.d_vocab + 1):
        with pytest.raises(ValueError, match="k must be"):
            top_logits(model, sae, 5, k=bad)
    with pytest.raises(IndexError, match="latent must be in"):
        latent_logits(model, sae, sae.cfg.d_sae)


@pytest.mark.parametrize("role", ["resid", "attn", "transcoder"])
def test_dashboard_html(setup, role):
    model, saes, tokens, stats = setup
    sae, st = saes[role], stats[role]
    latent = int(st.count.argmax())
    dash = latent_dashboard(model, sae, tokens, st, latent, n_top=5)
    assert isinstance(dash, Dashboard)
    page = dash.to_html()
    assert dash.size_bytes == len(page.encode()) < MAX_BYTES
    assert set(dash.figures) == {"activations", "logits"}
    assert [len(f.data) for f in dash.figures.values()] == [1, 1]
    assert dash.figures["logits"].layout.height == 300
    assert page.count("plotly-graph-div") == 2 and "<script src" not in page
    assert "http" not in page  # nothing external
    # the top example's own token is the highlighted one, and its activation is in the tooltip
    best = dash.top[0]
    token = model.tokenizer.decode(
        [int(tokens[best.row, best.pos])], clean_up_tokenization_spaces=False
    )
    highlighted = re.findall(r"<span class='[^']*\bhi' title='([^']*)'>(.*?)</span>", page)
    assert len(highlighted) >= len(dash.top)
    title, text = highlighted[0]
    assert text == html.escape(dashboards._visible(token))
    assert f"row {best.row}, pos {best.pos}" in html.unescape(title)
    shown = float(re.search(r"act ([-+0-9.e]+)", html.unescape(title)).group(1))
    assert shown == pytest.approx(best.value, rel=2e-3)
    assert dash.latent == latent and abs(dash.density - float(st.density[latent])) < 1e-12


def test_dashboard_of_a_silent_latent(setup):
    model, saes, tokens, stats = setup
    st = stats["resid"]
    silent = st.dead()
    if silent.numel() == 0:
        pytest.skip("every latent fired on the micro sample")
    dash = latent_dashboard(model, saes["resid"], tokens, st, int(silent[0]))
    assert "never fired" in dash.to_html() and dash.top == []


def test_dashboard_rejects_mismatched_inputs(setup):
    model, saes, tokens, stats = setup
    with pytest.raises(ValueError, match="stats must come from this SAE"):
        latent_dashboard(model, saes["attn"], tokens, stats["resid"], 0)
    with pytest.raises(ValueError, match="tokens must be the"):
        latent_dashboard(model, saes["resid"], tokens[:3], stats["resid"], 0)
    with pytest.raises(TypeError, match="stats must be a LatentStats"):
        latent_dashboard(model, saes["resid"], tokens, {}, 0)
    with pytest.raises(IndexError, match="latent must be in"):
        latent_dashboard(model, saes["resid"], tokens, stats["resid"], -1)
    with pytest.raises(ValueError, match="context"):
        latent_dashboard(model, saes["resid"], tokens, stats["resid"], 0, context=(-1, 2))


def test_show_dashboard_returns_it(setup, capsys):
    model, saes, tokens, stats = setup
    dash = show_dashboard(model, saes["resid"], tokens, stats["resid"], 1)
    assert isinstance(dash, Dashboard)


def _block_sockets(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_neuronpedia_without_id_is_a_notice(setup, monkeypatch):
    _, saes, _, _ = setup
    _block_sockets(monkeypatch)
    note = neuronpedia_embed(saes["resid"], 3)
    assert "<iframe" not in note and "neuronpedia_id" in note and "\n" not in note


def test_neuronpedia_offline_is_a_notice(setup, monkeypatch):
    _, saes, _, _ = setup
    _block_sockets(monkeypatch)
    monkeypatch.setattr(saes["resid"].cfg.metadata, "neuronpedia_id", "gpt2-small/8-res-jb")
    note = neuronpedia_embed(saes["resid"], 3)
    assert "<iframe" not in note and "not reachable" in note and "\n" not in note


def test_neuronpedia_online_is_an_iframe(setup, monkeypatch):
    _, saes, _, _ = setup

    class FakeConnection:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: FakeConnection())
    monkeypatch.setattr(saes["resid"].cfg.metadata, "neuronpedia_id", "gpt2-small/8-res-jb")
    frame = neuronpedia_embed(saes["resid"], 3)
    assert frame.startswith("<iframe") and "gpt2-small/8-res-jb/3?embed=true" in frame
