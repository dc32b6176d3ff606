"""The book's chapters: _toc.yml and book/ agree, and the chapter plugin works.

Chapters are executed by nbmake (``pytest --nbmake``; ``make test`` runs it over ``tests`` and
``book``) through the plugin tests/chapter_runner.py: a chapter is a ``_toc.yml`` entry whose
``.md`` has a ``kernelspec``; its notebook is generated beside the ``.md`` with jupytext and
executed under ``SAEBOOK_PROFILE=tiny`` with the network blocked (tests/netblock;
``SAEBOOK_ALLOW_NETWORK=1`` lifts it). One chapter::

    python -m pytest --nbmake book/intro/01_running_saes.ipynb

(the plugin generates the file first; ``make notebooks`` generates them all). The tests here
are fast: the table of contents, front matter, and the plugin's pieces.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nbformat
import pytest
from chapter_runner import (
    BOOK_BUDGET_S,
    CHAPTER_BUDGET_S,
    NETBLOCK,
    budget_lines,
    chapter_env,
    entry_of,
    kernel_environment,
)

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"

from chapters import (  # noqa: E402  (book/_ext, conftest)
    GENERATED_KEY,
    chapters,
    front_matter,
    site_chapters,
    toc_entries,
    write_notebook,
)


def _chapter_params() -> list:
    found = chapters()
    if found:
        return [pytest.param(entry, id=entry) for entry in found]
    reason = "no executable chapters (no .md with a kernelspec) in _toc.yml yet"
    return [pytest.param(None, id="no-chapters", marks=pytest.mark.skip(reason=reason))]


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


def test_generated_notebook_is_the_chapter_and_git_ignored() -> None:
    entry = chapters()[0]
    path = write_notebook(entry)
    nb = nbformat.read(path, as_version=4)
    assert path == ROOT / f"{entry}.ipynb" and nb.metadata[GENERATED_KEY] == f"{entry}.md"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert [c for c in nb.cells if c.cell_type == "code"], entry
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT)
    assert ignored.returncode == 0, f"{path} must be git-ignored (a generated file)"
    assert entry_of(path) == entry and entry_of(ROOT / f"{entry}.md") is None
    assert entry_of(BOOK / "nowhere.ipynb") is None


def test_chapter_env_blocks_the_network_unless_allowed(monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.delenv("SAEBOOK_ALLOW_NETWORK", raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    env = chapter_env("tiny")
    first, rest = env["PYTHONPATH"].split(os.pathsep, 1)
    assert first == str(NETBLOCK) and rest == "/somewhere"
    assert env["SAEBOOK_PROFILE"] == "tiny" and env["TQDM_DISABLE"] == "1"
    assert (
        chapter_env("tiny", environ={"PYTHONPATH": env["PYTHONPATH"]})["PYTHONPATH"]
        == (
            env["PYTHONPATH"]  # not added twice
        )
    )
    monkeypatch.setenv("SAEBOOK_ALLOW_NETWORK", "1")
    assert "PYTHONPATH" not in chapter_env("tiny")
    with kernel_environment("gpt2", {"X_SAEBOOK_TEST": "1"}):
        assert os.environ["SAEBOOK_PROFILE"] == "gpt2" and os.environ["X_SAEBOOK_TEST"] == "1"
    assert "X_SAEBOOK_TEST" not in os.environ


def test_budget_table_flags_slow_chapters() -> None:
    times = [
        {"chapter": "book/a/01", "seconds": 12.0, "cpu_seconds": 20.5, "outcome": "passed"},
        {"chapter": "book/a/02", "seconds": CHAPTER_BUDGET_S + 1, "cpu_seconds": None,
         "outcome": "failed"},
        # run beside another chapter: its wall time is over, its CPU seconds are not
        {"chapter": "book/a/03", "seconds": CHAPTER_BUDGET_S + 9, "cpu_seconds": 41.0,
         "outcome": "passed"},
        {"chapter": "book/a/04", "seconds": 30.0, "cpu_seconds": CHAPTER_BUDGET_S + 2.0,
         "outcome": "passed"},
    ]  # fmt: skip
    lines = budget_lines(times, cpus=2)
    assert "OVER BUDGET" not in lines[1] and "20.5 s" in lines[1]
    assert lines[2].endswith("failed  OVER BUDGET")  # no CPU time: the wall time counts
    assert "OVER BUDGET" not in lines[3] and lines[4].endswith("OVER BUDGET")
    assert lines[5].startswith("total") and f"{BOOK_BUDGET_S} CPU s in all; 2 cpus" in lines[5]
    assert len(lines) == 6  # one worker: no line about chapters side by side
    side = budget_lines(times, cpus=2, workers=2, session_s=95.5)
    assert side[:6] == lines and "2 at a time" in side[6] and "95.5 s wall" in side[6]
    assert budget_lines([]) == ["no chapter was executed"]


def test_site_chapters_reads_the_environment() -> None:
    every = chapters()
    assert site_chapters("") == every
    assert site_chapters(f" {every[-1]}.md,{every[0]} ") == [every[0], every[-1]]
    with pytest.raises(ValueError, match="SAEBOOK_SITE_CHAPTERS must name executable chapters"):
        site_chapters("book/nope")


def test_appendix_chapters_run_last() -> None:
    """The appendix page "How this book checks itself" reads what earlier tests recorded."""
    order = chapters()
    appendix = [i for i, e in enumerate(order) if e.startswith("book/appendix/")]
    assert appendix and appendix == list(range(len(order) - len(appendix), len(order)))


def test_assemble_once_builds_the_site_once_per_run(tmp_path) -> None:
    """pytest-xdist workers of one run share one build of the site; a new run, other chapters
    or a session without pytest-xdist (run None) build it again."""
    from chapter_runner import assemble_once

    builds = []

    def build(executed, out, only):
        builds.append(list(only))
        (out / "_build" / "html").mkdir(parents=True, exist_ok=True)
        return out / "_build" / "html"

    out = tmp_path / "assembled"
    html = assemble_once(["a", "b"], "run1", out, build)
    assert html == out / "_build" / "html" and builds == [["a", "b"]]
    assert assemble_once(["a", "b"], "run1", out, build) == html and len(builds) == 1
    assemble_once(["a", "b"], "run2", out, build)
    assemble_once(["a"], "run2", out, build)
    assert builds[1:] == [["a", "b"], ["a"]]
    assemble_once(["a"], None, out, build)
    assemble_once(["a"], None, out, build)
    assert len(builds) == 5

    def broken(executed, out, only):
        raise RuntimeError("assembling the site failed")

    with pytest.raises(RuntimeError, match="failed"):
        assemble_once(["a", "b"], "run3", out, broken)
    assemble_once(["a", "b"], "run3", out, build)  # a failed build is not reused
    assert len(builds) == 6


class _FakeItem:
    """Just what the plugin's collection hook reads of a pytest item."""

    def __init__(self, path: str, fixtures: tuple[str, ...] = ()) -> None:
        self.path = ROOT / path
        self.fixturenames = fixtures
        self.markers: list = []

    def add_marker(self, marker) -> None:
        self.markers.append(marker.mark)

    def get_closest_marker(self, name: str):
        return next((m for m in self.markers if m.name == name), None)


def test_slowest_unit_test_files_are_scheduled_first() -> None:
    """make test's unit session (--dist loadfile --no-loadscope-reorder) hands files to the
    workers in collection order: SLOW_FIRST's files come first, slowest first, the rest keep
    their order, and tests of the executed chapters still come last."""
    from chapter_runner import SLOW_FIRST, pytest_collection_modifyitems, slow_rank

    assert all((ROOT / name).is_file() for name in SLOW_FIRST), "a stale SLOW_FIRST entry"
    assert slow_rank(ROOT / SLOW_FIRST[0]) == 0 and slow_rank("/elsewhere/x.py") == len(SLOW_FIRST)
    items = [
        _FakeItem("tests/test_absorption.py"),
        _FakeItem("tests/test_site.py", ("site_html",)),
        _FakeItem(SLOW_FIRST[1]),
        _FakeItem("tests/test_validate.py"),
        _FakeItem(SLOW_FIRST[0]),
    ]
    pytest_collection_modifyitems(None, items)
    got = [item.path.relative_to(ROOT).as_posix() for item in items]
    assert got == [SLOW_FIRST[0], SLOW_FIRST[1], "tests/test_absorption.py",
                   "tests/test_validate.py", "tests/test_site.py"]  # fmt: skip
    assert "--dist loadfile --no-loadscope-reorder" in (ROOT / "Makefile").read_text()


def test_book_marker_splits_unit_tests_from_book_tests() -> None:
    """``-m "not book"`` (make test-unit) keeps unit tests and drops tests of executed chapters."""
    import sys

    def collected(expr: str) -> set[str]:
        files = ["tests/test_secrets.py", "tests/test_site.py"]
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
             "-m", expr, *files],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        lines = [line for line in result.stdout.splitlines() if "::" in line]
        return {line.split("::")[1].split("[")[0] for line in lines}

    unit, book = collected("not book"), collected("book")
    assert {"test_scanner_finds_keys", "test_stage_book_names_missing_chapters"} <= unit
    assert {  # after_chapters, a site_html user, and one through the site fixture
        "test_executed_notebooks_hold_no_keys",
        "test_built_site_holds_no_keys",
        "test_figures_load_plotly_from_the_site",
    } <= book
    assert not unit & book
    assert '-m "not book"' in (ROOT / "Makefile").read_text()
