"""The book's chapter tooling: list the chapters, execute one, assemble the site from many.

The GPU site build fans out one job per chapter and assembles the site at the end, so its wall
time stays flat as chapters are added; the test suite uses the same functions on the ``tiny``
profile, so the fan-out is proven on every CPU test run::

    python book/_ext/chapters.py list                     # JSON list of chapters (CI matrix)
    python book/_ext/chapters.py execute book/intro/01_running_saes --out _build/executed
    python book/_ext/chapters.py assemble _build/executed --out _build/assembled

A chapter is a ``_toc.yml`` entry whose ``.md`` has a ``kernelspec`` in its front matter.
``execute`` converts it with jupytext, runs it with nbclient in the chapter's folder exactly as
myst-nb would (same profile, same plotly renderer as the site build) and writes the executed
notebook, with its run time in the metadata key ``saebook_execution``. ``assemble`` stages a
copy of the book in which every chapter's ``.md`` is replaced by its executed notebook, turns
execution off and builds the site with warnings as errors.
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
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT = 600  # seconds per cell, as execute.timeout in _config.yml
EXECUTION_KEY = "saebook_execution"  # notebook metadata written by execute_chapter


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


@dataclass
class Execution:
    """One executed chapter: the notebook (with outputs), seconds taken, and the error if any."""

    entry: str
    notebook: object  # nbformat.NotebookNode
    seconds: float
    profile: str
    error: BaseException | None


def execute_notebook(
    nb, cwd: Path, env: dict[str, str], timeout: float | None = DEFAULT_TIMEOUT
) -> BaseException | None:
    """Run every cell of ``nb`` in place in a fresh ``python3`` kernel started with ``env`` and
    working directory ``cwd``; return the error that stopped it, or None."""
    from nbclient import NotebookClient

    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        allow_errors=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    try:
        client.execute(env=env)
    except Exception as exc:  # CellExecutionError, CellTimeoutError, DeadKernelError, ...
        return exc
    return None


def execute_chapter(
    entry: str,
    profile: str | None = None,
    root: Path = ROOT,
    env: dict[str, str] | None = None,
) -> Execution:
    """Execute chapter ``entry`` (e.g. ``book/intro/01_running_saes``) under ``profile``.

    The profile defaults to ``SAEBOOK_PROFILE`` or ``tiny``. The kernel gets ``env`` (default:
    this process's environment) plus the profile and the site's plotly renderer, so the
    outputs are the ones the site build would embed. Errors are returned, not raised, with the
    partial notebook.
    """
    import jupytext

    from saebook.display import RENDERER_ENV, SITE_RENDERER

    md = root / f"{entry}.md"
    if entry not in chapters(root):
        raise ValueError(f"entry must be an executable chapter listed in _toc.yml, got {entry!r}")
    profile = profile or os.environ.get("SAEBOOK_PROFILE", "").strip() or "tiny"
    nb = jupytext.reads(md.read_text(encoding="utf-8"), fmt="md:myst")
    timeout = (nb.metadata.get("execution") or {}).get("timeout", DEFAULT_TIMEOUT)
    if timeout is not None and timeout < 0:
        timeout = None  # -1 disables the limit, as in myst-nb
    env = dict(os.environ if env is None else env, SAEBOOK_PROFILE=profile)
    env[RENDERER_ENV] = SITE_RENDERER
    start = time.perf_counter()
    error = execute_notebook(nb, md.parent, env, timeout)  # cwd = the chapter's folder
    seconds = time.perf_counter() - start
    nb.metadata[EXECUTION_KEY] = {
        "mtime": time.time(),
        "runtime": round(seconds, 2),
        "method": f"separate job ({profile})",
        "succeeded": error is None,
        "error": type(error).__name__ if error else None,
        "traceback": None,
    }
    return Execution(entry, nb, seconds, profile, error)


def write_executed(execution: Execution, out: Path) -> Path:
    """Write the executed notebook to ``out/<entry>.ipynb`` (atomically) and return its path."""
    import nbformat

    from saebook.files import atomic_write_text

    path = out / f"{execution.entry}.ipynb"
    atomic_write_text(path, nbformat.writes(execution.notebook))
    return path


def stage_book(executed: Path, stage: Path, root: Path = ROOT) -> list[str]:
    """Copy the book to ``stage`` with each chapter's ``.md`` replaced by its executed notebook.

    Returns the chapters staged; raises ``FileNotFoundError`` naming the chapters that have no
    executed notebook under ``executed``.
    """
    entries = chapters(root)
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


def assemble(executed: Path, out: Path, root: Path = ROOT) -> Path:
    """Build the site from executed notebooks without executing anything; returns the html dir.

    Runs ``jupyter-book build`` with warnings as errors (``-W -n --keep-going``) on a staged
    copy (``out/src``); the site lands in ``out/_build/html``. Raises ``RuntimeError`` with the
    build log's tail when the build fails.
    """
    stage = out / "src"
    stage_book(executed, stage, root)
    book = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(book), "build", str(stage), "--path-output", str(out)]
    cmd += ["--warningiserror", "--nitpick", "--keep-going"]
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
    run = sub.add_parser("execute", help="execute one chapter into OUT/<chapter>.ipynb")
    run.add_argument("chapter")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--profile", default=None)
    build = sub.add_parser("assemble", help="build the site from executed notebooks")
    build.add_argument("executed", type=Path)
    build.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "list":
        print(json.dumps(chapters()))
    elif args.command == "execute":
        execution = execute_chapter(args.chapter.removesuffix(".md"), args.profile)
        path = write_executed(execution, args.out)
        print(f"{execution.entry}: {execution.seconds:.1f} s under {execution.profile} -> {path}")
        if execution.error is not None:
            print(f"failed: {execution.error}", file=sys.stderr)
            return 1
    else:
        print(f"site: {assemble(args.executed, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
