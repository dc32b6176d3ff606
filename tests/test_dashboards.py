"""Latent dashboards on the micro build: logit effects, HTML rendering, Neuronpedia paths."""

from __future__ import annotations

import html
import math
import re
import socket

import pandas as pd
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
    assert shown == pytest.approx(best.value, rel=5e-3)  # shown to 3 significant digits
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


def _same_page(a: str, b: str) -> bool:
    """Equal up to the per-call element ids, from the examples on (the logit figures above
    them hold float32 products whose last bit depends on how many latents share a matmul)."""

    def part(page: str) -> str:
        return re.sub(r"sbd\d+-", "sbd-", page[page.index("<h5>Top") :])

    return part(a) == part(b)


def test_batched_dashboards_equal_single_ones(setup, tmp_path):
    model, saes, tokens, stats = setup
    sae, st = saes["resid"], stats["resid"]
    latents = torch.nonzero(st.count > 0).flatten()[:6].tolist() + st.dead()[:1].tolist()
    many = dashboards.latent_dashboards(model, sae, tokens, st, latents, n_top=4)
    assert [d.latent for d in many] == latents
    for dash in many:
        one = latent_dashboard(model, sae, tokens, st, dash.latent, n_top=4)
        assert _same_page(one.html, dash.html)
        pd.testing.assert_frame_equal(one.logits, dash.logits, rtol=1e-5)  # batched matmul
    paths = dashboards.write_dashboards(model, sae, tokens, st, latents, tmp_path, chunk=3,
                                        n_top=4)  # fmt: skip
    assert [p.name for p in paths] == [f"latent_{i}.html" for i in latents]
    for path, dash in zip(paths, many, strict=True):
        page = path.read_text(encoding="utf-8")
        assert page.startswith("<!DOCTYPE html>")
        body = page[page.index("<body>") + 6 : page.index("</body>")]
        assert _same_page(body, dash.html)
    with pytest.raises(ValueError, match="latents must name"):
        dashboards.latent_dashboards(model, sae, tokens, st, [])
    with pytest.raises(IndexError, match="latents"):
        dashboards.latent_dashboards(model, sae, tokens, st, [0, sae.cfg.d_sae])
    with pytest.raises(ValueError, match="chunk"):
        dashboards.write_dashboards(model, sae, tokens, st, [0], tmp_path, chunk=0)


def test_latent_numbers_equal_the_stats_properties(setup, tmp_path):
    """Per-latent count, density, mean and max equal the entries of the whole-vector
    properties exactly (a dead latent's mean is NaN), and a generator of latents is read
    once for the sweep and once for the pages."""
    model, saes, tokens, stats = setup
    st = stats["resid"]
    dead = st.dead()[:1].tolist()
    for latent in torch.nonzero(st.count > 0).flatten()[:20].tolist() + dead:
        count, density, mean, top = dashboards._latent_numbers(st, latent)
        assert count == int(st.count[latent]) and density == float(st.density[latent])
        assert top == float(st.max[latent])
        want = float(st.mean_activation[latent])
        assert mean == want or (math.isnan(mean) and math.isnan(want))
    paths = dashboards.write_dashboards(model, saes["resid"], tokens, st, iter([1, 2]),
                                        tmp_path)  # fmt: skip
    assert [p.name for p in paths] == ["latent_1.html", "latent_2.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latent_1.html", "latent_2.html"]


def test_window_activations_match_a_full_pass(setup):
    """The activation windows around examples equal a full pass over every row."""
    from saebook.latent_stats import latent_activations

    model, saes, tokens, _ = setup
    sae = saes["attn"]
    full = latent_activations(model, sae, tokens)
    wanted = torch.tensor([[3, 5, 0], [7, 5, 31], [1, 20, 10], [3, 0, 2]])
    got = dashboards._window_activations(model, sae, tokens, wanted, (2, 3), batch_size=2)
    for (lat, row, pos), window in zip(wanted.tolist(), got, strict=True):
        for j, p in enumerate(range(pos - 2, pos + 4)):
            expected = float(full[row, p, lat]) if 0 <= p < tokens.shape[1] else 0.0
            assert float(window[j]) == pytest.approx(expected, abs=1e-5)


def test_logit_summaries_match_per_latent_logits(setup):
    model, saes, _, _ = setup
    sae = saes["transcoder"]
    latents = [0, 4, 9]
    summaries = dashboards._logit_summaries(model, sae, latents, 5, chunk=2)
    for latent, summary in zip(latents, summaries, strict=True):
        up, up_ids, down, down_ids, counts, lo, hi = summary
        logits = latent_logits(model, sae, latent)
        assert up == pytest.approx(logits.topk(5).values.tolist(), abs=1e-5)
        assert down == pytest.approx(logits.topk(5, largest=False).values.tolist(), abs=1e-5)
        assert (lo, hi) == pytest.approx((float(logits.min()), float(logits.max())), abs=1e-5)
        ref = torch.histc(logits, bins=len(counts), min=lo, max=hi)
        assert sum(counts) == logits.numel()
        assert (torch.tensor(counts) - ref).abs().sum() <= 2  # rounding at a bin edge


def test_dashboards_from_kept_windows_need_no_model_pass(setup, monkeypatch):
    """With windows kept by latent_stats, the pages equal the ones a second model pass gives,
    and that pass is never made."""
    model, saes, tokens, stats = setup
    sae = saes["resid"]
    kept = latent_stats(model, sae, tokens, batch_size=8, progress=False, window=(12, 4))
    latents = torch.nonzero(kept.count > 0).flatten()[:5].tolist()
    second_pass = dashboards.latent_dashboards(model, sae, tokens, stats["resid"], latents)

    def no_pass(*args, **kwargs):
        raise AssertionError("a model pass was made although the windows were kept")

    monkeypatch.setattr(dashboards, "_window_activations", no_pass)
    from_kept = dashboards.latent_dashboards(model, sae, tokens, kept, latents)
    for a, b in zip(second_pass, from_kept, strict=True):
        assert _same_page(a.html, b.html)
    with pytest.raises(AssertionError, match="model pass"):  # a wider context needs the pass
        dashboards.latent_dashboards(model, sae, tokens, kept, latents, context=(13, 4))
