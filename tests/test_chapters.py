"""Execute every chapter of the book, and check that _toc.yml and book/ agree.

A chapter is a `_toc.yml` entry whose `.md` file has a `kernelspec` in its front matter.
Each one becomes a test with the chapter's path as its id:

    pytest tests/test_chapters.py -k running_saes

It is converted with jupytext into a notebook in a pytest temporary folder (never next to the
source, never under `_build`), executed with nbclient on the `python3` kernel with the
chapter's folder as working directory, `SAEBOOK_PROFILE=tiny` and the network blocked
(tests/netblock; `SAEBOOK_ALLOW_NETWORK=1` lifts it), and fails with the source and
traceback of the failing cell. The executed notebook is kept in `_build/executed/` (see
tests/chapter_runner.py, shared with the determinism and secrets tests). Per-chapter wall
times are printed at the end of the session and written to `_build/chapter_times.json`
(see conftest.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from chapter_runner import failure_report, run_chapter

ROOT = Path(__file__).resolve().parents[1]
TOC = ROOT / "_toc.yml"
BOOK = ROOT / "book"
PROFILE = "tiny"


def toc_entries(toc_path: Path = TOC) -> list[str]:
    """Every `file` in a jb-book `_toc.yml`, root first, in reading order (no suffix)."""
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    found: list[str] = [toc["root"]]

    def walk(items: list[dict]) -> None:
        for item in items or []:
            if "file" in item:
                found.append(str(item["file"]))
            walk(item.get("sections", []))
            walk(item.get("chapters", []))

    walk(toc.get("parts", []))
    walk(toc.get("chapters", []))
    return [entry.removesuffix(".md") for entry in found]


def front_matter(path: Path) -> dict:
    """The YAML front matter of a markdown file ({} when there is none)."""
    text = path.read_text(encoding="utf-8")
    match = re.match(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|\Z)", text, re.DOTALL)
    if not match:
        return {}
    data = yaml.safe_load(match.group(1))
    return data if isinstance(data, dict) else {}


def chapters() -> list[str]:
    """Toc entries that are executable chapters (their .md has a kernelspec)."""
    return [
        entry
        for entry in toc_entries()
        if (ROOT / f"{entry}.md").is_file() and "kernelspec" in front_matter(ROOT / f"{entry}.md")
    ]


def _chapter_params() -> list:
    found = chapters()
    if found:
        return [pytest.param(entry, id=entry) for entry in found]
    reason = "no executable chapters (no .md with a kernelspec) in _toc.yml yet"
    return [pytest.param(None, id="no-chapters", marks=pytest.mark.skip(reason=reason))]


@pytest.mark.chapter
@pytest.mark.parametrize("entry", _chapter_params())
def test_chapter_executes(entry: str, tmp_path: Path, record_property) -> None:
    run = run_chapter(entry, tmp_path, profile=PROFILE)
    record_property("chapter_seconds", round(run.seconds, 2))
    record_property("chapter", entry)
    record_property("chapter_profile", PROFILE)
    if run.error is not None:
        pytest.fail(
            f"chapter {entry} failed under SAEBOOK_PROFILE={PROFILE}:\n" + failure_report(run),
            pytrace=False,
        )


def test_toc_entries_exist() -> None:
    missing = [e for e in toc_entries() if not (ROOT / f"{e}.md").is_file()]
    assert not missing, f"_toc.yml lists files that do not exist (as .md): {missing}"


def test_toc_has_no_duplicates() -> None:
    entries = toc_entries()
    duplicates = sorted({e for e in entries if entries.count(e) > 1})
    assert not duplicates, f"_toc.yml lists these more than once: {duplicates}"


def test_every_page_is_in_toc() -> None:
    listed = set(toc_entries())
    pages = [
        p.relative_to(ROOT).with_suffix("").as_posix()
        for p in sorted(BOOK.rglob("*.md"))
        if not any(part.startswith(".") for part in p.relative_to(BOOK).parts)
    ]
    orphans = [p for p in pages if p not in listed]
    assert not orphans, f"pages under book/ missing from _toc.yml (never built): {orphans}"


@pytest.mark.parametrize("entry", _chapter_params())
def test_chapter_front_matter(entry: str) -> None:
    """myst-nb reads a .md as a notebook only with jupytext's MyST header."""
    meta = front_matter(ROOT / f"{entry}.md")
    fmt = (meta.get("jupytext") or {}).get("text_representation", {}).get("format_name")
    assert fmt == "myst", f"{entry}.md: set jupytext.text_representation.format_name: myst"
    assert meta["kernelspec"].get("name") == "python3", f"{entry}.md: kernelspec.name: python3"
