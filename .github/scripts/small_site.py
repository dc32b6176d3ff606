"""Build a small copy of the site: the landing page and a few chapters, for tests.

The full book is too heavy for a quick check of the site itself (launch buttons, the chapter
map, pages in a browser). This writes a reduced ``_toc.yml`` (the root page plus the chosen
chapters, each under its own part caption) and a copy of ``_config.yml`` (extension paths made
absolute; execution switched off with ``--no-execute``), then runs ``jupyter-book build`` on
the repository into ``--out``. The site lands in ``<out>/_build/html``.

Cross-references to pages left out of the small toc cannot resolve, so the build does not use
``-W``; ``make book`` remains the strict build of the whole book.

    python .github/scripts/small_site.py --out _build/small                 # executed
    python .github/scripts/small_site.py --out /tmp/site --no-execute \\
        --chapters book/intro/01_running_saes
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CHAPTERS = ("book/intro/01_running_saes", "book/appendix/tiny_world")


def small_toc(chapters: list[str], root: Path = ROOT) -> dict:
    """``_toc.yml`` reduced to its root page and ``chapters`` (in the full toc's order)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    wanted = {c.removesuffix(".md") for c in chapters}
    parts = []
    for part in toc.get("parts", []):
        kept = [c for c in part.get("chapters", []) if str(c.get("file")) in wanted]
        if kept:
            parts.append({"caption": part.get("caption", ""), "chapters": kept})
    found = {str(c["file"]) for part in parts for c in part["chapters"]}
    missing = sorted(wanted - found)
    if missing:
        raise ValueError(f"chapters must be _toc.yml part chapters, not found: {missing}")
    return {"format": toc["format"], "root": toc["root"], "parts": parts}


def small_config(execute: bool, root: Path = ROOT) -> dict:
    """``_config.yml`` with absolute local-extension paths and, unless ``execute``, no execution."""
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    sphinx = config.setdefault("sphinx", {})
    local = sphinx.get("local_extensions") or {}
    sphinx["local_extensions"] = {name: str((root / p).resolve()) for name, p in local.items()}
    if not execute:
        config.setdefault("execute", {})["execute_notebooks"] = "off"
    return config


def build(out: Path, chapters: list[str], execute: bool = True, root: Path = ROOT) -> Path:
    """Build the small site into ``out``; return its ``_build/html`` folder."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    toc_path, config_path = out / "_toc.yml", out / "_config.yml"
    toc_path.write_text(yaml.safe_dump(small_toc(chapters, root), sort_keys=False), "utf-8")
    config_path.write_text(yaml.safe_dump(small_config(execute, root), sort_keys=False), "utf-8")
    jb = Path(sys.executable).parent / "jupyter-book"
    cmd = [
        str(jb) if jb.is_file() else "jupyter-book",
        "build",
        str(root),
        "--toc",
        str(toc_path),
        "--config",
        str(config_path),
        "--path-output",
        str(out),
        "--all",
        "-q",
    ]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(root / "src"), os.environ.get("PYTHONPATH")])),
    )
    subprocess.run(cmd, cwd=root, check=True, env=env)
    html = out / "_build" / "html"
    if not (html / "index.html").is_file():
        raise RuntimeError(f"jupyter-book wrote no {html / 'index.html'}")
    return html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--chapters", nargs="+", default=list(DEFAULT_CHAPTERS))
    parser.add_argument("--no-execute", action="store_true", help="do not run the chapters")
    args = parser.parse_args(argv)
    html = build(args.out, args.chapters, execute=not args.no_execute)
    print(f"small site: {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
