"""The Colab notebooks (.github/scripts/make_colab.py) and the site's Colab launch buttons.

The notebooks are generated into a temporary folder with a fixed commit id. The launch-button
tests use the site of the ``site_html`` fixture (tests/conftest.py: by default the whole book,
assembled from the chapters this session executed) and check that every chapter's Colab URL
points at a notebook the generator writes, on the branch the extension names.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHA = "0123456789abcdef0123456789abcdef01234567"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


make_colab = _load(ROOT / ".github" / "scripts" / "make_colab.py", "make_colab")
site_ext = _load(ROOT / "book" / "_ext" / "saebook_site.py", "saebook_site_under_test")

@pytest.fixture(scope="module")
def notebooks(tmp_path_factory) -> dict[str, nbformat.NotebookNode]:
    out = tmp_path_factory.mktemp("colab")
    written = make_colab.build(out, SHA)
    return {
        str(path.relative_to(out).with_suffix("")): nbformat.read(path, as_version=4)
        for path in written
    }


def _setup_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if c.cell_type == "code" and make_colab.SETUP_CALL in c.source]
    assert cells, "no code cell calls saebook.setup("
    return cells[0]


def test_every_executable_chapter_has_a_notebook(notebooks) -> None:
    chapters = make_colab.executable_chapters()
    assert chapters, "no executable chapters in _toc.yml"
    assert sorted(notebooks) == sorted(chapters)


def test_notebooks_are_valid_and_ask_for_a_gpu(notebooks) -> None:
    for chapter, nb in notebooks.items():
        nbformat.validate(nb)
        assert nb.metadata["accelerator"] == "GPU", chapter
        assert nb.metadata["colab"]["name"] == f"{Path(chapter).name}.ipynb", chapter
        assert nb.metadata["colab"]["gpuType"], chapter
        assert nb.metadata["kernelspec"]["name"] == "python3", chapter
        assert "jupytext" not in nb.metadata, chapter
        ids = [cell["id"] for cell in nb.cells]
        assert len(set(ids)) == len(ids), chapter


def test_install_cell_is_pinned_to_the_commit(notebooks) -> None:
    spec = f"saebook @ git+https://github.com/saebook/saebook@{SHA}"
    for chapter, nb in notebooks.items():
        cell = _setup_cell(nb)
        assert f'"{spec}"' in cell.source, chapter
        everything = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        unpinned = re.findall(r"git\+https://github\.com/saebook/saebook(?!@)", everything)
        assert not unpinned, f"{chapter}: an unpinned install is left"
        assert everything.count("pip") == 1, f"{chapter}: expected exactly one pip install"
        assert "cellView" not in cell.metadata, f"{chapter}: the set-up cell must stay visible"


def test_profile_defaults_to_gpt2_on_a_gpu_before_setup(notebooks) -> None:
    chose = 0
    for chapter, nb in notebooks.items():
        source = _setup_cell(nb).source
        if make_colab.names_profile(source):
            assert make_colab.PROFILE_LINE not in source, chapter
            continue
        chose += 1
        assert source.count(make_colab.PROFILE_LINE) == 1, chapter
        assert source.index(make_colab.PROFILE_LINE) < source.index("saebook.setup("), chapter
        assert 'os.environ["SAEBOOK_PROFILE"] = SAEBOOK_PROFILE' in source, chapter
    assert chose, "no chapter got the profile line"


def test_code_cells_parse_and_hidden_cells_are_collapsed(notebooks) -> None:
    solutions = 0
    for chapter, nb in notebooks.items():
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            lines = [
                ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!"))
            ]
            ast.parse("\n".join(lines))  # a SyntaxError names the chapter in the traceback
            tags = cell.metadata.get("tags", [])
            hidden = any(t in tags for t in make_colab.HIDDEN_TAGS)
            if hidden and make_colab.SETUP_CALL not in cell.source:
                assert cell.metadata.get("cellView") == "form", (chapter, cell.source[:60])
                assert cell.source.startswith("# @title "), (chapter, cell.source[:60])
                solutions += cell.source.startswith("# @title Solution")
    assert solutions >= 5, (
        f"expected the book's exercise solutions to be collapsed, got {solutions}"
    )


def test_generated_setup_header_runs_and_picks_tiny_without_gpu() -> None:
    header = make_colab.setup_header(
        make_colab.install_spec("https://github.com/saebook/saebook", SHA),
        "book/x",
        SHA,
        choose_profile=True,
    )
    code = header + '\nprint("PROFILE=" + os.environ["SAEBOOK_PROFILE"])\n'
    env = {k: v for k, v in os.environ.items() if k != "SAEBOOK_PROFILE"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "PROFILE=tiny" in result.stdout  # not in Colab: nothing installed, no GPU: tiny


def test_chapter_sources_hold_no_install_code() -> None:
    """The Colab install block is generated (make_colab.setup_header), never written in a
    chapter: each chapter's first code cell is its set-up call, with no pip or Colab check."""
    for chapter in make_colab.executable_chapters():
        nb = jupytext.read(ROOT / f"{chapter}.md", fmt="md:myst")
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        assert code and make_colab.SETUP_CALL in code[0], f"{chapter}: first cell must set up"
        everything = "\n".join(code)
        for marker in ("google.colab", "pip install", '"pip"', "git+https://"):
            assert marker not in everything, f"{chapter}.md: install code ({marker!r}) found"


def test_generated_setup_cell_keeps_the_chapter_call(notebooks) -> None:
    for chapter, nb in notebooks.items():
        source = _setup_cell(nb).source
        assert source.count("google.colab") == 1, chapter  # the generated block, once
        assert source.index("google.colab") < source.index(make_colab.SETUP_CALL), chapter


def test_names_profile_and_install_spec() -> None:
    assert not make_colab.names_profile("import saebook\nprofile = saebook.setup()")
    assert make_colab.names_profile('profile = saebook.setup(profile="tiny")')
    assert make_colab.names_profile('profile = saebook.setup("gpt2")')
    with pytest.raises(ValueError, match="sha must be a hex commit id"):
        make_colab.install_spec("https://github.com/saebook/saebook", "main")


def test_colab_url_moves_to_the_colab_branch() -> None:
    url = "https://colab.research.google.com/github/o/r/blob/main/book/a/b.md"
    assert site_ext.colab_url(url, "main", "colab") == (
        "https://colab.research.google.com/github/o/r/blob/colab/book/a/b.ipynb"
    )
    with pytest.raises(ValueError, match="does not contain"):
        site_ext.colab_url(url, "dev", "colab")


def test_launch_buttons_point_at_generated_notebooks(site_html: Path, notebooks) -> None:
    generated = {f"{chapter}.ipynb" for chapter in notebooks}
    pattern = re.compile(
        r'https://colab\.research\.google\.com/github/saebook/saebook/blob/([^/"]+)/([^"]+)"'
    )
    for chapter in notebooks:
        page = (site_html / f"{chapter}.html").read_text(encoding="utf-8")
        links = set(pattern.findall(page))
        expected = {
            (site_ext.COLAB_BRANCH, f"{chapter}.ipynb"),  # read
            (site_ext.COLAB_BRANCH, f"{chapter}_exercises.ipynb"),  # do the exercises
        }
        assert links == expected, f"{chapter}: expected the read and exercise links, got {links}"
        assert f"{chapter}.ipynb" in generated, chapter
    landing = (site_html / "book" / "index.html").read_text("utf-8")  # the toc root page
    assert "colab.research.google.com" not in landing


def test_chapter_map_links_to_built_pages(site_html: Path, notebooks) -> None:
    page = (site_html / "book" / "index.html").read_text(encoding="utf-8")
    svg = re.search(r'<svg class="sb-map".*?</svg>', page, re.S)
    assert svg, "the landing page has no chapter map"
    hrefs = re.findall(r'<a class="sb-(?:ready|part|outline)" href="([^"]+)"', svg.group(0))
    assert len(hrefs) > len(notebooks)  # a box per part and per page
    for href in hrefs:
        assert (site_html / "book" / href.split("#")[0]).resolve().is_file(), href
    assert svg.group(0).count('class="sb-ready"') >= len(notebooks)


def test_workflow_publishes_to_the_branch_the_buttons_use() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "colab.yml").read_text("utf-8"))
    job = workflow["jobs"]["notebooks"]
    assert job["env"]["COLAB_BRANCH"] == site_ext.COLAB_BRANCH
    steps = "\n".join(str(step.get("run", "")) for step in job["steps"])
    assert ".github/scripts/make_colab.py" in steps and '--sha "$GITHUB_SHA"' in steps
    assert "refs/heads/${COLAB_BRANCH}" in steps


def test_myst_to_markdown() -> None:
    text = (
        "```{admonition} Learning objectives\n:class: tip\n- one\n```\n\n"
        ":::{admonition} Planned\n:class: warning\nsee {doc}`the card <appendix/tiny_world>`"
        " and {doc}`appendix/index`\n:::\n\nIt is {glue:text}`resid_ev`, `code` stays."
    )
    assert make_colab.myst_to_markdown(text) == (
        "> **Learning objectives**\n>\n> - one\n\n"
        "> **Planned**\n>\n> see *the card* and *appendix/index*\n\n"
        "It is `resid_ev`, `code` stays."
    )


def test_markdown_cells_have_no_myst_roles_left(notebooks) -> None:
    for chapter, nb in notebooks.items():
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                assert not re.search(r"\{(glue:text|glue|doc|ref|admonition)\}", cell.source), (
                    chapter,
                    cell.source[:80],
                )
