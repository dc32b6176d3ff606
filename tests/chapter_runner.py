"""Execute one chapter of the book in a fresh Jupyter kernel: shared by the chapter,
determinism and secrets tests.

A chapter is executed by ``book/_ext/chapters.py`` (as the site's per-chapter jobs do:
jupytext, nbclient on the ``python3`` kernel in the chapter's folder, the site's plotly
renderer) and saved executed. The kernel's environment is the test process's plus
``SAEBOOK_PROFILE`` and, unless ``SAEBOOK_ALLOW_NETWORK=1``, a ``PYTHONPATH`` entry for
``tests/netblock`` whose ``sitecustomize`` blocks remote connections.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NETBLOCK = Path(__file__).resolve().parent / "netblock"
EXECUTED = ROOT / "_build" / "executed"  # executed notebooks, kept for inspection and scans
ALLOW_NETWORK_ENV = "SAEBOOK_ALLOW_NETWORK"

from chapters import execute_chapter, execute_notebook, write_executed  # noqa: E402, F401


def network_allowed(environ: dict[str, str] | None = None) -> bool:
    """True when ``SAEBOOK_ALLOW_NETWORK=1`` switches the network block off."""
    return (os.environ if environ is None else environ).get(ALLOW_NETWORK_ENV) == "1"


def kernel_env(profile: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a chapter's kernel: this process's, the profile, ``extra``, and the
    network block first on ``PYTHONPATH`` (unless switched off)."""
    env = dict(os.environ, SAEBOOK_PROFILE=profile, **(extra or {}))
    if not network_allowed(env):
        parts = [str(NETBLOCK)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


@dataclass
class ChapterRun:
    """An executed chapter: the notebook with outputs, the error if any, wall time, file."""

    entry: str
    nb: object  # nbformat.NotebookNode
    md_text: str
    error: BaseException | None
    seconds: float
    saved: Path


def run_chapter(
    entry: str,
    workdir: Path,
    profile: str = "tiny",
    extra_env: dict[str, str] | None = None,
    keep: bool = True,
) -> ChapterRun:
    """Execute chapter ``entry`` (a ``_toc.yml`` path without ``.md``) and return the run.

    The executed notebook is written to ``workdir``; with ``keep`` it is also saved atomically
    to ``_build/executed/<entry>.ipynb`` (what the site assembly and the secrets scan read).
    Errors of the chapter (a failing cell, a timeout, a dead kernel) are returned, not raised.
    """
    import nbformat

    md = ROOT / f"{entry}.md"
    execution = execute_chapter(entry, profile, env=kernel_env(profile, extra_env))
    workdir.mkdir(parents=True, exist_ok=True)
    saved = workdir / f"{md.stem}.executed.ipynb"
    nbformat.write(execution.notebook, saved)
    if keep:
        write_executed(execution, EXECUTED)
    nb, error, seconds = execution.notebook, execution.error, execution.seconds
    md_text = md.read_text(encoding="utf-8")
    return ChapterRun(entry, nb, md_text, error, seconds, saved)


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _line_of(source: str, md_text: str) -> int | None:
    """1-based line in the .md where a cell's source starts, when it can be found."""
    snippet = source.strip().splitlines()[0] if source.strip() else ""
    pos = md_text.find(snippet) if snippet else -1
    return md_text.count("\n", 0, pos) + 1 if pos >= 0 else None


def failure_report(run: ChapterRun) -> str:
    """Describe the failing cell: index, tags, source and traceback, without ANSI colours."""
    for index, cell in enumerate(run.nb.cells):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if cell.cell_type != "code" or not errors:
            continue
        err = errors[0]
        traceback = ANSI.sub("", "\n".join(err.get("traceback", [])))
        line = _line_of(cell.source, run.md_text)
        where = f"{run.entry}.md" + (f", line {line}" if line else "")
        tags = cell.metadata.get("tags", [])
        return (
            f"cell {index} ({where}; tags {tags}) raised {err.get('ename')}: {err.get('evalue')}"
            f"\n\n--- cell source ---\n{cell.source}\n\n--- traceback ---\n{traceback}"
            f"\n\nexecuted notebook: {run.saved}"
        )
    # no error output recorded: a timeout, a dead kernel or a failure to start
    exc = run.error
    return f"{type(exc).__name__}: {ANSI.sub('', str(exc))}\n\nexecuted notebook: {run.saved}"
