"""Convert every executable chapter of the book into a Colab notebook.

An executable chapter is a ``_toc.yml`` entry whose ``.md`` has a ``kernelspec`` in its front
matter (the rule ``tests/test_chapters.py`` uses). Each one is read with jupytext and written
to ``<out>/<same path>.ipynb`` (``book/intro/01_running_saes.md`` ->
``<out>/book/intro/01_running_saes.ipynb``), the layout the site's Colab buttons expect on the
``colab`` branch (see ``book/_ext/saebook_site.py``). In each notebook:

* the chapter's set-up cell (its first code cell that calls ``saebook.setup()``) starts with
  a generated block that installs saebook pinned to the commit the notebook came from
  (``pip install "saebook @ git+<repo>@<sha>"``, only when running in Colab) and, unless the
  chapter names its profile, sets ``SAEBOOK_PROFILE = "gpt2" if torch.cuda.is_available()
  else "tiny"``, one line the reader can change, before ``saebook.setup()``. Chapter sources
  hold no install code of their own (tests/test_colab.py checks it): this is its one home;
* the notebook asks Colab for a GPU runtime (``accelerator: GPU`` and ``colab`` metadata);
* cells hidden on the site (tags ``hide-input``, ``hide-cell``, ``remove-cell``,
  ``remove-input``) are collapsed to a titled Colab form, so exercise solutions stay hidden
  until the reader double-clicks them;
* MyST-only syntax in the text, which Colab would show raw, becomes plain Markdown
  (:func:`myst_to_markdown`): admonitions become quotes, ``{glue:text}`name``` becomes
  ```name``` (the value is printed as ``name = value`` by the cell that computes it), and
  ``{doc}`` references become the page title or path in italics;
* a first markdown cell says where the notebook came from.

Next to each notebook it writes ``<chapter>_exercises.ipynb`` (:func:`exercise_notebook`):
the same notebook with every exercise's solution cell (tag ``solution``) replaced by a stub,
the signature from the exercise's ```` ```python ```` block (def line and docstring, found
with ``ast``) and ``raise NotImplementedError``; an answer that is data (``NAME: type``)
becomes ``NAME: type = NotImplemented``. The checker after it then says "not implemented
yet" until the reader fills it in.

Usage (run from anywhere; the workflow ``.github/workflows/colab.yml`` runs it on main)::

    python .github/scripts/make_colab.py --out _build/colab            # sha = git HEAD
    python .github/scripts/make_colab.py --out DIR --sha 0123abc...     # explicit commit
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[2]
HIDDEN_TAGS = ("hide-input", "hide-cell", "remove-cell", "remove-input")
SETUP_CALL = "saebook.setup("
#: The line of the generated set-up cell that picks the profile (tests look for it).
PROFILE_LINE = 'SAEBOOK_PROFILE = "gpt2" if torch.cuda.is_available() else "tiny"'
SHA_RE = re.compile(r"[0-9a-f]{7,40}")

sys.path.insert(0, str(ROOT / "book" / "_ext"))
from chapters import chapters as executable_chapters  # noqa: E402  (the book's chapter list)


def repository_url(root: Path = ROOT) -> str:
    """``repository.url`` of ``_config.yml`` (``https://github.com/<org>/<repo>``)."""
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    url = str((config.get("repository") or {}).get("url", "")).rstrip("/")
    if not url.startswith("https://github.com/"):
        raise ValueError(f"_config.yml repository.url must be a GitHub URL, got {url!r}")
    return url


def install_spec(repo_url: str, sha: str) -> str:
    """The pip requirement that installs saebook at commit ``sha`` of ``repo_url``."""
    if not SHA_RE.fullmatch(sha):
        raise ValueError(f"sha must be a hex commit id (7 to 40 characters), got {sha!r}")
    return f"saebook @ git+{repo_url}@{sha}"


_ROLE = re.compile(r"\{(glue:text|glue|doc|ref)\}`([^`]*)`")
_FENCE = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{admonition\}[ \t]*(?P<title>[^\n]*)\n"
    r"(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.M | re.S,
)


def _role(match: re.Match) -> str:
    role, target = match.group(1), match.group(2)
    if role.startswith("glue"):
        return f"`{target}`"
    label = re.match(r"(.*?)\s*<[^>]+>$", target)
    return f"*{label.group(1) if label else target}*"


def _admonition(match: re.Match) -> str:
    body = [ln for ln in match.group("body").splitlines() if not re.match(r"^:\w+:", ln)]
    title = match.group("title").strip()
    lines = ([f"**{title}**", ""] if title else []) + body
    return "\n".join(f"> {ln}".rstrip() for ln in lines)


def myst_to_markdown(text: str) -> str:
    """Markdown that Colab renders, from a MyST markdown cell.

    Admonition fences (```` ```{admonition} Title ```` or ``:::{admonition}``, options such
    as ``:class:`` dropped) become block quotes with a bold title; ``{glue:text}`/``{glue}``
    roles become the glued name in code style; ``{doc}``/``{ref}`` roles become their
    label (or target) in italics. Everything else is left as it is.
    """
    return _ROLE.sub(_role, _FENCE.sub(_admonition, text))


def names_profile(source: str) -> bool:
    """Whether a ``saebook.setup(...)`` call in ``source`` names its profile explicitly."""
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "setup"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "saebook"
        ):
            return bool(node.args) or any(k.arg == "profile" for k in node.keywords)
    return False


def setup_header(spec: str, chapter: str, sha: str, choose_profile: bool) -> str:
    """The generated start of the set-up cell: pinned install and, optionally, the profile."""
    lines = [
        f"# Colab set-up, generated from {chapter}.md at commit {sha[:12]}:",
        "# installs saebook at that commit (about a minute) when running in Colab.",
        "import importlib.util",
        "import os" if choose_profile else "",
        "import subprocess",
        "import sys",
        "",
        'if importlib.util.find_spec("google.colab"):',
        "    subprocess.run(",
        '        [sys.executable, "-m", "pip", "install", "-q",',
        f'         "{spec}"],',
        "        check=True,",
        "    )",
    ]
    if choose_profile:
        lines += [
            "",
            "import torch",
            "",
            '# The profile this notebook runs on: "gpt2" (GPT-2 small, SAELens SAEs) on a GPU',
            '# runtime, "tiny" (the book\'s own small model; CPU, minutes) otherwise.',
            "# Change it here.",
            PROFILE_LINE,
            'os.environ["SAEBOOK_PROFILE"] = SAEBOOK_PROFILE',
        ]
    return "\n".join(line for i, line in enumerate(lines) if line or i != 3)


def _hidden_title(cell: nbformat.NotebookNode, after_exercise: bool) -> str:
    tags = cell.metadata.get("tags", [])
    if "hide-cell" in tags and after_exercise:
        return "Solution (double-click to show the code)"
    if "remove-cell" in tags or "remove-input" in tags:
        return "Check (double-click to show the code)"
    return "Hidden code (double-click to show)"


def colab_notebook(md_path: Path, chapter: str, repo_url: str, sha: str) -> nbformat.NotebookNode:
    """The Colab notebook of one chapter (see the module docstring for what changes)."""
    nb = jupytext.read(md_path, fmt="md:myst")
    spec = install_spec(repo_url, sha)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    setup_cell = next((c for c in code_cells if SETUP_CALL in c.source), None)
    rest = setup_cell.source.strip("\n") if setup_cell is not None else ""
    header = setup_header(spec, chapter, sha, choose_profile=not names_profile(rest))
    if setup_cell is None:
        setup_cell = nbformat.v4.new_code_cell(header)
        first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), 0)
        nb.cells.insert(first_code, setup_cell)
    else:
        setup_cell.source = f"{header}\n\n{rest}" if rest else header

    after_exercise = False
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = myst_to_markdown(cell.source)
            after_exercise = bool(re.search(r"^#+ Exercise\b", cell.source, re.M))
            continue
        if cell is setup_cell or not any(t in cell.metadata.get("tags", []) for t in HIDDEN_TAGS):
            continue
        cell.source = f"# @title {_hidden_title(cell, after_exercise)}\n{cell.source}"
        cell.metadata["cellView"] = "form"
        after_exercise = False

    source_url = f"{repo_url}/blob/{sha}/{chapter}.md"
    note = (
        f"*Generated from [`{chapter}.md`]({source_url}) at commit `{sha[:12]}` of "
        f"[saebook]({repo_url}). Run it on a GPU runtime (Runtime → Change runtime type) to "
        "use GPT-2 small; on a CPU runtime it uses the tiny profile. Where the book's text "
        "quotes a computed number, this notebook shows the number's name in code style; the "
        "cell that computes it prints `name = value`.*"
    )
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(note))
    for cell in nb.cells:  # Colab tracks cells by id; make them stable and unique
        cell.pop("id", None)
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["accelerator"] = "GPU"
    nb.metadata["colab"] = {
        "name": f"{md_path.stem}.ipynb",
        "provenance": [],
        "gpuType": "T4",
        "toc_visible": True,
    }
    nb.nbformat, nb.nbformat_minor = 4, 5
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index:03d}"
    nbformat.validate(nb)
    return nb


SOLUTION_TAG = "solution"
EXERCISES_SUFFIX = "_exercises"
STUB_LINE = "raise NotImplementedError  # your code here"
_SIGNATURE_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _stub_node(node: ast.stmt, lines: list[str]) -> list[str]:
    """Stub lines for one top-level definition of a signature block."""
    if isinstance(node, ast.AnnAssign):  # "NAME: type  # comment" -> "NAME: type = ..."
        head = lines[node.lineno - 1 : node.end_lineno]
        code, comment = head[-1][: node.end_col_offset], head[-1][node.end_col_offset :]
        return [*head[:-1], f"{code} = NotImplemented{comment}"]
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return []
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    first = node.body[0]
    has_doc = (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )
    if first.lineno == node.lineno:  # one line: "def f(x): ..." -> keep up to the colon
        header = lines[start - 1 : node.lineno - 1] + [
            lines[node.lineno - 1][: first.col_offset].rstrip()
        ]
    else:
        first_line = min([first.lineno] + [d.lineno for d in getattr(first, "decorator_list", [])])
        header = lines[start - 1 : (first.end_lineno if has_doc else first_line - 1)]
    indent = " " * (node.col_offset + 4)
    if isinstance(node, ast.ClassDef):
        body = [
            stub
            for item in node.body
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
            for stub in _stub_node(item, lines)
        ]
        return header + (body or [indent + "pass"])
    return header + [indent + STUB_LINE]


def stub_source(signature: str) -> str:
    """The exercise notebook's stub for a signature block (see the module docstring)."""
    lines = signature.splitlines()
    stubs = [_stub_node(node, lines) for node in ast.parse(signature).body]
    text = "\n\n".join("\n".join(s) for s in stubs if s)
    if not text:
        raise ValueError(
            f"the signature block defines no function, class or NAME: type: {signature!r}"
        )
    return text


def exercise_notebook(
    nb: nbformat.NotebookNode, md_path: Path
) -> tuple[nbformat.NotebookNode, list[str]]:
    """The exercise version of a Colab notebook and the names whose solutions it stubs.

    Every code cell tagged ``solution`` becomes a visible cell holding the stub of the
    signature block of its exercise (the last ```` ```python ```` block in the markdown since
    the previous code cell). Everything else is unchanged.
    """
    out = nbformat.from_dict(copy.deepcopy(dict(nb)))
    stubbed: list[str] = []
    signature = None
    for cell in out.cells:
        if cell.cell_type == "markdown":
            blocks = _SIGNATURE_BLOCK.findall(cell.source)
            signature = blocks[-1] if blocks else signature
            continue
        if SOLUTION_TAG not in cell.metadata.get("tags", []):
            signature = None
            continue
        if signature is None:
            raise ValueError(
                f"{md_path}: a solution cell has no ```python signature block before it"
            )
        cell.source = stub_source(signature)
        cell.metadata.pop("cellView", None)
        cell.metadata["tags"] = [SOLUTION_TAG]
        cell.outputs, cell.execution_count = [], None
        stubbed += sorted(_defined(signature))
        signature = None
    out.cells[0].source = out.cells[0].source.replace(
        "*Generated from",
        "*Exercise notebook: each exercise's solution is replaced by a stub that raises "
        "`NotImplementedError`; write your code there and run the checker below it. "
        "Generated from",
        1,
    )
    out.metadata["colab"]["name"] = f"{md_path.stem}{EXERCISES_SUFFIX}.ipynb"
    nbformat.validate(out)
    return out, stubbed


def _defined(source: str) -> set[str]:
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def write_exercise_notebook(nb: nbformat.NotebookNode, md_path: Path, target: Path) -> Path:
    """Write the exercise notebook of ``nb`` next to ``target`` (``<stem>_exercises.ipynb``)."""
    exercises, _ = exercise_notebook(nb, md_path)
    path = target.with_name(f"{target.stem}{EXERCISES_SUFFIX}.ipynb")
    nbformat.write(exercises, path)
    return path


def build(out: Path, sha: str, root: Path = ROOT, repo_url: str | None = None) -> list[Path]:
    """Write the Colab notebook of every executable chapter under ``out``; return their paths.

    Each notebook's exercise version (:func:`write_exercise_notebook`) is written beside it.
    """
    repo_url = repo_url or repository_url(root)
    written = []
    for chapter in executable_chapters(root):
        nb = colab_notebook(root / f"{chapter}.md", chapter, repo_url, sha)
        target = out / f"{chapter}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        written.append(target)
        write_exercise_notebook(nb, root / f"{chapter}.md", target)  # <stem>_exercises.ipynb
    if not written:
        raise ValueError(f"no executable chapters (a .md with a kernelspec) in {root / '_toc.yml'}")
    (out / "README.md").write_text(
        "# saebook Colab notebooks\n\n"
        f"Generated from commit {sha} of {repo_url} by `.github/scripts/make_colab.py`; "
        "do not edit here. Each notebook installs saebook at that commit.\n",
        encoding="utf-8",
    )
    return written


def _head_sha(root: Path) -> str:
    result = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the notebooks")
    parser.add_argument("--sha", help="commit to pin saebook to (default: git HEAD)")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = parser.parse_args(argv)
    sha = args.sha or _head_sha(args.root)
    written = build(args.out, sha, args.root)
    print(f"wrote {len(written)} Colab notebooks under {args.out} (saebook @ {sha[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
