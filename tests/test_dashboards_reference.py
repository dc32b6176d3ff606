"""Our dashboards' data against sae-dashboard 0.8's own feature data, same latents and tokens.

sae-dashboard pins packages the book cannot share, so it runs in its own virtualenv
(``benchmarks/sidevenv.py``: built on first use under ``~/.cache/saebook/``, keyed by the
constraints, and reused after; a first build downloads about 1.5 GB and takes minutes). The
child script ``tests/sae_dashboard_reference_child.py`` rebuilds the tiny model there from its
weights, folds its LayerNorms with TransformerLens' ``fold_ln`` and runs ``SaeVisRunner``.

What is compared, and where the two differ by definition:

* **density**: ours counts firings over non-BOS positions; sae-dashboard (BOS masked with
  ``ignore_tokens``) divides the same count by every position, so ours is rescaled by
  ``(non-BOS positions) / (all positions)`` before comparing;
* **top activations**: the same positions (row, token) and activation values; sae-dashboard's
  sequence buffer is turned off so that it, like ours, may pick any position;
* **activation groups**: sae-dashboard splits ``[0, max]`` into 10 equal-width intervals (the
  lowest also holds every silent position); ours are equal-count slices of a uniform sample of
  firings. With the sample holding every firing, the number of firings our sample puts in each
  of sae-dashboard's intervals must equal the count it reports;
* **logit tables**: sae-dashboard multiplies the (unit-norm) decoder direction by ``W_U``; on
  the model as loaded (final LayerNorm weight unfolded) that is not the direct effect, so the
  comparison uses the model folded by TransformerLens, whose ``W_U`` carries the LayerNorm's
  weight and centring, like ours. How often the unfolded product picks other tokens is
  reported too.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from sidevenv import SideVenvError, run_in_venv  # noqa: E402

N_LATENTS = 8
N_TOP = 20
N_LOGITS = 10  # sae-dashboard's default logit table rows
ROWS, SEQ = 64, 64


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    from saebook import profiles
    from saebook.dashboards import latent_dashboards
    from saebook.latent_stats import latent_activations, latent_stats

    profile = profiles.load("tiny")
    model, sae = profile.model, profile.saes["resid"]
    tokens = profile.tokens(ROWS, SEQ, seed=11).cpu()
    bos = model.tokenizer.bos_token_id
    # a sample as large as every position: the activation groups are then exact
    stats = latent_stats(model, sae, tokens, k=N_TOP, n_samples=ROWS * SEQ, progress=False)
    busy = torch.nonzero(stats.count >= 30).flatten()
    chosen = busy[torch.randperm(busy.numel(), generator=torch.Generator().manual_seed(0))]
    latents = sorted(chosen[:N_LATENTS].tolist())
    ours = latent_dashboards(model, sae, tokens, stats, latents, n_top=N_TOP, n_logits=N_LOGITS)
    acts = latent_activations(model, sae, tokens, latents)

    folder = tmp_path_factory.mktemp("sae_dashboard")
    torch.save({"cfg": model.cfg.to_dict(), "state_dict": model.state_dict()},
               folder / "model.pt")  # fmt: skip
    sae.save_model(str(folder / "sae"))
    torch.save({"tokens": tokens, "latents": latents, "bos": bos, "batch_size": 16,
                "n_top": N_TOP}, folder / "inputs.pt")  # fmt: skip
    child = ROOT / "tests" / "sae_dashboard_reference_child.py"
    start = time.perf_counter()
    try:
        out = run_in_venv([str(child), str(folder)], timeout=1800)
    except SideVenvError as exc:
        pytest.fail(f"sae-dashboard could not run: {exc}")
    seconds = time.perf_counter() - start
    theirs = json.loads(out.strip().splitlines()[-1])
    with torch.no_grad():
        expected = model(tokens[:1])[0, -1, :8]
    for name, logits in theirs["logits"].items():  # the same model, folded or not
        assert torch.allclose(torch.tensor(logits), expected, atol=1e-3), name
    return {
        "tokens": tokens, "bos": bos, "stats": stats, "latents": latents, "ours": ours,
        "acts": acts, "theirs": theirs["features"]["folded"], "seconds": seconds,
        "theirs_unfolded": theirs["features"]["unfolded"], "model": model, "sae": sae,
    }  # fmt: skip


def _groups(feature: dict) -> tuple[dict, list[dict]]:
    """sae-dashboard's top group and its interval groups (with their parsed titles)."""
    top, intervals = feature["groups"][0], []
    assert top["title"].startswith("TOP ACTIVATIONS")
    for group in feature["groups"][1:]:
        lo, hi, pct = re.match(
            r"INTERVAL ([\d.]+) - ([\d.]+)<br>CONTAINS ([\d.]+)%", group["title"]
        ).groups()
        intervals.append({**group, "lo": float(lo), "hi": float(hi), "pct": float(pct) / 100})
    return top, intervals


def test_density_matches_sae_dashboard(compared, reference_row):
    """Same firing count per latent; sae-dashboard prints its density (over every position,
    BOS masked) as a percentage with 3 decimals, fine enough to recover the count exactly."""
    tokens, bos, stats = compared["tokens"], compared["bos"], compared["stats"]
    n_all = tokens.numel()
    share = float((tokens != bos).sum()) / n_all  # ours / theirs denominators
    worst, same = 0.0, 0
    for dash in compared["ours"]:
        title = compared["theirs"][str(dash.latent)]["density_title"]
        theirs = float(re.search(r"DENSITY = ([\d.]+)%", title).group(1)) / 100
        same += int(round(theirs * n_all) == int(stats.count[dash.latent]))
        worst = max(worst, abs(dash.density * share - theirs))
    n = len(compared["latents"])
    ok = same == n and worst <= 0.5e-5 + 1e-9
    reference_row(
        technique="dashboards: activation density",
        reference="sae-dashboard 0.8 SaeVisRunner (acts histogram's density), same tokens",
        quantity="firing counts identical; max |density difference| (ours rescaled to every "
        "position, BOS included, as sae-dashboard divides)",
        measured=f"counts identical on {same}/{n} latents; {worst:.1e}",
        tolerance="all identical; 5e-6 (its 3-decimal percentage)",
        ok=ok,
    )
    assert ok, (same, worst)


def test_top_activations_match_sae_dashboard(compared, reference_row):
    """Same (row, position) set and the same values, largest first; the activations around
    each top example (sae-dashboard's whole-row window) equal ours at every position."""
    worst, worst_ctx, same = 0.0, 0.0, 0
    for k, dash in enumerate(compared["ours"]):
        top, _ = _groups(compared["theirs"][str(dash.latent)])
        theirs = list(zip(top["rows"], top["pos"], strict=True))
        ours = [(e.row, e.pos) for e in dash.top]
        values = torch.tensor([e.value for e in dash.top])
        # sae-dashboard keeps the token after position 0 onwards: value at pos is acts[pos-1]
        their_values = torch.tensor([a[p - 1] for a, p in zip(top["acts"], top["pos"],
                                                                strict=True)])  # fmt: skip
        worst = max(worst, float((values - their_values).abs().max()))
        # ties may order differently: the sets must agree except at the tied lowest value
        tied = values[-1]
        strict = {o for o, v in zip(ours, values.tolist(), strict=True) if v > tied + 1e-4}
        same += int(strict <= set(theirs))
        for (row, _pos), a in zip(theirs, top["acts"], strict=True):
            ctx = compared["acts"][row, 1:, k]  # positions 1.. as sae-dashboard shows them
            worst_ctx = max(worst_ctx, float((ctx - torch.tensor(a)).abs().max()))
    n = len(compared["latents"])
    ok = same == n and worst <= 1e-4 and worst_ctx <= 1e-4
    reference_row(
        technique="dashboards: top activations",
        reference="sae-dashboard 0.8 SaeVisRunner (top-activations group, buffer off)",
        quantity=f"top-{N_TOP} positions identical; max |activation difference|",
        measured=f"positions identical on {same}/{n} latents; values {worst:.1e}, "
        f"activations along those rows {worst_ctx:.1e}",
        tolerance="all identical; 1e-4 (sae-dashboard rounds activations to 4 decimals)",
        ok=ok,
    )
    assert ok, (same, worst, worst_ctx)


def test_activation_groups_match_sae_dashboard(compared, reference_row):
    """Firings per sae-dashboard interval, counted from our sample (which holds every firing),
    equal the share of positions sae-dashboard reports for that interval."""
    stats, tokens = compared["stats"], compared["tokens"]
    n_all = tokens.numel()
    worst, worst_max, edge, total = 0, 0.0, 0, 0
    for dash in compared["ours"]:
        latent = dash.latent
        sample = torch.tensor([e.value for e in stats.sample_examples(latent)])
        assert sample.numel() == int(stats.count[latent])  # every firing is in the sample
        top, intervals = _groups(compared["theirs"][str(latent)])
        their_max = float(top["title"].split("MAX = ")[1])
        worst_max = max(worst_max, abs(dash.max_activation - their_max))
        # sae-dashboard's edges: linspace(0, max, 11); ours from our own max
        edges = torch.linspace(0, float(stats.max[latent]), len(intervals) + 1)
        for i, group in enumerate(reversed(intervals)):  # sae-dashboard lists them top first
            lo, hi = float(edges[i]), float(edges[i + 1])
            n_ours = int(((sample >= lo) & (sample <= hi)).sum())
            if i == 0:  # the lowest interval also holds every silent position
                n_ours += n_all - sample.numel()
            n_theirs = round(group["pct"] * n_all)
            # a firing within 1e-4 of an inner edge may fall on either side (sae-dashboard's
            # edges come from its own float32 maximum); the maximum itself is inside for both
            inner = sample[sample < float(stats.max[latent]) - 1e-4]
            near = int(((inner - lo).abs() < 1e-4).sum() + ((inner - hi).abs() < 1e-4).sum())
            edge += near
            total += abs(n_ours - n_theirs)
            worst = max(worst, abs(n_ours - n_theirs) - near)
    ok = worst <= 0 and worst_max <= 5e-4
    reference_row(
        technique="dashboards: activation groups and maximum",
        reference="sae-dashboard 0.8 SaeVisRunner (10 equal-width interval groups)",
        quantity="positions per interval: |ours - theirs| beyond firings within 1e-4 of an "
        "edge; max activation",
        measured=f"{max(worst, 0)} positions beyond edge cases ({total} in all, {edge} firings "
        f"within 1e-4 of an edge) over {len(compared['latents'])} latents x 10 intervals; "
        f"max {worst_max:.1e}",
        tolerance="0 positions; 5e-4 (its 3-decimal title)",
        ok=ok,
        note="the book's groups are equal-count slices of a uniform sample of firings, "
        "sae-dashboard's equal-width value intervals: compared on its intervals",
    )
    assert ok, (worst, worst_max)


def test_logit_tables_match_sae_dashboard(compared, reference_row):
    """Top and bottom tokens and their logit effects; sae-dashboard on the fold_ln model."""
    from saebook.dashboards import _token_strings, top_logits

    model, sae = compared["model"], compared["sae"]
    worst, same, bare_differs = 0.0, 0, 0
    for dash in compared["ours"]:
        theirs = compared["theirs"][str(dash.latent)]
        up_ids = top_logits(model, sae, dash.latent, N_LOGITS)[1].tolist()
        down_ids = top_logits(model, sae, dash.latent, N_LOGITS, largest=False)[1].tolist()
        text = _token_strings(model, theirs["top_ids"] + theirs["bottom_ids"])
        table = dash.logits
        same += int(
            up_ids == theirs["top_ids"] and down_ids == theirs["bottom_ids"]
            and table["promoted"].tolist() == [text[i] for i in theirs["top_ids"]]
            and table["suppressed"].tolist() == [text[i] for i in theirs["bottom_ids"]]
        )  # fmt: skip
        for col, key in (("logit +", "top_logits"), ("logit -", "bottom_logits")):
            diff = torch.tensor(table[col].to_numpy()) - torch.tensor(theirs[key])
            worst = max(worst, float(diff.abs().max()))
        bare = compared["theirs_unfolded"][str(dash.latent)]
        bare_differs += int(set(bare["top_ids"]) != set(theirs["top_ids"]))
    n = len(compared["ours"])
    ok = same == n and worst <= 1e-4
    reference_row(
        technique="dashboards: logit tables",
        reference="sae-dashboard 0.8 SaeVisRunner on the model folded by TransformerLens "
        "(fold_ln=True)",
        quantity=f"top/bottom-{N_LOGITS} tokens identical; max |logit effect difference|",
        measured=f"identical on {same}/{n} latents; {worst:.1e}",
        tolerance="all identical; 1e-4",
        ok=ok,
        note=f"on the unfolded model sae-dashboard's bare W_U picks another top-{N_LOGITS} "
        f"set for {bare_differs}/{n} latents (the final LayerNorm's weight is left out)",
    )
    assert ok, (same, worst)


def test_side_venv_is_keyed_by_its_pins(tmp_path, monkeypatch):
    """The side virtualenv lives under $SAEBOOK_CACHE (default ~/.cache/saebook), in a folder
    named by its pins: other constraints, another folder; no constraints, a named error."""
    from sidevenv import CONSTRAINTS, cache_root, default_venv

    monkeypatch.setenv("SAEBOOK_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    first = default_venv()
    assert first.parent == tmp_path and first == default_venv(CONSTRAINTS)
    other = tmp_path / "other.txt"
    other.write_text(CONSTRAINTS.read_text() + "extra==1.0\n")
    assert default_venv(other) != first
    with pytest.raises(SideVenvError, match="missing"):
        default_venv(tmp_path / "absent.txt")
    monkeypatch.delenv("SAEBOOK_CACHE")
    assert str(cache_root()).endswith(".cache/saebook")
