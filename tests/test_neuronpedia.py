"""Tests for saebook.neuronpedia: ids and URLs, parsing, the HTTP client (HTTP mocked), and the
shipped offline fixtures (rebuilt from the tiny profile and compared with the files)."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import urllib.parse
from pathlib import Path

import pytest
import requests
import torch

from saebook import neuronpedia as npd
from saebook.neuronpedia import (
    ExplanationHit,
    NeuronpediaClient,
    NeuronpediaError,
    SaeRef,
)

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "make_neuronpedia_fixtures", ROOT / "scripts" / "make_neuronpedia_fixtures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rebuilt() -> dict[str, dict]:
    return _script().build()


# --- ids and URLs ---------------------------------------------------------------------------


def test_ids_map_to_refs_and_urls():
    ref = npd.parse_neuronpedia_id("gpt2-small/8-res-jb")
    assert ref == SaeRef("gpt2-small", "8-res-jb")
    assert ref.source_set == "res-jb" and str(ref) == "gpt2-small/8-res-jb"
    assert SaeRef("gemma-2-2b", "20-gemmascope-res-16k").source_set == "gemmascope-res-16k"
    assert SaeRef("m", "blocks").source_set == "blocks"
    assert npd.feature_url(ref, 3) == "https://www.neuronpedia.org/gpt2-small/8-res-jb/3"
    assert npd.feature_api_url("gpt2-small/8-res-jb", 3) == (
        "https://www.neuronpedia.org/api/feature/gpt2-small/8-res-jb/3"
    )
    for bad in ["gpt2-small", "/8-res-jb", "a/b/c", None, 7, "a b/c"]:
        with pytest.raises(ValueError, match="neuronpedia_id must be"):
            npd.parse_neuronpedia_id(bad)
    with pytest.raises(ValueError, match="index"):
        npd.feature_url(ref, -1)


def test_list_url_encodes_the_features_as_json():
    url = npd.list_url("gpt2-small/8-res-jb", [5, 1, 5], name="my list & more")
    parts = urllib.parse.urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        "https://www.neuronpedia.org/quick-list/"
    )
    query = urllib.parse.parse_qs(parts.query)
    assert query["name"] == ["my list & more"]
    assert json.loads(query["features"][0]) == [
        {"modelId": "gpt2-small", "layer": "8-res-jb", "index": str(i)} for i in (5, 1, 5)
    ]
    with pytest.raises(ValueError, match="indices must be a non-empty list"):
        npd.list_url("gpt2-small/8-res-jb", [])


def test_sae_ref_reads_the_metadata(micro_model, monkeypatch):
    _, saes, _ = micro_model
    sae = saes["resid"]
    with pytest.raises(ValueError, match=r"neuronpedia_id must be .* got None"):
        npd.sae_ref(sae)
    monkeypatch.setattr(sae.cfg.metadata, "neuronpedia_id", "gpt2-small/8-res-jb")
    assert npd.sae_ref(sae) == SaeRef("gpt2-small", "8-res-jb")


# --- parsing and ranking --------------------------------------------------------------------


def test_parse_feature_sorts_records_and_reads_logits():
    payload = {
        "modelId": "m",
        "layer": "1-x",
        "index": "4",
        "explanations": [{"description": "a"}, {"description": "b"}],
        "activations": [
            {"tokens": ["<b>", " x", " y"], "values": [0, 1.0, 0.5]},
            {"tokens": ["<b>", " z"], "values": [0, 3.0], "maxValue": 3.0, "maxValueTokenIndex": 1},
        ],
        "pos_str": [" up"],
        "pos_values": [0.7],
        "neg_str": [" down"],
        "neg_values": [-0.2],
        "frac_nonzero": 0.01,
    }
    feature = npd.parse_feature(payload)
    assert feature.index == 4 and feature.explanations == ["a", "b"]
    assert [r.max_token for r in feature.activations] == [" z", " x"]
    assert feature.activations[1].max_value == 1.0  # maxValue absent: read off the values
    assert feature.pos_logits == [(" up", 0.7)] and feature.neg_logits == [(" down", -0.2)]
    assert feature.max_act is None
    assert npd.top_activation_tokens(feature, 1) == [(" z", 3.0)]
    assert npd.top_activation_tokens(feature, 0) == []
    with pytest.raises(ValueError, match="'modelId' field"):
        npd.parse_feature({"layer": "1-x", "index": 0})
    bad = dict(payload, activations=[{"tokens": ["a"], "values": [1.0, 2.0]}])
    with pytest.raises(ValueError, match="one value per token"):
        npd.parse_feature(bad)


def test_rank_explanations_keeps_each_latent_once_with_its_best_score():
    hits = [
        ExplanationHit("m", "1-x", 3, "cats", 0.5),
        ExplanationHit("m", "1-x", 3, "felines", 0.9),
        ExplanationHit("m", "0-x", 7, "dogs", 0.9),
        ExplanationHit("m", "1-x", 1, "pets", 0.6),
        ExplanationHit("m", "1-x", 2, "unscored", None),
    ]
    assert npd.rank_explanations(hits, 5) == [("0-x", 7, 0.9), ("1-x", 3, 0.9), ("1-x", 1, 0.6)]
    assert npd.rank_explanations(hits, 1) == [("0-x", 7, 0.9)]
    answer = {"results": [{"modelId": "m", "layer": "1-x", "index": "2", "cosine_similarity": 0.4}]}
    assert npd.parse_explanation_search(answer)[0].score == 0.4


def test_parse_text_search_checks_lengths():
    good = {
        "tokens": ["<b>", " a"],
        "result": [
            {
                "modelId": "m",
                "layer": "1-x",
                "index": "9",
                "values": [0, 2.0],
                "maxValue": 2.0,
                "maxValueIndex": 1,
            }
        ],
    }
    search = npd.parse_text_search(good)
    assert search.hits[0].index == 9 and search.tokens[search.hits[0].max_index] == " a"
    good["result"][0]["values"] = [1.0]
    with pytest.raises(ValueError, match="one value per token"):
        npd.parse_text_search(good)
    with pytest.raises(ValueError, match="'STEERED' field"):
        npd.parse_steer({"DEFAULT": "x"})


def test_steer_body_and_errors():
    body = npd.steer_body("gpt2-small/8-res-jb", 5, "Hi", 2.5, n_tokens=8)
    assert body["features"] == [
        {"modelId": "gpt2-small", "layer": "8-res-jb", "index": 5, "strength": 2.5}
    ]
    assert body["modelId"] == "gpt2-small" and body["n_tokens"] == 8
    with pytest.raises(ValueError, match="prompt must be a non-empty string"):
        npd.steer_body("gpt2-small/8-res-jb", 5, "", 1.0)


# --- the HTTP client, with requests mocked --------------------------------------------------


class FakeAnswer:
    def __init__(self, status: int, payload: object = None, text: str | None = None):
        self.status_code = status
        self._payload = payload
        self.text = text if text is not None else json.dumps(payload)

    def json(self):
        if self._payload is None:
            raise ValueError("not JSON")
        return self._payload


class FakeSession:
    def __init__(self, answer):
        self.answer = answer
        self.calls: list[tuple] = []

    def request(self, method, url, json=None, headers=None, timeout=None):
        self.calls.append((method, url, json, headers))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_the_live_path_parses_like_the_offline_path():
    for name, call, parse in [
        ("feature", lambda c: c.feature("gpt2-small/8-res-jb", 17), npd.parse_feature),
        (
            "explanation_search",
            lambda c: c.search_explanations("gpt2-small/8-res-jb", "upon"),
            npd.parse_explanation_search,
        ),
        (
            "search_text",
            lambda c: c.search_text("gpt2-small/8-res-jb", "Once upon a time"),
            npd.parse_text_search,
        ),
    ]:
        payload = npd.load_fixture(name)
        session = FakeSession(FakeAnswer(200, payload))
        client = NeuronpediaClient(api_key="k", session=session)
        assert call(client) == parse(payload), name
        method, url, body, headers = session.calls[0]
        assert headers["x-api-key"] == "k"
        if name == "feature":
            assert (method, url, body) == (
                "GET",
                "https://www.neuronpedia.org/api/feature/gpt2-small/8-res-jb/17",
                None,
            )
        elif name == "explanation_search":
            assert url.endswith("/api/explanation/search") and body["layers"] == ["8-res-jb"]
        else:
            assert url.endswith("/api/search-all") and body["sourceSet"] == "res-jb"
            assert body["selectedLayers"] == ["8-res-jb"] and body["ignoreBos"] is True
    session = FakeSession(FakeAnswer(200, {"STEERED": "a cat", "DEFAULT": "a dog"}))
    answer = NeuronpediaClient(session=session).steer("gpt2-small/8-res-jb", 3, "Hi", 4.0)
    assert answer == npd.SteerResult("a cat", "a dog")
    assert session.calls[0][1] == "https://www.neuronpedia.org/api/steer"


def test_http_failures_name_status_and_url():
    client = NeuronpediaClient(session=FakeSession(FakeAnswer(429, None, text="slow down")))
    with pytest.raises(
        NeuronpediaError,
        match=r"GET https://www.neuronpedia.org/api/feature/"
        r"gpt2-small/8-res-jb/1 returned HTTP 429 .*slow down",
    ):
        client.feature("gpt2-small/8-res-jb", 1)
    client = NeuronpediaClient(session=FakeSession(requests.ConnectionError("refused")))
    with pytest.raises(NeuronpediaError, match="ConnectionError: refused"):
        client.feature("gpt2-small/8-res-jb", 1)
    client = NeuronpediaClient(session=FakeSession(FakeAnswer(200, None, text="<html>")))
    with pytest.raises(NeuronpediaError, match="not JSON"):
        client.feature("gpt2-small/8-res-jb", 1)


def test_online_is_false_when_the_host_does_not_answer(monkeypatch):
    seen = []
    monkeypatch.setattr(npd, "reachable", lambda host, timeout: seen.append(host) or False)
    assert npd.online() is False and seen == [npd.NEURONPEDIA_HOST]


# --- the offline fixtures -------------------------------------------------------------------


def _close(a, b, path="") -> str | None:
    """The first place where two JSON values differ beyond 2e-4, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{path}: keys {sorted(a)} != {sorted(b)}"
        return next((d for k in a if (d := _close(a[k], b[k], f"{path}.{k}"))), None)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: lengths {len(a)} != {len(b)}"
        return next(
            (
                d
                for i, (x, y) in enumerate(zip(a, b, strict=True))
                if (d := _close(x, y, f"{path}[{i}]"))
            ),
            None,
        )
    if isinstance(a, float) or isinstance(b, float):
        return None if math.isclose(a, b, abs_tol=2e-4) else f"{path}: {a} != {b}"
    return None if a == b else f"{path}: {a!r} != {b!r}"


def test_shipped_fixtures_equal_a_rebuild(rebuilt, reference_row):
    diffs = {name: _close(payload, npd.load_fixture(name)) for name, payload in rebuilt.items()}
    reference_row(
        technique="neuronpedia fixtures",
        reference="a rebuild from the tiny profile (scripts/make_neuronpedia_fixtures.py)",
        quantity="every field of the three shipped JSON answers",
        measured=f"{sum(d is None for d in diffs.values())} of {len(diffs)} files equal",
        tolerance="equal (floats within 2e-4)",
        ok=all(d is None for d in diffs.values()),
    )
    assert sorted(rebuilt) == sorted(npd.FIXTURE_NAMES)
    assert all(d is None for d in diffs.values()), diffs
    for payload in rebuilt.values():
        assert "NOT downloaded" in payload["_note"]


def test_fixture_feature_matches_a_direct_recomputation():
    from saebook import profiles

    profile = profiles.load("tiny")
    model, sae = profile.model, profile.sae("resid")
    feature = npd.parse_feature(npd.load_fixture("feature"))
    vocab = {model.tokenizer.decode([i]): i for i in range(model.cfg.d_vocab)}
    record = feature.activations[0]
    ids = torch.tensor([[vocab[t] for t in record.tokens]])
    _, cache = model.run_with_cache(ids, names_filter=sae.cfg.metadata.hook_name)
    acts = sae.encode(cache[sae.cfg.metadata.hook_name])[0, :, feature.index]
    torch.testing.assert_close(acts, torch.tensor(record.values), atol=1e-3, rtol=1e-3)
    direction = sae.W_dec[feature.index]
    logits = ((direction - direction.mean()) * model.ln_final.w) @ model.W_U  # centre, scale
    values, ids = logits.topk(len(feature.pos_logits))
    assert [model.tokenizer.decode([i]) for i in ids.tolist()] == [s for s, _ in feature.pos_logits]
    torch.testing.assert_close(
        values, torch.tensor([v for _, v in feature.pos_logits]), atol=1e-3, rtol=1e-3
    )


def test_fixture_files_are_parsed_consistently():
    feature = npd.parse_feature(npd.load_fixture("feature"))
    assert feature.note and "NOT downloaded" in feature.note
    assert [r.max_value for r in feature.activations] == sorted(
        (r.max_value for r in feature.activations), reverse=True
    )
    for record in feature.activations:
        assert record.values[record.max_index] == record.max_value == max(record.values)
    search = npd.parse_text_search(npd.load_fixture("search_text"))
    for hit in search.hits:
        assert hit.values[hit.max_index] == hit.max_value == max(hit.values[1:])
    with pytest.raises(ValueError, match="name must be one of"):
        npd.load_fixture("steer")


def test_build_fixtures_rejects_bad_shapes(micro_model):
    model, saes, _ = micro_model
    tokens = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"tokens must be \(rows, seq\)"):
        npd.build_fixtures(model, saes["resid"], "m/1-x", tokens, tokens)


def test_write_fixtures_round_trips(tmp_path):
    payload = {"feature": npd.load_fixture("feature")}
    (path,) = npd.write_fixtures(payload, tmp_path)
    assert npd.load_fixture("feature", tmp_path) == payload["feature"] and path.exists()
    with pytest.raises(ValueError, match="payload names must be among"):
        npd.write_fixtures({"other": {}}, tmp_path)


def test_feature_html_escapes_and_shades():
    raw = copy.deepcopy(npd.load_fixture("feature"))
    first = raw["activations"][0]
    first["tokens"][first["maxValueTokenIndex"]] = "<|endoftext|>"  # shown, and must be escaped
    feature = npd.parse_feature(raw)
    html = npd.feature_html(feature, n_examples=2)
    assert html.count("<tr>") == 2 and "&lt;|endoftext|&gt;" in html
    assert "rgba(255,120,0,1.00)" in html  # the strongest token is fully shaded
