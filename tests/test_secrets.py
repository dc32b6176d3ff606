"""No secrets in what the book publishes.

API keys (OpenAI, Hugging Face, ...) are read only from the environment, never written into a
chapter. These tests scan what a build produces, the executed notebooks
(``_build/executed/``, written by the chapter runner) and the built site (the ``site_html``
fixture: the site assembled from those notebooks, or ``$SAEBOOK_SITE_HTML``),
plus the chapter sources and the package, for key-like strings: provider key formats
(``sk-...``, ``hf_...``, ``AKIA...``, ``ghp_...``, ...) and high-entropy values assigned to a
name containing KEY, TOKEN, SECRET or PASSWORD. One more test runs a chapter with fake keys in
its environment and checks that their values appear nowhere in the executed notebook.

The chapter used for that is ``SAEBOOK_SECRETS_CHAPTER`` (default: the autointerp chapter,
which reads an OpenAI-compatible key when one is set; with the network blocked it must say so
in one line and fall back to its offline explainer).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from pathlib import Path

import nbformat
import pytest
from chapter_runner import EXECUTED, ROOT, rerun

CHAPTER_ENV = "SAEBOOK_SECRETS_CHAPTER"
DEFAULT_CHAPTER = "book/deeper/06_autointerp"

#: name -> pattern of a provider's key format.
KEY_FORMATS: dict[str, re.Pattern[str]] = {
    "OpenAI/Anthropic key (sk-...)": re.compile(r"\bsk-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_-]{20,}"),
    "Hugging Face token (hf_...)": re.compile(r"\bhf_[A-Za-z0-9]{30,}"),
    "AWS access key id (AKIA...)": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token (ghp_...)": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_\w{22,})"),
    "Google API key (AIza...)": re.compile(r"\bAIza[0-9A-Za-z_-]{35}"),
    "Slack token (xox...)": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "private key block": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}

#: ``SOME_KEY = "value"``, ``"api_token": "value"``, ``password: value`` ...
ASSIGNMENT = re.compile(
    r"""(?ix)
    (?P<name>[\w.-]*(?:key|token|secret|passw(?:or)?d)[\w.-]*)["']?
    \s*(?:=|:|\bis\b)\s*
    ["']?(?P<value>[A-Za-z0-9_\-+/=.]{20,})
    """
)
MIN_ENTROPY = 3.5  # bits per character; English words and ids stay well below


def entropy(text: str) -> float:
    """Shannon entropy of ``text`` in bits per character."""
    counts = Counter(text)
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values())


def find_secrets(text: str) -> list[str]:
    """Descriptions of the key-like strings in ``text`` (values shortened)."""
    found = []
    for what, pattern in KEY_FORMATS.items():
        for match in pattern.finditer(text):
            found.append(f"{what}: {match.group(0)[:12]}...")
    for match in ASSIGNMENT.finditer(text):
        value = match.group("value")
        if (
            entropy(value) >= MIN_ENTROPY
            and re.search(r"\d", value)
            and re.search("[A-Za-z]", value)
        ):
            found.append(f"high-entropy value for {match.group('name')!r}: {value[:8]}...")
    return found


def _scan(paths: list[Path]) -> list[str]:
    problems = []
    for path in paths:
        for finding in find_secrets(path.read_text(encoding="utf-8", errors="replace")):
            problems.append(f"{path.relative_to(ROOT)}: {finding}")
    return problems


# --- the scanner -----------------------------------------------------------------------------

# Fake keys are assembled at run time so that this file itself never holds one.
FAKE_OPENAI = "sk-" + "proj-" + "Zq8" * 8 + "x7Lm"
FAKE_HF = "hf_" + "aB3dE5" * 6
FAKE_AWS = "AKIA" + "Q7X2" * 4
FAKE_GH = "ghp_" + "k2J9" * 9


@pytest.mark.parametrize(
    "text",
    [
        f"client = OpenAI(api_key='{FAKE_OPENAI}')",
        f"HF_TOKEN={FAKE_HF}",
        f'"aws": "{FAKE_AWS}"',
        f"git clone https://{FAKE_GH}@github.com/x/y",
        "MY_SERVICE_KEY = 'q9VbX2r7TzL4mN8pK3wY6c'",
        '{"api_token": "Zx81-Kq2M/pL7wR4t9Vb=="}',
        "-----BEGIN RSA PRIVATE KEY-----",
    ],
)
def test_scanner_finds_keys(text):
    assert find_secrets(text), text


@pytest.mark.parametrize(
    "text",
    [
        "tokens = profile.tokens(n_seqs, seq_len)",
        "key = 'latent_activation_histogram'",  # a long word, low entropy and no digit
        "The tokenizer is a byte-level BPE; keys are read from the environment.",
        "sk-learn and hf_hub are library names",
        "api_key = os.environ['OPENAI_API_KEY']",
        "token_ids: 0123456789012345678901234",  # digits only
        "sae.cfg.metadata.neuronpedia_id = 'gpt2-small/8-res-jb'",
    ],
)
def test_scanner_ignores_ordinary_text(text):
    assert not find_secrets(text), find_secrets(text)


# --- what the build produces -----------------------------------------------------------------


def test_sources_hold_no_keys():
    paths = sorted(
        p
        for folder in (ROOT / "book", ROOT / "src" / "saebook")
        for p in folder.rglob("*")
        if p.suffix in {".md", ".py", ".json", ".yml", ".yaml", ".txt"} and p.is_file()
    )
    assert paths
    problems = _scan(paths)
    assert not problems, "key-like strings in the sources:\n" + "\n".join(problems)


@pytest.mark.after_chapters
def test_executed_notebooks_hold_no_keys():
    paths = sorted(EXECUTED.rglob("*.ipynb"))
    if not paths:
        pytest.skip(
            f"no executed notebooks under {EXECUTED.relative_to(ROOT)}: run the chapters "
            "first (pytest --nbmake saves every executed chapter there)"
        )
    problems = _scan(paths)
    assert not problems, "key-like strings in executed notebooks:\n" + "\n".join(problems)


def test_built_site_holds_no_keys(site_html: Path):
    paths = sorted(site_html.rglob("*.html"))
    assert paths, f"{site_html} holds no pages"
    problems = _scan(paths)
    assert not problems, "key-like strings in the built site:\n" + "\n".join(problems)


@pytest.mark.after_chapters
def test_keys_in_the_environment_stay_out_of_the_notebook():
    entry = os.environ.get(CHAPTER_ENV, DEFAULT_CHAPTER).removesuffix(".md")
    fakes = {
        "OPENAI_API_KEY": FAKE_OPENAI,
        "HF_TOKEN": FAKE_HF,
        "HUGGING_FACE_HUB_TOKEN": FAKE_HF,
        "AWS_ACCESS_KEY_ID": FAKE_AWS,
        "GITHUB_TOKEN": FAKE_GH,
    }
    result = rerun(entry, extra_env=fakes)
    assert result.error is None, result.error.trace
    text = nbformat.writes(result.nb)
    leaked = sorted(name for name, value in fakes.items() if value in text)
    assert not leaked, f"{entry}: the values of {leaked} appear in the executed notebook"
    assert not find_secrets(text), find_secrets(text)
