"""A small client for Neuronpedia's public HTTP API, and offline fixtures in the same schema.

Neuronpedia (https://www.neuronpedia.org) hosts dashboards, explanations, activation search,
lists and steering for many public SAEs. An SAE is named there by its ``neuronpedia_id``,
``"<modelId>/<source>"`` (for example ``"gpt2-small/8-res-jb"``: model ``gpt2-small``, source
``8-res-jb``, that is layer 8 of the ``res-jb`` SAE set); SAELens stores it as
``sae.cfg.metadata.neuronpedia_id``. This module covers five workflows:

1. **A latent's page and its JSON.** :func:`feature_url` (the browser page) and
   ``GET /api/feature/{modelId}/{source}/{index}`` (:meth:`NeuronpediaClient.feature`),
   parsed by :func:`parse_feature` into a :class:`Feature`: explanations, top activating
   contexts (``activations``: ``tokens``, ``values``, ``maxValue``, ``maxValueTokenIndex``),
   promoted and suppressed logits (``pos_str``/``pos_values``, ``neg_str``/``neg_values``),
   ``frac_nonzero`` and ``maxActApprox``. Shape from SAELens' ``neuronpedia_integration.py``
   (``get_neuronpedia_feature`` reads this endpoint) and the Neuronpedia webapp's feature
   types (``hijohnnylin/neuronpedia``, ``apps/webapp``).
2. **Search explanations by text.** ``POST /api/explanation/search`` with ``modelId``,
   ``layers`` (sources) and ``query``; the answer's ``results`` hold ``modelId``, ``layer``,
   ``index``, ``description`` and, from the server's embedding search, ``cosine_similarity``
   (:meth:`NeuronpediaClient.search_explanations`, :func:`parse_explanation_search`). Shape
   from public client code calling this endpoint (e.g. requests reading ``results[*]``
   ``.modelId/.layer/.index/.description``) and the webapp's explanation-search route.
3. **Search features that fire on a text.** ``POST /api/search-all`` with ``modelId``,
   ``sourceSet``, ``text``, ``selectedLayers``, ``sortIndexes``, ``ignoreBos``, ``numResults``;
   the answer holds ``tokens`` and ``result`` rows with ``modelId``, ``layer``, ``index``,
   ``values`` (one per token), ``maxValue``, ``maxValueIndex``
   (:meth:`NeuronpediaClient.search_text`, :func:`parse_text_search`). Shape from the swagger
   block of ``apps/webapp/app/api/search-all/route.tsx`` in ``hijohnnylin/neuronpedia``.
4. **Lists.** :func:`list_url` builds a ``/quick-list/`` URL whose ``features`` parameter is
   the URL-encoded JSON list of ``{"modelId", "layer", "index"}``; the format SAELens'
   ``get_neuronpedia_quick_list`` writes.
5. **Steering.** ``POST /api/steer`` with ``prompt``, ``modelId``, ``features`` (``modelId``,
   ``layer``, ``index``, ``strength``), ``temperature``, ``n_tokens``, ``freq_penalty``,
   ``seed``, ``strength_multiplier``; the answer holds the ``STEERED`` and ``DEFAULT``
   completions (:meth:`NeuronpediaClient.steer`, :func:`parse_steer`). Shape from the
   webapp's steer route and public examples; :func:`saebook.steering.neuronpedia_steer` sends
   the same body.

Every response goes through one parse function, whether it came from the network or from the
fixtures shipped in ``saebook/neuronpedia_fixtures/``. Those fixtures were **not downloaded**:
:func:`build_fixtures` writes them in the API's schema from a model and SAE you pass (the
book ships the tiny profile's, made by ``scripts/make_neuronpedia_fixtures.py``), from their
real top activations, logits and activation search; their explanation texts are token lists
written by the script, and each file carries a ``"_note"`` saying so.

Chapters: intro/08
"""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import torch
from jaxtyping import Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from saebook.directions import check_latent
from saebook.errors import SaebookError
from saebook.hooks import reachable
from saebook.validate import check_int

__all__ = [
    "NEURONPEDIA_URL",
    "NEURONPEDIA_HOST",
    "FIXTURE_DIR",
    "FIXTURE_NAMES",
    "NeuronpediaError",
    "SaeRef",
    "ActivationRecord",
    "Feature",
    "ExplanationHit",
    "TextSearchHit",
    "TextSearch",
    "SteerResult",
    "parse_neuronpedia_id",
    "sae_ref",
    "feature_url",
    "feature_api_url",
    "list_url",
    "parse_feature",
    "parse_explanation_search",
    "parse_text_search",
    "parse_steer",
    "top_activation_tokens",
    "rank_explanations",
    "steer_body",
    "NeuronpediaClient",
    "online",
    "load_fixture",
    "build_fixtures",
    "write_fixtures",
    "feature_html",
]

NEURONPEDIA_URL = "https://www.neuronpedia.org"
NEURONPEDIA_HOST = ("www.neuronpedia.org", 443)
FIXTURE_DIR = Path(__file__).parent / "neuronpedia_fixtures"
FIXTURE_NAMES = ("feature", "explanation_search", "search_text")


class NeuronpediaError(SaebookError, RuntimeError):
    """A Neuronpedia request failed (HTTP status, URL and the start of the answer say how)."""


# ---------------------------------------------------------------------------------------------
# Ids and URLs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SaeRef:
    """An SAE as Neuronpedia names it: ``model_id`` (``gpt2-small``), ``source`` (``8-res-jb``)."""

    model_id: str
    source: str

    @property
    def source_set(self) -> str:
        """The SAE set: the source without its leading layer number (``res-jb``)."""
        head, _, rest = self.source.partition("-")
        return rest if head.isdigit() and rest else self.source

    def __str__(self) -> str:
        return f"{self.model_id}/{self.source}"


def parse_neuronpedia_id(neuronpedia_id: object) -> SaeRef:
    """Split ``"<modelId>/<source>"`` into a :class:`SaeRef`; anything else raises ValueError."""
    text = neuronpedia_id if isinstance(neuronpedia_id, str) else None
    model_id, _, source = (text or "").partition("/")
    if not model_id or not source or "/" in source or " " in (text or ""):
        raise ValueError(
            "neuronpedia_id must be '<modelId>/<source>' such as 'gpt2-small/8-res-jb', "
            f"got {neuronpedia_id!r}"
        )
    return SaeRef(model_id, source)


def sae_ref(sae: SAE) -> SaeRef:
    """The :class:`SaeRef` of ``sae`` from ``sae.cfg.metadata.neuronpedia_id``.

    Raises ValueError naming the SAE's hook when the SAE has no Neuronpedia id (an SAE you
    trained yourself, or the tiny profile's).
    """
    np_id = getattr(sae.cfg.metadata, "neuronpedia_id", None)
    if not np_id:
        raise ValueError(
            "sae.cfg.metadata.neuronpedia_id must be '<modelId>/<source>' for an SAE hosted on "
            f"Neuronpedia, got {np_id!r} (SAE on {sae.cfg.metadata.hook_name!r})"
        )
    return parse_neuronpedia_id(np_id)


def _ref(ref: SaeRef | str) -> SaeRef:
    return ref if isinstance(ref, SaeRef) else parse_neuronpedia_id(ref)


def feature_url(ref: SaeRef | str, index: int, base: str = NEURONPEDIA_URL) -> str:
    """The browser page of latent ``index``: ``{base}/{modelId}/{source}/{index}``."""
    ref = _ref(ref)
    index = check_int("index", index, minimum=0)
    return f"{base}/{ref.model_id}/{ref.source}/{index}"


def feature_api_url(ref: SaeRef | str, index: int, base: str = NEURONPEDIA_URL) -> str:
    """The JSON of latent ``index``: ``{base}/api/feature/{modelId}/{source}/{index}``."""
    ref = _ref(ref)
    index = check_int("index", index, minimum=0)
    return f"{base}/api/feature/{ref.model_id}/{ref.source}/{index}"


def list_url(
    ref: SaeRef | str, indices: list[int], name: str = "saebook list", base: str = NEURONPEDIA_URL
) -> str:
    """A quick-list URL that opens latents ``indices`` of one SAE together in the browser.

    ``{base}/quick-list/?name=<quoted name>&features=<quoted JSON>``, the JSON being a list of
    ``{"modelId", "layer": source, "index": str}`` in the order given.
    """
    ref = _ref(ref)
    if not isinstance(indices, (list, tuple)) or not indices:
        raise ValueError(f"indices must be a non-empty list of latent indices, got {indices!r}")
    items = [
        {"modelId": ref.model_id, "layer": ref.source, "index": str(check_int("index", i, 0))}
        for i in indices
    ]
    features = urllib.parse.quote(json.dumps(items))
    return f"{base}/quick-list/?name={urllib.parse.quote(str(name))}&features={features}"


# ---------------------------------------------------------------------------------------------
# Parsed responses
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivationRecord:
    """One top activating context: its tokens, the latent's value at each, and the maximum."""

    tokens: list[str]
    values: list[float]
    max_value: float
    max_index: int

    @property
    def max_token(self) -> str:
        """The token at which the latent is largest in this context."""
        return self.tokens[self.max_index]


@dataclass(frozen=True)
class Feature:
    """A latent's Neuronpedia page: explanations, top contexts and logits, density."""

    model_id: str
    source: str
    index: int
    explanations: list[str]
    activations: list[ActivationRecord]
    pos_logits: list[tuple[str, float]]
    neg_logits: list[tuple[str, float]]
    frac_nonzero: float | None = None
    max_act: float | None = None
    note: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ExplanationHit:
    """One explanation-search result: which latent, its explanation and the match score."""

    model_id: str
    source: str
    index: int
    description: str
    score: float | None


@dataclass(frozen=True)
class TextSearchHit:
    """One latent that fires on the searched text: its value at every token and its maximum."""

    model_id: str
    source: str
    index: int
    values: list[float]
    max_value: float
    max_index: int


@dataclass(frozen=True)
class TextSearch:
    """An activation search: the text's tokens and the latents that fire most on it."""

    tokens: list[str]
    hits: list[TextSearchHit]


@dataclass(frozen=True)
class SteerResult:
    """A steering answer: the completion with the latents steered, and without."""

    steered: str
    default: str


def _need(payload: object, key: str, what: str) -> Any:
    if not isinstance(payload, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(payload).__name__}")
    if key not in payload:
        raise ValueError(f"{what} must have a {key!r} field, got fields {sorted(payload)}")
    return payload[key]


def _activation(record: dict) -> ActivationRecord:
    tokens = [str(t) for t in _need(record, "tokens", "an activation record")]
    values = [float(v) for v in _need(record, "values", "an activation record")]
    if len(tokens) != len(values):
        raise ValueError(
            f"an activation record must have one value per token, got {len(tokens)} tokens "
            f"and {len(values)} values"
        )
    index = record.get("maxValueTokenIndex")
    index = int(index) if index is not None else max(range(len(values)), key=values.__getitem__)
    top = record.get("maxValue")
    return ActivationRecord(tokens, values, float(top if top is not None else values[index]), index)


def parse_feature(payload: dict) -> Feature:
    """A :class:`Feature` from the JSON of ``GET /api/feature/...`` (or its fixture).

    Activation records come sorted by ``maxValue``, largest first; explanations keep their order.
    """
    records = [_activation(r) for r in payload.get("activations") or []]
    records.sort(key=lambda r: -r.max_value)
    pos = zip(payload.get("pos_str") or [], payload.get("pos_values") or [], strict=True)
    neg = zip(payload.get("neg_str") or [], payload.get("neg_values") or [], strict=True)
    frac, top = payload.get("frac_nonzero"), payload.get("maxActApprox")
    return Feature(
        model_id=str(_need(payload, "modelId", "a feature")),
        source=str(_need(payload, "layer", "a feature")),
        index=int(_need(payload, "index", "a feature")),
        explanations=[str(e.get("description", "")) for e in payload.get("explanations") or []],
        activations=records,
        pos_logits=[(str(s), float(v)) for s, v in pos],
        neg_logits=[(str(s), float(v)) for s, v in neg],
        frac_nonzero=None if frac is None else float(frac),
        max_act=None if top is None else float(top),
        note=payload.get("_note"),
    )


def parse_explanation_search(payload: dict) -> list[ExplanationHit]:
    """The results of ``POST /api/explanation/search`` as :class:`ExplanationHit`, in order.

    The score is ``cosine_similarity`` when the answer has it, else ``score``, else None.
    """
    hits = []
    for row in _need(payload, "results", "an explanation search answer"):
        score = row.get("cosine_similarity", row.get("score"))
        hits.append(
            ExplanationHit(
                model_id=str(_need(row, "modelId", "a search result")),
                source=str(_need(row, "layer", "a search result")),
                index=int(_need(row, "index", "a search result")),
                description=str(row.get("description", "")),
                score=None if score is None else float(score),
            )
        )
    return hits


def parse_text_search(payload: dict) -> TextSearch:
    """The answer of ``POST /api/search-all`` as a :class:`TextSearch`, hits in the given order."""
    tokens = [str(t) for t in _need(payload, "tokens", "a text search answer")]
    hits = []
    for row in _need(payload, "result", "a text search answer"):
        values = [float(v) for v in _need(row, "values", "a text search result")]
        if len(values) != len(tokens):
            raise ValueError(
                f"a text search result must have one value per token ({len(tokens)}), "
                f"got {len(values)}"
            )
        hits.append(
            TextSearchHit(
                model_id=str(_need(row, "modelId", "a text search result")),
                source=str(_need(row, "layer", "a text search result")),
                index=int(_need(row, "index", "a text search result")),
                values=values,
                max_value=float(_need(row, "maxValue", "a text search result")),
                max_index=int(_need(row, "maxValueIndex", "a text search result")),
            )
        )
    return TextSearch(tokens, hits)


def parse_steer(payload: dict) -> SteerResult:
    """The answer of ``POST /api/steer`` as a :class:`SteerResult`."""
    steered = _need(payload, "STEERED", "a steering answer")
    return SteerResult(str(steered), str(_need(payload, "DEFAULT", "a steering answer")))


def top_activation_tokens(feature: Feature, k: int) -> list[tuple[str, float]]:
    """``(token at the maximum, maxValue)`` of the ``k`` strongest contexts, largest first.

    Ties keep the order of the answer (Python's sort is stable).
    """
    k = check_int("k", k, minimum=0)
    ranked = sorted(feature.activations, key=lambda r: -r.max_value)
    return [(r.max_token, r.max_value) for r in ranked[:k]]


def rank_explanations(hits: list[ExplanationHit], k: int) -> list[tuple[str, int, float]]:
    """The ``k`` best distinct latents of an explanation search, as ``(source, index, score)``.

    A latent with several matching explanations counts once, with its best score; latents are
    ranked by score, largest first, ties by source then index. Hits without a score are dropped.
    """
    k = check_int("k", k, minimum=0)
    best: dict[tuple[str, int], float] = {}
    for hit in hits:
        if hit.score is None:
            continue
        key = (hit.source, hit.index)
        best[key] = max(best.get(key, hit.score), hit.score)
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1]))
    return [(source, index, score) for (source, index), score in ranked[:k]]


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


def steer_body(
    ref: SaeRef | str,
    index: int,
    prompt: str,
    strength: float,
    n_tokens: int = 32,
    temperature: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """The JSON body of ``POST /api/steer`` that steers latent ``index`` by ``strength``."""
    ref = _ref(ref)
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    feature = {"modelId": ref.model_id, "layer": ref.source, "index": check_int("index", index, 0)}
    return {
        "prompt": prompt,
        "modelId": ref.model_id,
        "features": [{**feature, "strength": float(strength)}],
        "temperature": float(temperature),
        "n_tokens": check_int("n_tokens", n_tokens),
        "freq_penalty": 0,
        "seed": int(seed),
        "strength_multiplier": 1,
    }


def online(timeout: float = 2.0) -> bool:
    """Whether www.neuronpedia.org accepts a connection within ``timeout`` seconds."""
    return reachable(NEURONPEDIA_HOST, timeout)


class NeuronpediaClient:
    """Calls Neuronpedia's API with ``requests`` and parses each answer into a dataclass.

    ``api_key`` (default: the ``NEURONPEDIA_API_KEY`` environment variable) is sent as the
    ``x-api-key`` header when set; reading needs none, steering and search may. A failed
    request raises :class:`NeuronpediaError` with the method, the URL, the HTTP status and the
    start of the answer. Check :func:`online` first: the client does not.
    """

    def __init__(
        self,
        base: str = NEURONPEDIA_URL,
        api_key: str | None = None,
        timeout: float = 20.0,
        session: requests.Session | None = None,
    ) -> None:
        self.base = base.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("NEURONPEDIA_API_KEY")
        self.timeout = float(timeout)
        self.session = session if session is not None else requests.Session()

    def request(self, method: str, path: str, body: dict | None = None) -> Any:
        """``method`` ``{base}{path}`` with JSON ``body``; the decoded JSON answer."""
        url = f"{self.base}{path}"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        try:
            answer = self.session.request(
                method, url, json=body, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as err:
            raise NeuronpediaError(f"{method} {url} failed: {type(err).__name__}: {err}") from err
        if answer.status_code != 200:
            raise NeuronpediaError(
                f"{method} {url} returned HTTP {answer.status_code} (expected 200): "
                f"{answer.text[:200]!r}"
            )
        try:
            return answer.json()
        except ValueError as err:
            raise NeuronpediaError(
                f"{method} {url} returned HTTP 200 but not JSON: {answer.text[:200]!r}"
            ) from err

    def feature(self, ref: SaeRef | str, index: int) -> Feature:
        """Latent ``index``'s page data (``GET /api/feature/{modelId}/{source}/{index}``)."""
        url = feature_api_url(ref, index, base="")
        return parse_feature(self.request("GET", url))

    def search_explanations(
        self, ref: SaeRef | str, query: str, sources: list[str] | None = None
    ) -> list[ExplanationHit]:
        """Latents whose explanations match ``query`` (``POST /api/explanation/search``).

        ``sources`` defaults to the SAE's own source.
        """
        ref = _ref(ref)
        body = {"modelId": ref.model_id, "layers": sources or [ref.source], "query": query}
        return parse_explanation_search(self.request("POST", "/api/explanation/search", body))

    def search_text(
        self, ref: SaeRef | str, text: str, n_results: int = 20, ignore_bos: bool = True
    ) -> TextSearch:
        """Latents of the SAE that fire most on ``text`` (``POST /api/search-all``)."""
        ref = _ref(ref)
        body = {
            "modelId": ref.model_id,
            "sourceSet": ref.source_set,
            "text": text,
            "selectedLayers": [ref.source],
            "sortIndexes": [],
            "ignoreBos": bool(ignore_bos),
            "densityThreshold": -1,
            "numResults": check_int("n_results", n_results),
        }
        return parse_text_search(self.request("POST", "/api/search-all", body))

    def steer(
        self, ref: SaeRef | str, index: int, prompt: str, strength: float, **options: Any
    ) -> SteerResult:
        """Steered and default completions of ``prompt`` (``POST /api/steer``)."""
        body = steer_body(ref, index, prompt, strength, **options)
        return parse_steer(self.request("POST", "/api/steer", body))


# ---------------------------------------------------------------------------------------------
# Offline fixtures (built here from a model and SAE, never downloaded)
# ---------------------------------------------------------------------------------------------

_NOTE = (
    "Generated offline by saebook (scripts/make_neuronpedia_fixtures.py, "
    "saebook.neuronpedia.build_fixtures) from the {model} model and its SAE on {hook}: "
    "NOT downloaded from Neuronpedia. It follows the API's schema for {endpoint}; the "
    "activations and logits are the local model's and SAE's, the explanation texts are token "
    "lists written by the script{extra}."
)


def load_fixture(name: str, directory: str | os.PathLike | None = None) -> dict:
    """The shipped offline answer ``name`` (one of :data:`FIXTURE_NAMES`) as a JSON dict."""
    if name not in FIXTURE_NAMES:
        raise ValueError(f"name must be one of {list(FIXTURE_NAMES)}, got {name!r}")
    path = Path(directory or FIXTURE_DIR) / f"{name}.json"
    return json.loads(path.read_text())


def _r4(x: float) -> float:
    return round(float(x), 4)


def _strings(model: HookedSAETransformer, ids: list[int]) -> list[str]:
    return [model.tokenizer.decode([int(i)]) for i in ids]


def _explain(model: HookedSAETransformer, tokens: Tensor, acts: Tensor, n_examples: int) -> tuple:
    """Top rows of one latent (``acts``: rows x seq; BOS at 0 ignored) and a token-list
    explanation. Rows identical up to their peak (same prefix, same activations: the model is
    causal) count once."""
    row_max, row_arg = acts[:, 1:].max(dim=1)
    row_arg = row_arg + 1
    picked: list[int] = []
    seen: set[tuple] = set()
    for r in torch.argsort(row_max, descending=True, stable=True).tolist():
        if row_max[r] <= 0 or len(picked) == n_examples:
            break
        key = tuple(tokens[r, : int(row_arg[r]) + 1].tolist())
        if key not in seen:
            seen.add(key)
            picked.append(r)
    order = torch.tensor(picked, dtype=torch.long)
    top_tokens = _strings(model, [int(tokens[r, row_arg[r]]) for r in picked])
    distinct = list(dict.fromkeys(top_tokens))
    text = "tokens such as " + ", ".join(repr(t) for t in distinct[:3]) if distinct else ""
    return order, row_arg, top_tokens, text


def _feature_payload(model, sae, ref, tokens, acts, latent, n_examples, k_logits) -> dict:
    from saebook.dashboards import top_logits

    lat = acts[:, :, latent]
    order, row_arg, _, text = _explain(model, tokens, lat, n_examples)
    records = [
        {
            "tokens": _strings(model, tokens[r].tolist()),
            "values": [_r4(v) for v in lat[r].tolist()],
            "maxValue": _r4(lat[r, row_arg[r]]),
            "maxValueTokenIndex": int(row_arg[r]),
        }
        for r in order.tolist()
    ]
    up, up_ids = top_logits(model, sae, latent, k_logits, largest=True)
    down, down_ids = top_logits(model, sae, latent, k_logits, largest=False)
    return {
        "modelId": ref.model_id,
        "layer": ref.source,
        "index": str(latent),
        "explanations": [{"description": text, "typeName": "saebook-offline-token-list"}],
        "activations": records,
        "pos_str": _strings(model, up_ids.tolist()),
        "pos_values": [_r4(v) for v in up.tolist()],
        "neg_str": _strings(model, down_ids.tolist()),
        "neg_values": [_r4(v) for v in down.tolist()],
        "frac_nonzero": _r4((lat[:, 1:] > 0).float().mean()),
        "maxActApprox": _r4(lat[:, 1:].max()),
    }


def _search_payload(model, ref, tokens, acts, latents, query, n_examples) -> dict:
    results = []
    for latent in latents:
        _, _, top_tokens, text = _explain(model, tokens, acts[:, :, latent], n_examples)
        hits = sum(t.strip().lower() == query.lower() for t in top_tokens)
        share = hits / max(len(top_tokens), 1)
        if share > 0:
            results.append((share, latent, text))
    results.sort(key=lambda x: (-x[0], x[1]))
    rows = [
        {
            "modelId": ref.model_id,
            "layer": ref.source,
            "index": str(latent),
            "description": text,
            "score": _r4(share),
        }
        for share, latent, text in results
    ]
    return {
        "request": {"modelId": ref.model_id, "layers": [ref.source], "query": query},
        "results": rows,
        "resultsCount": len(rows),
        "hasMore": False,
    }


def _text_payload(model, sae, ref, text_tokens, n_results) -> dict:
    from saebook.latent_stats import encode_at_hook

    acts = encode_at_hook(model, sae, text_tokens[None]).detach().cpu()[0]  # seq x d_sae
    best, where = acts[1:].max(dim=0)  # BOS (position 0) ignored, as ignoreBos does
    order = torch.argsort(best, descending=True, stable=True)[:n_results]
    order = order[best[order] > 0]
    rows = [
        {
            "modelId": ref.model_id,
            "layer": ref.source,
            "index": str(int(i)),
            "values": [_r4(v) for v in acts[:, i].tolist()],
            "maxValue": _r4(best[i]),
            "maxValueIndex": int(where[i]) + 1,
        }
        for i in order.tolist()
    ]
    return {
        "tokens": _strings(model, text_tokens.tolist()),
        "result": rows,
        "counts": [],
        "sortIndexes": [],
    }


def _first_word_latent(model, tokens, acts, ranked: Tensor, n_examples: int) -> int:
    """The first latent of ``ranked`` whose top contexts peak on two or more distinct words."""
    for latent in ranked.tolist():
        _, _, top_tokens, _ = _explain(model, tokens, acts[:, :, latent], n_examples)
        words = {t.strip() for t in top_tokens if t.strip().isalpha()}
        if top_tokens and top_tokens[0].strip().isalpha() and len(words) >= 2:
            return int(latent)
    raise ValueError(
        f"no latent among the {len(ranked)} strongest peaks on two distinct words; pass more "
        "rows in tokens or a larger n_explained"
    )


def build_fixtures(
    model: HookedSAETransformer,
    sae: SAE,
    ref: SaeRef | str,
    tokens: Int[Tensor, "rows seq"],
    text_tokens: Int[Tensor, " seq"],
    n_examples: int = 8,
    k_logits: int = 10,
    n_explained: int = 256,
    n_results: int = 10,
    max_density: float = 0.05,
) -> dict[str, dict]:
    """Offline answers in the API's schema for one SAE, keyed by :data:`FIXTURE_NAMES` entries.

    ``tokens`` (rows starting with BOS) are encoded once; position 0 is ignored everywhere.
    Latents firing on at most ``max_density`` of the tokens are ranked by their largest
    activation; the feature page is that of the first whose top contexts peak on words (its
    strongest on a word, and on two distinct words in all). Its ``n_examples`` strongest
    distinct rows, ``k_logits`` promoted and suppressed tokens, density and maximum are the
    SAE's own. Explanations are
    the first three distinct tokens at the maxima of a latent's top rows. The explanation
    search asks for the chosen latent's top token among the ``n_explained`` strongest such
    latents and scores each by the share of its ``n_examples`` top rows peaking on that token
    (``score``; the live API returns an embedding ``cosine_similarity`` instead). The text
    search runs ``text_tokens`` and returns the ``n_results`` latents with the largest maxima.
    Each answer carries a ``"_note"`` saying it was generated offline. No ``steer`` fixture is
    built (steering runs locally in intro/06).
    """
    from saebook.latent_stats import encode_at_hook

    ref = _ref(ref)
    if tokens.ndim != 2 or text_tokens.ndim != 1:
        raise ValueError(
            f"tokens must be (rows, seq) and text_tokens (seq,), got {tuple(tokens.shape)} "
            f"and {tuple(text_tokens.shape)}"
        )
    with torch.no_grad():
        acts = encode_at_hook(model, sae, tokens).detach().cpu()
        tokens = tokens.cpu()
        body = acts[:, 1:]
        density = (body > 0).float().mean(dim=(0, 1))
        peak = body.amax(dim=(0, 1)).masked_fill(density > max_density, 0.0)
        ranked = torch.argsort(peak, descending=True, stable=True)[:n_explained]
        latent = check_latent(sae, _first_word_latent(model, tokens, acts, ranked, n_examples))
        feature = _feature_payload(model, sae, ref, tokens, acts, latent, n_examples, k_logits)
        query = parse_feature(feature).activations[0].max_token.strip()
        search = _search_payload(model, ref, tokens, acts, ranked.tolist(), query, n_examples)
        text = _text_payload(model, sae, ref, text_tokens.cpu(), n_results)
    meta = {"model": sae.cfg.metadata.model_name, "hook": sae.cfg.metadata.hook_name}
    feature["_note"] = _NOTE.format(endpoint="GET /api/feature", extra="", **meta)
    search["_note"] = _NOTE.format(
        endpoint="POST /api/explanation/search",
        **meta,
        extra="; 'score' is the share of a latent's top contexts peaking on the query token, "
        "not the live API's embedding cosine_similarity",
    )
    text["_note"] = _NOTE.format(endpoint="POST /api/search-all", extra="", **meta)
    return {"feature": feature, "explanation_search": search, "search_text": text}


def write_fixtures(
    payloads: dict[str, dict], directory: str | os.PathLike | None = None
) -> list[Path]:
    """Write each payload of :func:`build_fixtures` to ``<directory>/<name>.json``; the paths."""
    from saebook.files import atomic_write_text

    out = Path(directory or FIXTURE_DIR)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, payload in payloads.items():
        if name not in FIXTURE_NAMES:
            raise ValueError(f"payload names must be among {list(FIXTURE_NAMES)}, got {name!r}")
        path = out / f"{name}.json"
        atomic_write_text(path, json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# A feature page summary
# ---------------------------------------------------------------------------------------------


def _token_html(token: str, value: float, top: float) -> str:
    import html

    alpha = 0.0 if top <= 0 else max(0.0, min(1.0, value / top))
    text = html.escape(token).replace(" ", "&nbsp;").replace("\n", "\\n")
    return (
        f"<span title='{value:.3f}' style='background:rgba(255,120,0,{alpha:.2f});"
        f"border-radius:2px'>{text}</span>"
    )


def feature_html(feature: Feature, n_examples: int = 5, window: int = 12) -> str:
    """An HTML summary of a :class:`Feature`: explanations, top contexts shaded by activation
    (``window`` tokens before each maximum, a few after), promoted and suppressed tokens."""
    import html

    n_examples = check_int("n_examples", n_examples, minimum=1)
    top = max((r.max_value for r in feature.activations), default=0.0)
    rows = []
    for rec in feature.activations[:n_examples]:
        lo, hi = max(0, rec.max_index - window), min(len(rec.tokens), rec.max_index + 4)
        spans = "".join(
            _token_html(t, v, top)
            for t, v in zip(rec.tokens[lo:hi], rec.values[lo:hi], strict=True)
        )
        rows.append(
            f"<tr><td>{rec.max_value:.2f}</td><td style='font-family:monospace'>{spans}</td></tr>"
        )
    logits = " ".join(
        f"<code>{html.escape(s)}</code>&nbsp;{v:+.2f}" for s, v in feature.pos_logits[:8]
    )
    explained = "; ".join(html.escape(e) for e in feature.explanations) or "(none)"
    return (
        f"<div><b>{html.escape(feature.model_id)}/{html.escape(feature.source)} latent "
        f"{feature.index}</b><br>explanation: {explained}<br>promotes: {logits}"
        f"<table>{''.join(rows)}</table></div>"
    )
