"""The book's chapter tooling: list the chapters, generate their notebooks, assemble the site.

Chapters are executed by nbmake (``pytest --nbmake``) on notebooks that jupytext generates
beside each chapter's ``.md`` (git-ignored); ``tests/chapter_runner.py`` is the pytest plugin
that generates them, sets the kernels' environment, times each chapter and keeps the executed
notebook in ``_build/executed/``. The GPU site build fans out one nbmake job per chapter and
assembles the site at the end, so its wall time stays flat as chapters are added; the test
suite runs the same path on the ``tiny`` profile, so the fan-out is proven on every CPU run::

    python book/_ext/chapters.py list                     # JSON list of chapters (CI matrix)
    python book/_ext/chapters.py notebooks                # book/**/<chapter>.ipynb (jupytext)
    python -m pytest --nbmake book/intro/01_running_saes.ipynb   # -> _build/executed/...
    python book/_ext/chapters.py assemble _build/executed --out _build/assembled

A chapter is a ``_toc.yml`` entry whose ``.md`` has a ``kernelspec`` in its front matter.
``assemble`` stages a copy of the book in which every chapter's ``.md`` is replaced by its
executed notebook, turns execution off and builds the site with warnings as errors.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT = 600  # seconds per cell, as execute.timeout in _config.yml
EXECUTION_KEY = "saebook_execution"  # notebook metadata: run time, outcome (mark_executed)
GENERATED_KEY = "saebook_generated_from"  # metadata of a notebook generated from a chapter


def toc_entries(root: Path = ROOT) -> list[str]:
    """Every ``file`` of the jb-book ``_toc.yml`` under ``root``, root page first, no suffix."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
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


def chapters(root: Path = ROOT) -> list[str]:
    """Toc entries that are executable chapters (their ``.md`` has a ``kernelspec``)."""
    return [
        entry
        for entry in toc_entries(root)
        if (root / f"{entry}.md").is_file() and "kernelspec" in front_matter(root / f"{entry}.md")
    ]


def notebook_path(entry: str, root: Path = ROOT) -> Path:
    """The generated notebook of chapter ``entry``: ``<entry>.ipynb`` beside its ``.md``."""
    return root / f"{entry}.ipynb"


def write_notebook(entry: str, root: Path = ROOT) -> Path:
    """Convert chapter ``entry``'s MyST source to ``<entry>.ipynb`` beside it (git-ignored)
    with jupytext, without outputs; returns the path. nbmake executes that file."""
    import jupytext

    md = root / f"{entry}.md"
    nb = jupytext.reads(md.read_text(encoding="utf-8"), fmt="md:myst")
    nb.metadata[GENERATED_KEY] = f"{entry}.md"
    path = notebook_path(entry, root)
    jupytext.write(nb, path, fmt="ipynb")
    return path


def write_notebooks(root: Path = ROOT) -> list[Path]:
    """Generate the notebook of every chapter (see :func:`write_notebook`)."""
    return [write_notebook(entry, root) for entry in chapters(root)]


def mark_executed(nb, seconds: float, profile: str, error: str | None) -> None:
    """Record a run in ``nb.metadata["saebook_execution"]``: the site's execution table and the
    freshness check of the assembled site read it."""
    nb.metadata[EXECUTION_KEY] = {
        "mtime": time.time(),
        "runtime": round(seconds, 2),
        "method": f"nbmake ({profile})",
        "succeeded": error is None,
        "error": error,
        "traceback": None,
    }


def keep_executed(entry: str, nb, out: Path) -> Path:
    """Write executed notebook ``nb`` to ``out/<entry>.ipynb`` (atomically); return its path."""
    import nbformat

    from saebook.files import atomic_write_text

    path = out / f"{entry}.ipynb"
    atomic_write_text(path, nbformat.writes(nb))
    return path


SITE_CHAPTERS_ENV = "SAEBOOK_SITE_CHAPTERS"


def site_chapters(value: str | None = None, root: Path = ROOT) -> list[str]:
    """The chapters a site is assembled from: those named (comma-separated) by
    ``SAEBOOK_SITE_CHAPTERS``, for a quick local check, else every chapter."""
    value = (os.environ.get(SITE_CHAPTERS_ENV, "") if value is None else value).strip()
    every = chapters(root)
    if not value:
        return every
    names = [v.strip().removesuffix(".md").removesuffix(".ipynb") for v in value.split(",")]
    unknown = [n for n in names if n and n not in every]
    if unknown:
        raise ValueError(f"{SITE_CHAPTERS_ENV} must name executable chapters, got {unknown}")
    return [e for e in every if e in names]


def stage_book(
    executed: Path, stage: Path, root: Path = ROOT, only: list[str] | None = None
) -> list[str]:
    """Copy the book to ``stage`` with each chapter's ``.md`` replaced by its executed notebook.

    ``only`` limits the replaced chapters (default: all); the others keep their ``.md`` and,
    with execution off, are built without outputs. Returns the chapters staged; raises
    ``FileNotFoundError`` naming the chapters that have no executed notebook under
    ``executed``.
    """
    entries = chapters(root) if only is None else list(only)
    missing = [e for e in entries if not (executed / f"{e}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(f"executed must hold a notebook per chapter; missing: {missing}")
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    ignore = shutil.ignore_patterns("*.ipynb", "__pycache__", ".ipynb_checkpoints")
    shutil.copytree(root / "book", stage / "book", ignore=ignore)
    shutil.copy2(root / "_toc.yml", stage / "_toc.yml")
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    config["execute"]["execute_notebooks"] = "off"
    config["exclude_patterns"] = [p for p in config["exclude_patterns"] if p != "**/*.ipynb"]
    (stage / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    for entry in entries:
        (stage / f"{entry}.md").unlink()
        shutil.copy2(executed / f"{entry}.ipynb", stage / f"{entry}.ipynb")
    return entries


def assemble(
    executed: Path, out: Path, root: Path = ROOT, only: list[str] | None = None
) -> Path:
    """Build the site from executed notebooks without executing anything; returns the html dir.

    Runs ``jupyter-book build`` with warnings as errors (``-W -n --keep-going``; without
    ``-W -n`` when ``only`` leaves chapters out) on a staged copy (``out/src``); the site lands
    in ``out/_build/html``. Raises ``RuntimeError`` with the build log's tail when the build
    fails.
    """
    stage = out / "src"
    staged = stage_book(executed, stage, root, only)
    book = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(book), "build", str(stage), "--path-output", str(out), "--keep-going"]
    if set(staged) == set(chapters(root)):
        cmd += ["--warningiserror", "--nitpick"]
    # else a quick check on a few chapters: the others have no outputs (so no glued values),
    # which would be warnings; the full assembly keeps warnings as errors
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    (out / "build.log").write_text(result.stdout + result.stderr, encoding="utf-8")
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise RuntimeError(f"assembling the site failed (log: {out / 'build.log'}):\n{tail}")
    return out / "_build" / "html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the executable chapters as a JSON list")
    sub.add_parser("notebooks", help="generate <chapter>.ipynb beside every chapter's .md")
    build = sub.add_parser("assemble", help="build the site from executed notebooks")
    build.add_argument("executed", type=Path)
    build.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "list":
        print(json.dumps(chapters()))
    elif args.command == "notebooks":
        written = write_notebooks()
        print(f"generated {len(written)} chapter notebooks (.ipynb beside each .md)")
    else:
        print(f"site: {assemble(args.executed, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
