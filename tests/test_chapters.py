"""Execute every chapter of the book, and check that _toc.yml and book/ agree.

A chapter is a `_toc.yml` entry whose `.md` file has a `kernelspec` in its front matter.
Each one becomes a test with the chapter's path as its id:

    pytest tests/test_chapters.py -k running_saes

It is converted with jupytext into a notebook in a pytest temporary folder (never next to the
source, never under `_build`), executed with nbclient on the `python3` kernel with the
chapter's folder as working directory and `SAEBOOK_PROFILE=tiny`, and fails with the source
and traceback of the failing cell. Per-chapter wall times are printed at the end of the
session and written to `_build/chapter_times.json` (see conftest.py).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TOC = ROOT / "_toc.yml"
BOOK = ROOT / "book"
PROFILE = "tiny"
DEFAULT_TIMEOUT = 600  # seconds per cell, as execute.timeout in _config.yml
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


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
def test_chapter_executes(entry: str, tmp_path: Path, record_property) -> None:
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    md = ROOT / f"{entry}.md"
    md_text = md.read_text(encoding="utf-8")
    nb = jupytext.reads(md_text, fmt="md:myst")
    timeout = (nb.metadata.get("execution") or {}).get("timeout", DEFAULT_TIMEOUT)
    if timeout is not None and timeout < 0:
        timeout = None  # -1 disables the limit, as in myst-nb
    source_copy = tmp_path / f"{md.stem}.ipynb"
    nbformat.write(nb, source_copy)

    env = dict(os.environ, SAEBOOK_PROFILE=PROFILE)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        allow_errors=False,
        resources={"metadata": {"path": str(md.parent)}},  # cwd = the chapter's folder
    )
    start = time.perf_counter()
    error: BaseException | None = None
    try:
        client.execute(env=env)
    except Exception as exc:  # CellExecutionError, CellTimeoutError, DeadKernelError, ...
        error = exc
    finally:
        record_property("chapter_seconds", round(time.perf_counter() - start, 2))
        record_property("chapter", entry)
        record_property("chapter_profile", PROFILE)
        saved = tmp_path / f"{md.stem}.executed.ipynb"
        nbformat.write(nb, saved)
    if error is not None:
        pytest.fail(
            f"chapter {entry} failed under SAEBOOK_PROFILE={PROFILE}:\n"
            + _failure_report(entry, nb, md_text, error, saved),
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
