"""Automated interpretability: explain latents from their top examples, then score the text.

The loop has two halves.

*Explain*: show an explainer the contexts where a latent fires hardest (the firing tokens
marked) and get back a short explanation. :class:`Explainer` is a protocol; two are provided:

* :class:`OfflineExplainer` works with no language model. It lists the tokens the latent fires
  on most and, when the contexts carry ground-truth token labels (the tiny world has them),
  names the label that best covers the firing tokens.
* :class:`OpenAIExplainer` sends the same examples to any OpenAI-compatible chat-completions
  endpoint. It reads its key only from the environment (``OPENAI_API_KEY``, with optional
  ``OPENAI_BASE_URL``), never prints or stores it, and uses the ``openai`` package when it is
  installed, plain HTTP otherwise. :func:`make_explainer` picks it only when a key is set and
  the endpoint answers, else says so in one line and returns the offline explainer.

*Score*: a simulator reads the explanation and predicts, token by token, where the latent
fires. :class:`KeywordSimulator` (offline) predicts a token from the explanation's tokens and
label; :class:`OpenAISimulator` asks a language model with :func:`simulator_prompt`. Offline,
the loop is circular on the tiny world: the explainer names a ground-truth label and the
simulator predicts exactly the tokens that carry it, so the score measures how well the label
matches the latent, not how good the explanation *method* is (compare with an explainer that
sees only the top tokens, and with explanations shuffled across latents). Two scorers compare
the predictions with the truth on held-out contexts:

* **detection**: does the simulator tell contexts where the latent fires from contexts where it
  does not? (balanced accuracy, precision, recall);
* **fuzzing**: shown a firing context with some tokens highlighted, does the simulator accept
  the highlight when it marks the truly firing tokens and reject it when it marks random ones?

Chapters: deeper/05, deeper/06, deeper/07
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from saebook.hooks import reachable

__all__ = [
    "Context",
    "LatentContexts",
    "Explanation",
    "Explainer",
    "Simulator",
    "OfflineExplainer",
    "OpenAIExplainer",
    "KeywordSimulator",
    "make_explainer",
    "best_matching_labels",
    "latent_contexts",
    "explainer_prompt",
    "simulator_prompt",
    "OpenAISimulator",
    "make_simulator",
    "parse_simulation",
    "detection_samples",
    "fuzzing_samples",
    "detection_score",
    "fuzzing_score",
    "score_explanations",
    "precision_recall_plot",
    "binary_scores",
]

KEY_VAR = "OPENAI_API_KEY"
BASE_URL_VAR = "OPENAI_BASE_URL"
DEFAULT_BASE_URL = "https://api.openai.com/v1"


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """A window of token texts, the latent's activation at each, and optional token labels."""

    tokens: tuple[str, ...]
    acts: tuple[float, ...]
    labels: tuple[frozenset[str], ...] | None = None

    @property
    def fires(self) -> bool:
        """Whether the latent fires anywhere in the window."""
        return any(a > 0 for a in self.acts)

    def marked(self, threshold: float = 0.0) -> str:
        """The text with tokens above ``threshold`` wrapped as ``<<token>>``."""
        return "".join(
            f"<<{t}>>" if a > threshold else t for t, a in zip(self.tokens, self.acts, strict=True)
        )


@dataclass
class LatentContexts:
    """One latent's examples: top contexts to explain from, held-out ones to score on."""

    latent: int
    top: list[Context]
    held_out_firing: list[Context]
    held_out_silent: list[Context]


@dataclass(frozen=True)
class Explanation:
    """An explanation of one latent: its text, and what a simulator can match.

    ``tokens`` are token texts (compared stripped and lower-cased) and ``label`` a
    ground-truth label name; either may be empty.
    """

    latent: int
    text: str
    tokens: frozenset[str] = frozenset()
    label: str | None = None
    source: str = "offline"


@runtime_checkable
class Explainer(Protocol):
    """Anything that turns a latent's contexts into an :class:`Explanation`."""

    def explain(self, contexts: LatentContexts) -> Explanation: ...


@runtime_checkable
class Simulator(Protocol):
    """Anything that predicts, per token of a context, whether an explanation says it fires."""

    def predict(self, explanation: Explanation, context: Context) -> list[bool]: ...


# ---------------------------------------------------------------------------------------------
# Ground truth and contexts
# ---------------------------------------------------------------------------------------------


def best_matching_labels(
    latent_acts: Float[Tensor, "n d_sae"],
    labels: Mapping[str, Bool[Tensor, " n"]],
    min_fires: int = 10,
) -> pd.DataFrame:
    """For every latent, the ground-truth label that best matches where it fires.

    A latent "predicts" a label where its activation is > 0. Returns one row per latent that
    fires at least ``min_fires`` times, with ``latent``, ``fires``, ``label`` (best by F1),
    ``precision``, ``recall`` and ``f1``, sorted by ``f1``, best first.
    """
    if latent_acts.ndim != 2:
        raise ValueError(
            f"latent_acts must be 2-D (positions, latents), got {tuple(latent_acts.shape)}"
        )
    if not labels:
        raise ValueError("labels must hold at least one label, got none")
    n = latent_acts.shape[0]
    fires = (latent_acts > 0).float()
    count = fires.sum(0)
    names, f1s, precs, recs = list(labels), [], [], []
    for name in names:
        lab = labels[name]
        if lab.shape != (n,):
            raise ValueError(f"labels[{name!r}] must have shape ({n},), got {tuple(lab.shape)}")
        lab = lab.to(fires.device).float()
        tp = lab @ fires
        p, r = tp / count.clamp(min=1), tp / lab.sum().clamp(min=1)
        precs.append(p)
        recs.append(r)
        f1s.append(2 * p * r / (p + r).clamp(min=1e-12))
    f1 = torch.stack(f1s)
    best = f1.argmax(0)
    keep = torch.nonzero(count >= min_fires).flatten()
    idx = torch.arange(f1.shape[1])
    table = pd.DataFrame(
        {
            "latent": keep.numpy(),
            "fires": count[keep].long().numpy(),
            "label": [names[int(b)] for b in best[keep]],
            "precision": torch.stack(precs)[best, idx][keep].numpy(),
            "recall": torch.stack(recs)[best, idx][keep].numpy(),
            "f1": f1[best, idx][keep].numpy(),
        }
    )
    return table.sort_values("f1", ascending=False, ignore_index=True)


def _checked_context_inputs(
    str_tokens: Sequence[Sequence[str]],
    acts: object,
    token_labels: Mapping[str, Tensor] | None,
    *,
    n_top: int,
    n_held_out: int,
    window: int,
) -> tuple[Tensor, list[str], Tensor | None]:
    """The checked arguments of :func:`latent_contexts`: activations as float on the CPU, the
    label names (sorted) and the labels stacked as ``(rows, seq, n_labels)`` (or None)."""
    if not isinstance(acts, Tensor) or acts.ndim != 2:
        shape = tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__
        raise ValueError(f"acts must be a 2-D tensor (rows, seq), got {shape}")
    rows, seq = acts.shape
    if len(str_tokens) != rows or any(len(r) != seq for r in str_tokens):
        raise ValueError(f"str_tokens must be {rows} rows of {seq} token strings, like acts")
    for name, value in (("n_top", n_top), ("n_held_out", n_held_out), ("window", window)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if window > seq:
        raise ValueError(f"window must be at most seq ({seq}), got {window}")
    acts = acts.float().cpu()
    names = sorted(token_labels) if token_labels else []
    stacked = (
        torch.stack([token_labels[n].bool().cpu() for n in names], -1) if names else None
    )  # (rows, seq, n_labels)
    if stacked is not None and stacked.shape[:2] != (rows, seq):
        raise ValueError(
            f"token_labels must have shape ({rows}, {seq}), got {tuple(stacked.shape[:2])}"
        )
    return acts, names, stacked


def latent_contexts(
    str_tokens: Sequence[Sequence[str]],
    acts: Float[Tensor, "rows seq"],
    latent: int = 0,
    token_labels: Mapping[str, Bool[Tensor, "rows seq"]] | None = None,
    n_top: int = 10,
    n_held_out: int = 20,
    window: int = 8,
    seed: int = 0,
) -> LatentContexts:
    """Cut one latent's activations into explanation and scoring contexts.

    Rows are split in two halves at random (``seed``): the first half gives the ``n_top``
    contexts around the strongest activations (one per row), the second gives up to
    ``n_held_out`` firing contexts (windows around random firing positions) and as many silent
    windows (where the latent is 0 at every token). A window holds ``window`` tokens ending
    two tokens after its centre. ``token_labels`` attaches each token's ground-truth labels.
    """
    acts, names, stacked = _checked_context_inputs(
        str_tokens, acts, token_labels, n_top=n_top, n_held_out=n_held_out, window=window
    )
    rows, seq = acts.shape

    def ctx(row: int, centre: int) -> Context:
        end = min(seq, max(window, centre + 3))
        start = end - window
        labs = None
        if stacked is not None:
            labs = tuple(
                frozenset(names[j] for j in torch.nonzero(stacked[row, p]).flatten().tolist())
                for p in range(start, end)
            )
        return Context(
            tuple(str_tokens[row][start:end]), tuple(acts[row, start:end].tolist()), labs
        )

    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(rows, generator=gen)
    first, second = order[: max(1, rows // 2)], order[max(1, rows // 2) :]
    peak, where = acts[first].max(-1)
    top = []
    for i in peak.argsort(descending=True)[:n_top].tolist():
        if peak[i] > 0:
            top.append(ctx(int(first[i]), int(where[i])))
    firing, silent = [], []
    held = acts[second]
    fire_pos = torch.nonzero(held > 0)
    if fire_pos.numel():
        pick = fire_pos[torch.randperm(len(fire_pos), generator=gen)]
        used: set[int] = set()
        for r, p in pick.tolist():
            if r in used:
                continue
            used.add(r)
            firing.append(ctx(int(second[r]), p))
            if len(firing) == n_held_out:
                break
    starts = torch.randperm(len(second) * (seq - window + 1), generator=gen).tolist()
    for s in starts:
        r, p = divmod(s, seq - window + 1)
        if held[r, p : p + window].max() <= 0:
            silent.append(ctx(int(second[r]), p + window - 3))
            if len(silent) == max(1, len(firing)):
                break
    return LatentContexts(latent, top, firing, silent)


# ---------------------------------------------------------------------------------------------
# Explainers
# ---------------------------------------------------------------------------------------------


def _norm(token: str) -> str:
    return token.strip().lower()


class OfflineExplainer:
    """Explain a latent from token statistics of its top contexts, with no language model.

    The explanation lists the ``n_tokens`` token texts (stripped, lower-cased) that carry the
    most activation in the top contexts, and, when the contexts carry labels (unless
    ``use_labels`` is False), a label: among the labels held by at least ``min_label_share``
    of the firing tokens, the one with the best F1 of "has the label" against "fires" over
    all tokens of the top contexts (so ``name_lily`` beats ``name`` for a latent that fires
    on Lily only, when other names appear in its contexts).
    """

    def __init__(
        self, n_tokens: int = 5, min_label_share: float = 0.5, use_labels: bool = True
    ) -> None:
        if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
            raise ValueError(f"n_tokens must be a positive int, got {n_tokens!r}")
        if not 0 <= min_label_share <= 1:
            raise ValueError(f"min_label_share must be in [0, 1], got {min_label_share!r}")
        self.n_tokens = n_tokens
        self.min_label_share = min_label_share
        self.use_labels = use_labels

    def explain(self, contexts: LatentContexts) -> Explanation:
        weight: Counter[str] = Counter()
        label_hits: Counter[str] = Counter()  # firing tokens with the label
        label_total: Counter[str] = Counter()  # all tokens of the contexts with the label
        n_firing = 0
        for c in contexts.top:
            for i, (t, a) in enumerate(zip(c.tokens, c.acts, strict=True)):
                if c.labels is not None:
                    label_total.update(c.labels[i])
                if a > 0:
                    weight[_norm(t)] += a
                    n_firing += 1
                    if c.labels is not None:
                        label_hits.update(c.labels[i])
        tokens = [t for t, _ in weight.most_common(self.n_tokens)]
        label = None
        if self.use_labels and label_hits and n_firing:
            f1 = {
                name: 2 * hits / (n_firing + label_total[name])
                for name, hits in label_hits.items()
                if hits / n_firing >= self.min_label_share
            }
            if f1:
                label = max(sorted(f1), key=f1.__getitem__)
        quoted = ", ".join(repr(t) for t in tokens) or "nothing"
        text = f"fires on tokens like {quoted}"
        if label:
            text = f"fires on {label} tokens ({quoted})"
        return Explanation(contexts.latent, text, frozenset(tokens), label, "offline")


def explainer_prompt(contexts: LatentContexts, max_examples: int = 10) -> list[dict[str, str]]:
    """Chat messages asking for a one-sentence explanation of the marked tokens."""
    lines = [f"{i + 1}. {c.marked()}" for i, c in enumerate(contexts.top[:max_examples])]
    return [
        {
            "role": "system",
            "content": "You explain what a neuron in a language model responds to. Tokens where it "
            "fires are marked <<like this>>. Answer with one short sentence; quote key tokens in "
            "double quotes.",
        },
        {"role": "user", "content": "Examples:\n" + "\n".join(lines) + "\nExplanation:"},
    ]


class OpenAIChat:
    """A client for any OpenAI-compatible chat-completions endpoint.

    The key is read from ``os.environ[OPENAI_API_KEY]`` at each call and never kept on the
    object, printed or put in an exception. ``base_url`` defaults to ``$OPENAI_BASE_URL`` or
    OpenAI's. Requests use temperature 0 and at most ``max_tokens`` tokens, through the
    ``openai`` package when it is installed and plain HTTP otherwise.
    """

    max_tokens = 60

    def __init__(
        self, model: str = "gpt-4o-mini", base_url: str | None = None, timeout: float = 30.0
    ) -> None:
        self.model = model
        self.base_url = (base_url or os.environ.get(BASE_URL_VAR) or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    def _key(self) -> str:
        key = os.environ.get(KEY_VAR, "")
        if not key:
            name = type(self).__name__
            raise RuntimeError(f"{name} needs ${KEY_VAR} in the environment; not set")
        return key

    def _failed(self, exc: BaseException) -> str:
        """An error line naming the endpoint and the error type (never the key or the body)."""
        return f"chat completion at {self.base_url} failed: {type(exc).__name__}"

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The endpoint's answer to ``messages`` (``openai`` package if installed, else HTTP)."""
        try:
            import openai
        except ImportError:
            openai = None
        if openai is not None:
            client = openai.OpenAI(
                api_key=self._key(), base_url=self.base_url, timeout=self.timeout, max_retries=0
            )
            try:
                reply = client.chat.completions.create(
                    model=self.model, messages=messages, temperature=0.0,
                    max_tokens=self.max_tokens,
                )  # fmt: skip
            except openai.OpenAIError as exc:
                raise RuntimeError(self._failed(exc)) from None
            return reply.choices[0].message.content or ""
        body = json.dumps(
            {"model": self.model, "messages": messages, "temperature": 0.0,
             "max_tokens": self.max_tokens}
        ).encode()  # fmt: skip
        request = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=body, method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._key()}"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RuntimeError(self._failed(exc)) from None
        return data["choices"][0]["message"]["content"] or ""


class OpenAIExplainer(OpenAIChat):
    """Explain latents with an OpenAI-compatible endpoint (see :class:`OpenAIChat`).

    Sends :func:`explainer_prompt`; quoted words of the answer become the explanation's tokens.
    """

    def explain(self, contexts: LatentContexts) -> Explanation:
        text = self.complete(explainer_prompt(contexts)).strip()
        tokens = frozenset(_norm(t) for t in re.findall(r'"([^"]+)"', text) if t.strip())
        return Explanation(contexts.latent, text, tokens, None, f"openai:{self.model}")


def simulator_prompt(explanation: Explanation, context: Context) -> list[dict[str, str]]:
    """Chat messages asking which numbered tokens of ``context`` the explanation says fire.

    The tokens are listed one per line as ``index: "text"``; the answer must be a JSON list of
    indices (``[]`` when none), read by :func:`parse_simulation`.
    """
    lines = [f"{i}: {json.dumps(t)}" for i, t in enumerate(context.tokens)]
    return [
        {
            "role": "system",
            "content": "You predict where a neuron in a language model fires, from an "
            "explanation of what it responds to. You get the explanation and a numbered list of "
            "tokens. Answer only with a JSON list of the numbers of the tokens where the neuron "
            "fires, [] if none.",
        },
        {
            "role": "user",
            "content": f"Explanation: {explanation.text}\nTokens:\n" + "\n".join(lines)
            + "\nAnswer:",
        },
    ]


def parse_simulation(reply: str, n_tokens: int) -> list[bool]:
    """Token predictions from a simulator's reply: the first JSON list of integers in it.

    Indices outside ``[0, n_tokens)`` are ignored; a reply with no such list predicts nothing.
    """
    for match in re.finditer(r"\[[^\[\]]*\]", reply):
        try:
            items = json.loads(match.group(0))
        except ValueError:
            continue
        if all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            chosen = {i for i in items if 0 <= i < n_tokens}
            return [i in chosen for i in range(n_tokens)]
    return [False] * n_tokens


class OpenAISimulator(OpenAIChat):
    """Simulate a latent from its explanation with an OpenAI-compatible endpoint.

    Sends :func:`simulator_prompt` for each context (one request per context, answers cached
    per explanation text and context so the two scorers share them) and reads the reply with
    :func:`parse_simulation`.
    """

    max_tokens = 100

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._cache: dict[tuple[str, tuple[str, ...]], list[bool]] = {}

    def predict(self, explanation: Explanation, context: Context) -> list[bool]:
        key = (explanation.text, context.tokens)
        if key not in self._cache:
            reply = self.complete(simulator_prompt(explanation, context))
            self._cache[key] = parse_simulation(reply, len(context.tokens))
        return list(self._cache[key])


def make_explainer(
    model: str = "gpt-4o-mini", offline: OfflineExplainer | None = None
) -> Explainer:
    """An :class:`OpenAIExplainer` when ``$OPENAI_API_KEY`` is set and its endpoint answers.

    Otherwise prints one line saying why and returns ``offline`` (default
    :class:`OfflineExplainer()`).
    """
    offline = offline or OfflineExplainer()
    if not os.environ.get(KEY_VAR):
        print(f"No ${KEY_VAR} in the environment: using the offline explainer.")
        return offline
    online = OpenAIExplainer(model=model)
    if not reachable(online.base_url):
        print(f"{online.base_url} is unreachable: using the offline explainer.")
        return offline
    return online


def make_simulator(model: str = "gpt-4o-mini") -> Simulator:
    """An :class:`OpenAISimulator` when ``$OPENAI_API_KEY`` is set and its endpoint answers.

    Otherwise prints one line saying why and returns a :class:`KeywordSimulator`.
    """
    if not os.environ.get(KEY_VAR):
        print(f"No ${KEY_VAR} in the environment: using the keyword simulator.")
        return KeywordSimulator()
    online = OpenAISimulator(model=model)
    if not reachable(online.base_url):
        print(f"{online.base_url} is unreachable: using the keyword simulator.")
        return KeywordSimulator()
    return online


# ---------------------------------------------------------------------------------------------
# Simulation and scoring
# ---------------------------------------------------------------------------------------------


class KeywordSimulator:
    """Predict a token fires when the explanation names it, or names one of its labels."""

    def predict(self, explanation: Explanation, context: Context) -> list[bool]:
        out = []
        for i, t in enumerate(context.tokens):
            hit = _norm(t) in explanation.tokens and _norm(t) != ""
            if not hit and explanation.label and context.labels is not None:
                hit = explanation.label in context.labels[i]
            out.append(hit)
        return out


def binary_scores(predicted: Sequence[bool], truth: Sequence[bool]) -> dict[str, float]:
    """Balanced accuracy, precision, recall and accuracy of boolean predictions.

    Precision is NaN when nothing is predicted positive; recall (specificity) NaN when there
    is no positive (negative) truth, and balanced accuracy is then the defined one of the two.
    """
    p = np.asarray(predicted, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(
            f"predicted and truth must have the same length, got {p.shape} and {t.shape}"
        )
    tp, fp = int((p & t).sum()), int((p & ~t).sum())
    fn, tn = int((~p & t).sum()), int((~p & ~t).sum())
    recall = tp / (tp + fn) if tp + fn else float("nan")
    specificity = tn / (tn + fp) if tn + fp else float("nan")
    precision = tp / (tp + fp) if tp + fp else float("nan")
    balanced = float(np.nanmean([recall, specificity])) if tp + fn or tn + fp else float("nan")
    accuracy = (tp + tn) / len(t) if len(t) else float("nan")
    return {"balanced_accuracy": balanced, "precision": precision, "recall": recall,
            "accuracy": accuracy}  # fmt: skip


def detection_samples(
    explanation: Explanation, contexts: LatentContexts, simulator: Simulator | None = None
) -> tuple[list[bool], list[bool]]:
    """Detection's (predicted, truth) per held-out context, firing contexts first.

    A context is predicted firing when the simulator predicts any of its tokens; it truly
    fires when the latent fires anywhere in it.
    """
    simulator = simulator or KeywordSimulator()
    held = contexts.held_out_firing + contexts.held_out_silent
    predicted = [any(simulator.predict(explanation, c)) for c in held]
    truth = [True] * len(contexts.held_out_firing) + [False] * len(contexts.held_out_silent)
    return predicted, truth


def detection_score(
    explanation: Explanation, contexts: LatentContexts, simulator: Simulator | None = None
) -> dict[str, float]:
    """Detection: predict, per held-out context, whether the latent fires anywhere in it.

    Returns :func:`binary_scores` of :func:`detection_samples` over the held-out firing
    (positive) and silent (negative) contexts.
    """
    return binary_scores(*detection_samples(explanation, contexts, simulator))


def fuzzing_samples(
    explanation: Explanation,
    contexts: LatentContexts,
    simulator: Simulator | None = None,
    seed: int = 0,
) -> tuple[list[bool], list[bool]]:
    """Fuzzing's (accepted, correctly highlighted) per highlighted version of a context.

    For every held-out firing context that has firing and silent tokens, the *correct*
    version highlights its firing tokens and the *random* version as many tokens drawn from
    the silent ones. The simulator accepts a version when it predicts every highlighted token.
    """
    simulator = simulator or KeywordSimulator()
    rng = np.random.default_rng(seed)
    predicted, truth = [], []
    for c in contexts.held_out_firing:
        on = [i for i, a in enumerate(c.acts) if a > 0]
        off = [i for i, a in enumerate(c.acts) if a <= 0]
        if not on or not off:
            continue
        guess = simulator.predict(explanation, c)
        fake = rng.choice(off, size=min(len(on), len(off)), replace=False).tolist()
        predicted += [all(guess[i] for i in on), all(guess[i] for i in fake)]
        truth += [True, False]
    return predicted, truth


def fuzzing_score(
    explanation: Explanation,
    contexts: LatentContexts,
    simulator: Simulator | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Fuzzing: accept correctly highlighted contexts, reject randomly highlighted ones.

    Returns :func:`binary_scores` of :func:`fuzzing_samples`, correct versions as positives.
    """
    return binary_scores(*fuzzing_samples(explanation, contexts, simulator, seed))


def score_explanations(
    explanations: Sequence[Explanation],
    contexts: Mapping[int, LatentContexts],
    simulator: Simulator | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Detection and fuzzing scores of each explanation on its latent's held-out contexts.

    One row per explanation: ``latent``, ``explanation``, ``label``, then ``detection_*`` and
    ``fuzzing_*`` columns (balanced accuracy, precision, recall) and ``n_held_out``.
    """
    from tqdm import tqdm

    rows = []
    for e in tqdm(explanations, desc="scoring explanations", disable=not progress, leave=False):
        if e.latent not in contexts:
            raise KeyError(f"contexts must hold latent {e.latent} (explanation's latent), got none")
        c = contexts[e.latent]
        det = detection_score(e, c, simulator)
        fuz = fuzzing_score(e, c, simulator)
        row = {"latent": e.latent, "explanation": e.text, "label": e.label}
        row |= {f"detection_{k}": v for k, v in det.items() if k != "accuracy"}
        row |= {f"fuzzing_{k}": v for k, v in fuz.items() if k != "accuracy"}
        row["n_held_out"] = len(c.held_out_firing) + len(c.held_out_silent)
        rows.append(row)
    return pd.DataFrame(rows)


def precision_recall_plot(
    curves: Mapping[str, pd.DataFrame], x: str = "recall", y: str = "precision",
    title: str = "Detection: precision against recall",
) -> go.Figure:  # fmt: skip
    """One line per named frame (points in row order), ``x`` against ``y``; hover shows ``step``.

    Each frame needs ``x`` and ``y`` columns and may have a ``step`` column (e.g. the number of
    explanation tokens) shown next to each point.
    """
    fig = go.Figure()
    for name, frame in curves.items():
        for col in (x, y):
            if col not in frame.columns:
                raise KeyError(
                    f"curves[{name!r}] must have a {col!r} column, got {list(frame.columns)}"
                )
        text = frame["step"].astype(str).tolist() if "step" in frame.columns else None
        fig.add_trace(
            go.Scatter(x=frame[x].round(4), y=frame[y].round(4), mode="lines+markers+text",
                       text=text, textposition="top center", name=name)
        )  # fmt: skip
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=420,
                      xaxis_range=[0, 1.05], yaxis_range=[0, 1.05])  # fmt: skip
    return fig
