"""Autointerp: contexts, offline and OpenAI-compatible explainers, detection and fuzzing."""

from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pandas as pd
import pytest
import torch

from saebook import autointerp, checks
from saebook.autointerp import (
    Context,
    Explainer,
    Explanation,
    KeywordSimulator,
    LatentContexts,
    OfflineExplainer,
    OpenAIExplainer,
    best_matching_labels,
    binary_scores,
    detection_score,
    explainer_prompt,
    fuzzing_score,
    latent_contexts,
    make_explainer,
    precision_recall_plot,
    score_explanations,
)

SECRET = "sk-test-0123456789-do-not-leak"
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def _world(seed: int = 0):
    """Rows of words; the latent fires on 'cat' and 'dog' (animal label), never elsewhere."""
    rng = np.random.default_rng(seed)
    words = [" cat", " dog", " the", " ran", " red", " Tom", "."]
    rows = [[words[i] for i in rng.integers(0, len(words), 16)] for _ in range(40)]
    acts = torch.tensor([[1.0 if w == " cat" else 0.5 if w == " dog" else 0.0 for w in r]
                         for r in rows])  # fmt: skip
    animal = torch.tensor([[w in (" cat", " dog") for w in r] for r in rows])
    colour = torch.tensor([[w == " red" for w in r] for r in rows])
    return rows, acts, {"animal": animal, "colour": colour}


def test_best_matching_labels():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(200, generator=gen) < 0.3
    b = torch.rand(200, generator=gen) < 0.3
    acts = torch.stack([a.float(), b.float() * 2, (a & b).float(), torch.zeros(200)], -1)
    table = best_matching_labels(acts, {"a": a, "b": b}, min_fires=5)
    by = table.set_index("latent")
    assert by.at[0, "label"] == "a" and by.at[0, "f1"] == pytest.approx(1.0)
    assert by.at[1, "label"] == "b" and by.at[1, "precision"] == pytest.approx(1.0)
    assert by.at[2, "precision"] == pytest.approx(1.0) and by.at[2, "recall"] < 1
    assert 3 not in by.index  # never fires
    with pytest.raises(ValueError, match=r"labels\['a'\] must have shape"):
        best_matching_labels(acts, {"a": a[:5]})


def test_latent_contexts_split_and_windows():
    rows, acts, labels = _world()
    ctx = latent_contexts(rows, acts, 7, labels, n_top=5, n_held_out=10, window=6, seed=1)
    assert ctx.latent == 7 and len(ctx.top) == 5
    assert all(len(c.tokens) == 6 and c.fires for c in ctx.top)
    assert ctx.top[0].acts and max(ctx.top[0].acts) == 1.0  # strongest first
    assert len(ctx.held_out_firing) == 10 and all(c.fires for c in ctx.held_out_firing)
    assert len(ctx.held_out_silent) == 10 and not any(c.fires for c in ctx.held_out_silent)
    assert all(c.labels is not None and len(c.labels) == 6 for c in ctx.held_out_firing)
    c = ctx.top[0]
    for tok, lab in zip(c.tokens, c.labels, strict=True):
        assert ("animal" in lab) == (tok in (" cat", " dog"))
    assert "<< cat>>" in "".join(c.marked() for c in ctx.top)
    with pytest.raises(ValueError, match="str_tokens must be"):
        latent_contexts(rows[:3], acts)
    with pytest.raises(ValueError, match="window must be at most"):
        latent_contexts(rows, acts, window=99)


def test_offline_explainer_and_scores():
    rows, acts, labels = _world()
    ctx = latent_contexts(rows, acts, 0, labels, n_top=8, n_held_out=15, window=6, seed=2)
    explainer = OfflineExplainer(n_tokens=3)
    assert isinstance(explainer, Explainer)
    e = explainer.explain(ctx)
    assert e.label == "animal" and {"cat", "dog"} <= e.tokens and "animal" in e.text
    assert e.tokens == {"cat", "dog"}  # nothing else carries activation
    det = detection_score(e, ctx)
    assert det["balanced_accuracy"] == 1.0 and det["precision"] == 1.0
    fuz = fuzzing_score(e, ctx)
    assert fuz["balanced_accuracy"] == 1.0
    wrong = Explanation(0, "fires on colours", frozenset({"red"}), "colour")
    assert detection_score(wrong, ctx)["recall"] < 0.7
    assert fuzzing_score(wrong, ctx)["balanced_accuracy"] <= 0.6
    cat_only = latent_contexts(
        rows,
        (acts == 1.0).float(),
        0,
        labels | {"animal_cat": torch.tensor([[w == " cat" for w in r] for r in rows])},
        window=6,
    )
    specific = OfflineExplainer().explain(cat_only)
    assert specific.label == "animal_cat" and specific.tokens == {"cat"}
    only_cat = OfflineExplainer(n_tokens=1, use_labels=False).explain(ctx)
    assert only_cat.tokens == {"cat"} and only_cat.label is None
    table = score_explanations([e, wrong], {0: ctx}, progress=False)
    assert list(table["latent"]) == [0, 0]
    assert table.loc[0, "detection_balanced_accuracy"] > table.loc[1, "detection_balanced_accuracy"]
    with pytest.raises(KeyError, match="latent 5"):
        score_explanations([Explanation(5, "x")], {0: ctx}, progress=False)
    fig = precision_recall_plot({"a": pd.DataFrame({"precision": [1.0], "recall": [0.5]})})
    assert len(fig.data) == 1
    with pytest.raises(ValueError, match="n_tokens"):
        OfflineExplainer(n_tokens=0)


def test_keyword_simulator_and_binary_scores():
    c = Context((" Cat", " sat", " red"), (1.0, 0.0, 0.0), (frozenset(), frozenset(), {"colour"}))
    sim = KeywordSimulator()
    assert sim.predict(Explanation(0, "", frozenset({"cat"})), c) == [True, False, False]
    assert sim.predict(Explanation(0, "", label="colour"), c) == [False, False, True]
    s = binary_scores([True, True, False, False], [True, False, True, False])
    assert s == {"balanced_accuracy": 0.5, "precision": 0.5, "recall": 0.5, "accuracy": 0.5}
    none = binary_scores([False, False], [True, False])
    assert np.isnan(none["precision"]) and none["balanced_accuracy"] == 0.5
    one_class = binary_scores([True, False], [True, True])
    assert one_class["balanced_accuracy"] == 0.5 and np.isnan(binary_scores([], [])["recall"])
    with pytest.raises(ValueError, match="same length"):
        binary_scores([True], [True, False])


def test_detection_checker():
    def reader(predicted, truth):
        out = binary_scores(predicted, truth)
        return {k: out[k] for k in ("balanced_accuracy", "precision", "recall")}

    def plain_accuracy(predicted, truth):
        out = reader(predicted, truth)
        return out | {"balanced_accuracy": binary_scores(predicted, truth)["accuracy"]}

    checks.check_detection_scores(reader)
    with pytest.raises(AssertionError, match="case"):
        checks.check_detection_scores(plain_accuracy)


# --- the online path, against a fake OpenAI-compatible server --------------------------------


MAX_REQUESTS = 400  # the test server answers 429 after this many requests


def _simulate_reply(messages: list[dict]) -> str:
    """The test server's deterministic simulator: the indices of the listed tokens whose text
    is one of the explanation's double-quoted words."""
    import re

    user = messages[-1]["content"]
    explanation = user.split("\n", 1)[0]
    words = {w.strip().lower() for w in re.findall(r'"([^"]+)"', explanation)}
    hits = []
    for line in user.split("Tokens:\n", 1)[1].splitlines():
        index, sep, text = line.partition(": ")
        if sep and index.isdigit() and json.loads(text).strip().lower() in words:
            hits.append(int(index))
    return f"The neuron fires at {json.dumps(hits)}."


class _FakeChat(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeChat.seen.append({"path": self.path, "auth": self.headers.get("Authorization"),
                               "body": body})  # fmt: skip
        if body.get("model") == "broken" or len(_FakeChat.seen) > MAX_REQUESTS:
            self.send_response(500 if body.get("model") == "broken" else 429)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "boom"}}')
            return
        messages = body["messages"]
        if messages[0]["content"].startswith("You predict where a neuron"):
            content = _simulate_reply(messages)
        else:
            content = 'Fires on animal words such as "cat" and "dog".'
        reply = {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": content}}],
        }  # fmt: skip
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def fake_server(monkeypatch):
    for var in PROXIES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = HTTPServer(("127.0.0.1", 0), _FakeChat)  # loopback only: tests/netblock allows it
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeChat.seen.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("client", ["openai", "urllib"])
def test_online_explainer_with_fake_server(fake_server, monkeypatch, capsys, client):
    if client == "urllib":
        monkeypatch.setitem(sys.modules, "openai", None)  # `import openai` fails
    else:
        pytest.importorskip("openai")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_server)
    rows, acts, labels = _world()
    ctx = latent_contexts(rows, acts, 3, labels, n_top=4, window=6)
    explainer = make_explainer(model="fake-model")
    assert isinstance(explainer, OpenAIExplainer)
    e = explainer.explain(ctx)
    assert e.tokens == {"cat", "dog"} and e.source == "openai:fake-model"
    seen = _FakeChat.seen[-1]
    assert seen["path"] == "/v1/chat/completions" and seen["auth"] == f"Bearer {SECRET}"
    assert "<< cat>>" in seen["body"]["messages"][-1]["content"]
    assert detection_score(e, ctx)["balanced_accuracy"] > 0.9
    broken = OpenAIExplainer(model="broken")
    with pytest.raises(RuntimeError, match="failed") as info:
        broken.explain(ctx)
    out = capsys.readouterr()
    for text in (repr(explainer), str(vars(explainer)), repr(e), str(info.value), out.out,
                 out.err, repr(broken)):  # fmt: skip
        assert SECRET not in text


def test_offline_path_with_sockets_blocked(monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert isinstance(make_explainer(), OfflineExplainer)
    assert capsys.readouterr().out.strip().count("\n") == 0  # one line
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://192.0.2.1:9/v1")
    chosen = make_explainer()
    out = capsys.readouterr()
    assert isinstance(chosen, OfflineExplainer) and "unreachable" in out.out
    assert out.out.strip().count("\n") == 0 and SECRET not in out.out + out.err
    rows, acts, labels = _world()
    ctx = latent_contexts(rows, acts, 0, labels)
    assert chosen.explain(ctx).label == "animal"  # works with no network at all
    with pytest.raises(RuntimeError) as info:
        OpenAIExplainer().explain(ctx)
    assert SECRET not in str(info.value)


def test_explainer_prompt_shape():
    rows, acts, _ = _world()
    ctx = latent_contexts(rows, acts, 0, n_top=3, window=5)
    messages = explainer_prompt(ctx)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"].count("<<") >= 3
    assert isinstance(autointerp.KeywordSimulator(), autointerp.Simulator)
    assert LatentContexts(0, [], [], []).top == []


@pytest.mark.parametrize("client", ["openai", "urllib"])
def test_llm_explain_and_simulate_end_to_end(fake_server, monkeypatch, capsys, client):
    """Explainer and simulator both through the real client code and a local test server."""
    if client == "urllib":
        monkeypatch.setitem(sys.modules, "openai", None)
    else:
        pytest.importorskip("openai")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_server)
    rows, acts, labels = _world()
    contexts = {lat: latent_contexts(rows, acts, lat, None, n_top=4, n_held_out=6, window=6,
                                     seed=lat) for lat in (0, 1)}  # fmt: skip
    explainer, simulator = make_explainer(model="fake-model"), autointerp.make_simulator("fake")
    assert isinstance(simulator, autointerp.OpenAISimulator)
    explanations = [explainer.explain(c) for c in contexts.values()]
    scores = score_explanations(explanations, contexts, simulator, progress=False)
    # the server's simulator marks exactly "cat" and "dog", where the latent fires
    assert (scores["detection_balanced_accuracy"] == 1.0).all()
    assert (scores["fuzzing_balanced_accuracy"] == 1.0).all()
    sims = [r for r in _FakeChat.seen if r["body"]["messages"][0]["content"].startswith("You pre")]
    n_contexts = sum(len(c.held_out_firing) + len(c.held_out_silent) for c in contexts.values())
    assert 0 < len(sims) <= n_contexts  # one request per distinct context, cached for fuzzing
    assert len(_FakeChat.seen) <= MAX_REQUESTS
    assert explanations[0].text in sims[0]["body"]["messages"][-1]["content"]
    assert sims[0]["body"]["temperature"] == 0.0 and sims[0]["auth"] == f"Bearer {SECRET}"
    # a wrong explanation through the same path scores at chance on detection
    wrong = Explanation(0, 'Fires on "ran".', frozenset({"ran"}))
    assert detection_score(wrong, contexts[0], simulator)["recall"] < 1.0
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err + repr(simulator)


def test_parse_simulation_and_prompt():
    assert autointerp.parse_simulation("fires at [0, 2]", 4) == [True, False, True, False]
    assert autointerp.parse_simulation("[] nothing", 3) == [False] * 3
    assert autointerp.parse_simulation("no list", 2) == [False, False]
    assert autointerp.parse_simulation("[9, 1] and [0]", 2) == [False, True]  # out of range
    assert autointerp.parse_simulation('["a"] then [1]', 2) == [False, True]
    ctx = Context((" cat", " sat"), (1.0, 0.0))
    messages = autointerp.simulator_prompt(Explanation(0, 'Fires on "cat".'), ctx)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert '0: " cat"' in messages[1]["content"] and 'Fires on "cat".' in messages[1]["content"]
    assert isinstance(autointerp.OpenAISimulator(), autointerp.Simulator)


def test_make_simulator_offline(monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert isinstance(autointerp.make_simulator(), KeywordSimulator)
    assert capsys.readouterr().out.strip().count("\n") == 0


class _NoisySimulator:
    """Keyword predictions flipped at random (seeded): varied confusion matrices."""

    def __init__(self, flip: float, seed: int = 0):
        self.flip, self.rng = flip, np.random.default_rng(seed)

    def predict(self, explanation, context):
        base = KeywordSimulator().predict(explanation, context)
        return [b != (self.rng.random() < self.flip) for b in base]


@pytest.mark.parametrize("scorer", ["detection", "fuzzing"])
def test_scoring_math_matches_delphi(scorer, reference_row):
    """Our detection and fuzzing metrics equal delphi's on the same simulated predictions."""
    from reference_envs import DELPHI, use_reference

    use_reference(DELPHI)
    from delphi.log.result_analysis import compute_classification_metrics, compute_confusion

    samples = autointerp.detection_samples if scorer == "detection" else autointerp.fuzzing_samples
    rows, acts, labels = _world(seed=3)
    explanations = [Explanation(0, "animal", frozenset(), "animal"),
                    Explanation(0, "cat", frozenset({"cat"})),
                    Explanation(0, "red", frozenset({"red"}), "colour"),
                    Explanation(0, "nothing")]  # fmt: skip
    diffs, n_cases, undefined = [], 0, 0
    for seed in range(6):
        ctx = latent_contexts(rows, acts, 0, labels, n_top=4, n_held_out=12, window=6, seed=seed)
        for flip in (0.0, 0.2, 0.5):
            for e in explanations:
                predicted, truth = samples(e, ctx, _NoisySimulator(flip, seed))
                ours = binary_scores(predicted, truth)
                frame = pd.DataFrame({"activating": truth,
                                      "prediction": [float(p) for p in predicted]})
                theirs = compute_classification_metrics(compute_confusion(frame))
                n_cases += 1
                for mine, key in (("balanced_accuracy", "accuracy"), ("precision", "precision"),
                                  ("recall", "recall")):  # fmt: skip
                    if np.isnan(ours[mine]):  # delphi writes 0 where a ratio is undefined
                        undefined += 1
                        assert float(theirs[key]) == 0.0
                    else:
                        diffs.append(abs(ours[mine] - float(theirs[key])))
    worst = max(diffs)
    ok = worst < 1e-12 and len(diffs) > 2 * n_cases
    reference_row(
        technique=f"autointerp {scorer} scoring",
        reference="delphi (eai-delphi 0.1.3) compute_confusion + compute_classification_metrics",
        quantity="balanced accuracy, precision, recall on the same simulated predictions",
        measured=f"max |difference| {worst:.1e} over {n_cases} score sets "
        f"({undefined} undefined ratios: ours NaN, delphi 0)",
        tolerance="1e-12",
        ok=ok,
        note="fuzzing as delphi's 'active' variant: each firing context once correctly "
        "highlighted and once with as many silent tokens highlighted",
    )
    assert ok, (worst, len(diffs), n_cases)
