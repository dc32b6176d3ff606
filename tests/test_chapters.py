"""Execute every chapter of the book, and check that _toc.yml and book/ agree.

A chapter is a `_toc.yml` entry whose `.md` file has a `kernelspec` in its front matter.
Each one becomes a test with the chapter's path as its id:

    pytest tests/test_chapters.py -k running_saes

It is executed by `book/_ext/chapters.py` exactly as the site's per-chapter build jobs do
(jupytext, then nbclient on the `python3` kernel in the chapter's folder, `SAEBOOK_PROFILE=tiny`,
the site's plotly renderer), written to `_build/executed/<chapter>.ipynb` (which
tests/test_site.py assembles into the site), and fails with the source and traceback of the
failing cell. Per-chapter wall times are printed at the end of the session and written to
`_build/chapter_times.json` (see conftest.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
EXECUTED = ROOT / "_build" / "executed"  # executed notebooks, assembled by tests/test_site.py
PROFILE = "tiny"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

from chapters import chapters, execute_chapter, front_matter, toc_entries, write_executed  # noqa: E402


def _chapter_params() -> list:
    found = chapters()
    if found:
        return [pytest.param(entry, id=entry) for entry in found]
    reason = "no executable chapters (no .md with a kernelspec) in _toc.yml yet"
    return [pytest.param(None, id="no-chapters", marks=pytest.mark.skip(reason=reason))]


def _line_of(source: str, md_text: str) -> int | None:
    """1-based line in the .md where a cell's source starts, when it can be found."""
    snippet = source.strip().splitlines()[0] if source.strip() else ""
    pos = md_text.find(snippet) if snippet else -1
    return md_text.count("\n", 0, pos) + 1 if pos >= 0 else None


def _failure_report(entry: str, nb, md_text: str, exc: BaseException, saved: Path) -> str:
    """Describe the failing cell: index, tags, source and traceback, without ANSI colours."""
    for index, cell in enumerate(nb.cells):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if cell.cell_type != "code" or not errors:
            continue
        err = errors[0]
        traceback = ANSI.sub("", "\n".join(err.get("traceback", [])))
        line = _line_of(cell.source, md_text)
        where = f"{entry}.md" + (f", line {line}" if line else "")
        tags = cell.metadata.get("tags", [])
        return (
            f"cell {index} ({where}; tags {tags}) raised {err.get('ename')}: {err.get('evalue')}"
            f"\n\n--- cell source ---\n{cell.source}\n\n--- traceback ---\n{traceback}"
            f"\n\nexecuted notebook: {saved}"
        )
    # no error output recorded: a timeout, a dead kernel or a failure to start
    return f"{type(exc).__name__}: {ANSI.sub('', str(exc))}\n\nexecuted notebook: {saved}"


@pytest.mark.chapter
@pytest.mark.parametrize("entry", _chapter_params())
def test_chapter_executes(entry: str, record_property) -> None:
    md_text = (ROOT / f"{entry}.md").read_text(encoding="utf-8")
    execution = execute_chapter(entry, PROFILE)
    record_property("chapter_seconds", round(execution.seconds, 2))
    record_property("chapter", entry)
    record_property("chapter_profile", PROFILE)
    saved = write_executed(execution, EXECUTED)
    if execution.error is not None:
        pytest.fail(
            f"chapter {entry} failed under SAEBOOK_PROFILE={PROFILE}:\n"
            + _failure_report(entry, execution.notebook, md_text, execution.error, saved),
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
