"""Execute every chapter of the book, and check that _toc.yml and book/ agree.

A chapter is a `_toc.yml` entry whose `.md` file has a `kernelspec` in its front matter.
Each one becomes a test with the chapter's path as its id:

    pytest tests/test_chapters.py -k running_saes

It is executed by `book/_ext/chapters.py` exactly as the site's per-chapter build jobs do
(jupytext, then nbclient on the `python3` kernel in the chapter's folder, the site's plotly
renderer), with `SAEBOOK_PROFILE=tiny` and the network blocked (tests/netblock;
`SAEBOOK_ALLOW_NETWORK=1` lifts it), and fails with the source and traceback of the failing
cell. The executed notebook is kept in `_build/executed/`, which tests/test_site.py assembles
into the site (see tests/chapter_runner.py, shared with the determinism and secrets tests).
Per-chapter wall times are printed at the end of the session and written to
`_build/chapter_times.json` (see conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chapter_runner import failure_report, run_chapter

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
PROFILE = "tiny"

from chapters import chapters, front_matter, toc_entries  # noqa: E402  (book/_ext, conftest)


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
