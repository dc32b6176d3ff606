"""pytest plugin: nbmake executes the book's chapters (loaded by the root ``conftest.py``).

``pytest --nbmake`` runs every notebook it collects. This plugin makes that the book's chapter
check, for ``make test`` (``pytest --nbmake`` over ``tests`` and ``book``), for one chapter::

    python -m pytest --nbmake book/intro/01_running_saes.ipynb

and for the site workflow's per-chapter GPU jobs. With ``--nbmake`` it

* generates ``<chapter>.ipynb`` beside every chapter's ``.md`` with jupytext (git-ignored;
  ``make notebooks`` does the same) before collection, and ignores any other ``.ipynb``
  under ``book/`` (a stale copy of a removed chapter);
* turns on nbmake's ``--overwrite`` (it writes the executed notebook back over the generated
  one) and raises nbmake's default cell timeout of 300 s to ``DEFAULT_TIMEOUT`` (a chapter's
  ``execution: {timeout: N}`` front matter still wins, as in myst-nb);
* runs each chapter's kernel with :func:`chapter_env`: ``SAEBOOK_PROFILE`` (default ``tiny``),
  the site's plotly renderer, ``TQDM_DISABLE=1`` (third-party progress bars stay out of the
  pages) and, unless ``SAEBOOK_ALLOW_NETWORK=1``, ``tests/netblock`` first on ``PYTHONPATH``
  (its ``sitecustomize`` blocks remote connections);
* orders the session: unit tests first (the slowest files, :data:`SLOW_FIRST`, before the
  others), then the chapters in ``_toc.yml`` order (the appendix
  last: its page "How this book checks itself" reads what the unit tests recorded), then the
  tests that read the executed chapters (the assembled site, determinism reruns, secrets);
* marks the chapters and the tests that read them ``book`` (the only marker a selection needs:
  ``-m "not book"`` is the unit tests, ``make test-unit``). A test that reads executed chapters
  says so with ``@pytest.mark.after_chapters`` or ``@pytest.mark.determinism``, or by using
  the ``site_html`` fixture; the plugin adds ``book`` to it and runs it after the chapters;
* keeps each executed notebook, with its run time and outcome in the metadata key
  ``saebook_execution``, in ``_build/executed/<chapter>.ipynb`` for assembling the site;
* prints a table of per-chapter wall and CPU seconds (flagging chapters over
  ``CHAPTER_BUDGET_S``) and writes it to ``_build/chapter_times.json``.

Determinism and secrets tests re-execute a chapter the same way with :func:`rerun`.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from chapters import (
    DEFAULT_TIMEOUT,
    EXECUTION_KEY,
    chapters,
    keep_executed,
    mark_executed,
    notebook_path,
    write_notebook,
    write_notebooks,
)

ROOT = Path(__file__).resolve().parents[1]
NETBLOCK = Path(__file__).resolve().parent / "netblock"
EXECUTED = ROOT / "_build" / "executed"  # executed notebooks: the site assembly reads them
TIMES_JSON = ROOT / "_build" / "chapter_times.json"
ASSEMBLED = ROOT / "_build" / "assembled"  # the site assembled from EXECUTED (site_html)
ALLOW_NETWORK_ENV = "SAEBOOK_ALLOW_NETWORK"
NBMAKE_DEFAULT_TIMEOUT = 300  # nbmake's own default for --nbmake-timeout

CHAPTER_BUDGET_S = 60  # CPU seconds per chapter (about its wall time alone on 2 cores)
BOOK_BUDGET_S = 8 * 60  # CPU seconds of every chapter together
#: The slowest unit-test files, slowest first: they are collected (so, with pytest-xdist's
#: ``--dist loadfile --no-loadscope-reorder``, scheduled) before the others, so that the
#: session does not end with one worker running a long file while the other waits. Only
#: the order changes; a file missing here runs in its usual place.
SLOW_FIRST: tuple[str, ...] = (
    "tests/test_hub_rehearsal_gemma.py",  # fabricates a gemma cache, loads it in a child
    "tests/test_hub_rehearsal.py",  # the same for gpt2
    "tests/test_dashboards_reference.py",  # sae-dashboard in a child environment
    "tests/test_exercise_notebooks.py",  # executes notebooks
    "tests/test_attribution.py",
    "tests/test_chapters.py",  # collects tests in child pytest processes
    "tests/test_network.py",  # starts a kernel
    "tests/test_geometry.py",  # UMAP's numba compilation
)

_times: list[dict] = []
_session_start = time.perf_counter()


def network_allowed(environ: dict[str, str] | None = None) -> bool:
    """True when ``SAEBOOK_ALLOW_NETWORK=1`` switches the network block off."""
    return (os.environ if environ is None else environ).get(ALLOW_NETWORK_ENV) == "1"


def chapter_profile() -> str:
    """The profile chapters run on: ``SAEBOOK_PROFILE``, default ``tiny``."""
    return os.environ.get("SAEBOOK_PROFILE", "").strip() or "tiny"


def chapter_env(
    profile: str | None = None,
    extra: dict[str, str] | None = None,
    environ: dict[str, str] | None = None,
) -> dict[str, str]:
    """The variables a chapter's kernel gets on top of ``environ`` (default: this process's).

    ``SAEBOOK_PROFILE``, the site's plotly renderer (the outputs are the ones the site
    embeds), ``TQDM_DISABLE=1`` unless set, ``extra``, and the network block first on
    ``PYTHONPATH`` unless ``SAEBOOK_ALLOW_NETWORK=1``.
    """
    from saebook.display import RENDERER_ENV, SITE_RENDERER

    environ = dict(os.environ if environ is None else environ)
    env = {
        "SAEBOOK_PROFILE": profile or chapter_profile(),
        RENDERER_ENV: SITE_RENDERER,
        "TQDM_DISABLE": environ.get("TQDM_DISABLE", "1"),
        **(extra or {}),
    }
    workers = int(environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "SAEBOOK_THREADS" not in environ:  # chapters side by side share cores
        env["SAEBOOK_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    if not network_allowed({**environ, **env}):
        parts = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        parts = [str(NETBLOCK)] + [p for p in parts if p != str(NETBLOCK)]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


@contextmanager
def kernel_environment(
    profile: str | None = None, extra: dict[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """Set :func:`chapter_env` in ``os.environ`` (kernels started meanwhile inherit it), then
    restore the previous values."""
    env = chapter_env(profile, extra)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_notebook(
    path: Path, extra_env: dict[str, str] | None = None, timeout: int = DEFAULT_TIMEOUT
):
    """Execute notebook ``path`` with nbmake's runner in its folder, in a kernel started with
    :func:`chapter_env` (plus ``extra_env``); returns nbmake's ``NotebookResult`` (``.nb``,
    ``.error`` with ``.summary`` and ``.trace``). The file itself is not changed."""
    from nbmake.nb_run import NotebookRun

    with kernel_environment(extra=extra_env):
        return NotebookRun(Path(path), timeout).execute()


def rerun(entry: str, extra_env: dict[str, str] | None = None):
    """Generate chapter ``entry``'s notebook afresh and execute it (see :func:`run_notebook`)."""
    return run_notebook(write_notebook(entry), extra_env)


def assemble_once(entries: list[str], run: str | None, out: Path = ASSEMBLED, build=None) -> Path:
    """The site assembled from ``EXECUTED`` for ``entries`` into ``out``; returns its html dir.

    ``run`` identifies the test run (pytest-xdist's ``testrunuid``, shared by its workers):
    the first worker that needs the site builds it while holding a lock, and the others wait
    for it and reuse it, so a run builds the site once whichever workers read it. Without
    ``run`` (no pytest-xdist) it is built on every call. ``build`` defaults to
    ``chapters.assemble`` (called as ``build(EXECUTED, out, only=entries)``).
    """
    if build is None:
        from chapters import assemble as build
    if run is None:
        return build(EXECUTED, out, only=entries)
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = out.with_name(out.name + ".run")  # which run built out, from which chapters
    key = json.dumps({"run": run, "chapters": list(entries)})
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if stamp.is_file() and stamp.read_text(encoding="utf-8") == key:
            return out / "_build" / "html"
        stamp.unlink(missing_ok=True)
        html = build(EXECUTED, out, only=entries)
        stamp.write_text(key, encoding="utf-8")
        return html


def entry_of(path: Path | str) -> str | None:
    """The chapter (toc entry) whose generated notebook is ``path``, or None."""
    try:
        relative = Path(path).resolve().relative_to(ROOT)
    except ValueError:
        return None
    entry = relative.with_suffix("").as_posix()
    return entry if relative.suffix == ".ipynb" and entry in chapters() else None


def fresh_execution(entry: str) -> dict | None:
    """The ``saebook_execution`` metadata of ``_build/executed/<entry>.ipynb`` when it ran
    successfully after the chapter's last edit, else None."""
    path = EXECUTED / f"{entry}.ipynb"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text(encoding="utf-8"))["metadata"].get(EXECUTION_KEY) or {}
    fresh = meta.get("mtime", 0) >= (ROOT / f"{entry}.md").stat().st_mtime
    return meta if fresh and meta.get("succeeded") else None


def _line_of(source: str, md_text: str) -> int | None:
    """1-based line in the .md where a cell's source starts, when it can be found."""
    snippet = source.strip().splitlines()[0] if source.strip() else ""
    pos = md_text.find(snippet) if snippet else -1
    return md_text.count("\n", 0, pos) + 1 if pos >= 0 else None


def failed_cell(entry: str, nb) -> str:
    """Where the first failing cell of executed notebook ``nb`` is in the chapter's source."""
    md_text = (ROOT / f"{entry}.md").read_text(encoding="utf-8")
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and any(
            o.get("output_type") == "error" for o in cell.get("outputs", [])
        ):
            line = _line_of(cell.source, md_text)
            where = f"{entry}.md" + (f", line {line}" if line else "")
            return f"cell {index} ({where}; tags {cell.metadata.get('tags', [])})"
    return f"{entry}.md: no cell recorded an error (a timeout or a dead kernel)"


# --- hooks -----------------------------------------------------------------------------------


def _nbmake(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "nbmake", False))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "book: a book test (set by this plugin on every chapter and every test that reads "
        "executed chapters); the unit tests are -m 'not book' (make test-unit)",
    )
    config.addinivalue_line("markers", "chapter: executes one chapter of the book (nbmake)")
    config.addinivalue_line(
        "markers", "after_chapters: reads what this session's chapter runs left; runs after them"
    )
    if not _nbmake(config):
        return
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # under pytest-xdist the controller does
        write_notebooks()
    config.option.overwrite = True  # nbmake writes the executed notebook back: we keep it
    if config.option.nbmake_timeout == NBMAKE_DEFAULT_TIMEOUT:
        config.option.nbmake_timeout = DEFAULT_TIMEOUT


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Skip notebooks under ``book/`` that are not generated chapters (stale copies)."""
    if collection_path.suffix == ".ipynb" and (ROOT / "book") in collection_path.parents:
        return None if entry_of(collection_path) else True
    return None


def _is_chapter(item: pytest.Item) -> bool:
    return bool(getattr(item, "nbmake", False))


def slow_rank(path: Path | str) -> int:
    """Where test file ``path`` comes in :data:`SLOW_FIRST` (``len(SLOW_FIRST)``: not in it)."""
    try:
        name = Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return len(SLOW_FIRST)
    return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)


def _phase(item: pytest.Item) -> int:
    """0: unit tests, 1: chapters, 2: tests reading the chapters' results."""
    if _is_chapter(item):
        return 1
    if "site_html" in getattr(item, "fixturenames", ()) or any(
        item.get_closest_marker(m) for m in ("after_chapters", "determinism")
    ):
        return 2
    return 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    order = {entry: i for i, entry in enumerate(chapters())}
    for item in items:
        if _is_chapter(item):
            item.add_marker(pytest.mark.chapter)
        if _phase(item) > 0:  # a chapter, or a test of what the chapters left
            item.add_marker(pytest.mark.book)

    def key(item: pytest.Item) -> tuple[int, int]:
        entry = entry_of(item.path) if _is_chapter(item) else None
        if entry:
            return 1, order.get(entry, len(order))
        return _phase(item), slow_rank(item.path)

    items.sort(key=key)  # stable: within a phase, collection order is kept


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    entry = entry_of(item.path) if _is_chapter(item) else None
    if entry is None:
        return (yield)
    profile = chapter_profile()
    error = None
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        with kernel_environment(profile):
            return (yield)
    except BaseException as exc:
        error = type(exc).__name__
        raise
    finally:
        seconds = time.perf_counter() - start
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the kernel, once reaped
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        item.user_properties += [
            ("chapter", entry),
            ("chapter_seconds", round(seconds, 2)),
            ("chapter_cpu_seconds", round(cpu, 2)),
            ("chapter_profile", profile),
        ]
        _keep(item, entry, seconds, profile, error)


def _keep(item: pytest.Item, entry: str, seconds: float, profile: str, error: str | None) -> None:
    """Copy the executed notebook (nbmake overwrote the generated one) to ``_build/executed``."""
    import nbformat

    nb = nbformat.read(notebook_path(entry), as_version=4)
    mark_executed(nb, seconds, profile, error)
    saved = keep_executed(entry, nb, EXECUTED)
    if error is not None:
        where = failed_cell(entry, nb)
        item.add_report_section("call", "chapter", f"{where}\nexecuted notebook: {saved}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    props = dict(report.user_properties)
    if "chapter_seconds" in props:
        _times.append(
            {
                "chapter": props["chapter"],
                "seconds": props["chapter_seconds"],
                "cpu_seconds": props.get("chapter_cpu_seconds"),
                "outcome": report.outcome,
                "profile": props.get("chapter_profile", ""),
            }
        )


def budget_lines(
    times: list[dict], cpus: int | None = None, workers: int = 1, session_s: float = 0.0
) -> list[str]:
    """The timing table: one line per chapter (wall s, CPU s, outcome, over the CPU-seconds
    budget?), a total, and with ``workers`` > 1 (chapters run side by side by pytest-xdist)
    the wall time ``session_s`` they took together."""
    if not times:
        return ["no chapter was executed"]
    width = max(len(t["chapter"]) for t in times)
    lines = [f"{'chapter':<{width}}  {'wall':>8}  {'cpu':>8}"]
    for t in times:
        cpu = t.get("cpu_seconds")
        over = "  OVER BUDGET" if (t["seconds"] if cpu is None else cpu) > CHAPTER_BUDGET_S else ""
        cpu_text = f"{cpu:>6.1f} s" if cpu is not None else f"{'-':>8}"
        lines.append(
            f"{t['chapter']:<{width}}  {t['seconds']:>6.1f} s  {cpu_text}  {t['outcome']}{over}"
        )
    total = sum(t["seconds"] for t in times)
    total_cpu = sum(t.get("cpu_seconds") or 0 for t in times)
    over = "  OVER BUDGET" if total_cpu > BOOK_BUDGET_S else ""
    lines.append(
        f"{'total':<{width}}  {total:>6.1f} s  {total_cpu:>6.1f} s  (budget {CHAPTER_BUDGET_S} "
        f"CPU s per chapter, {BOOK_BUDGET_S} CPU s in all; {cpus or os.cpu_count()} cpus){over}"
    )
    if workers > 1:
        lines.append(
            f"chapters ran {workers} at a time (pytest-xdist): {session_s:.1f} s wall for all; "
            "a chapter's wall time includes its neighbour's load, so budgets count CPU seconds"
        )
    return lines


def pytest_sessionstart(session: pytest.Session) -> None:
    global _session_start
    _session_start = time.perf_counter()


def _workers(config: pytest.Config) -> int:
    """pytest-xdist's worker count in this session (1 without it)."""
    n = getattr(config.option, "numprocesses", None)
    return n if isinstance(n, int) and n > 1 else 1


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _times:
        return  # e.g. `pytest tests/test_repo_lint.py`: keep the last chapter timings
    from saebook.files import atomic_write_text

    profile = ",".join(sorted({t["profile"] for t in _times})) or chapter_profile()
    terminalreporter.write_sep("=", f"chapter execution times (SAEBOOK_PROFILE={profile})")
    session_s = time.perf_counter() - _session_start
    for line in budget_lines(_times, workers=_workers(config), session_s=session_s):
        terminalreporter.write_line(line)
    record = {
        "profile": profile,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "budget_s": {"chapter": CHAPTER_BUDGET_S, "book": BOOK_BUDGET_S},  # CPU seconds
        "workers": _workers(config),
        "session_seconds": round(session_s, 1),
        "chapters": _times,
    }
    atomic_write_text(TIMES_JSON, json.dumps(record, indent=2) + "\n")
    terminalreporter.write_line(f"written to {TIMES_JSON.relative_to(ROOT)}")
