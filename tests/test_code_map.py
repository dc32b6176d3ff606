"""The chapter-to-code map: chapters name their technique modules, and the modules their chapters.

Each technique module of ``src/saebook`` has a docstring paragraph ``Chapters: intro/04,
deeper/05`` (chapter ids are ``<part>/<nn>``, or ``<part>/<stem>`` for an unnumbered page; a
long list wraps onto more lines), in the book's order. Each page of
the book that uses a technique module has, right after its learning objectives (or, on a page
without them, before its first code cell), one line

    Code for this chapter: `saebook.attribution`, `saebook.metrics`.

naming its technique modules in alphabetical order. The two sides must agree, and a page must
name every technique module its code cells import (``from saebook.x import ...``,
``from saebook import x``, ``import saebook.x``) or call as ``saebook.x.``. It may name a
module it reaches another way (e.g. through the profile) as long as the module names it back.

Plumbing and infrastructure (:data:`NOT_TECHNIQUES`) are left out of the map: every chapter
uses them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "saebook"
BOOK = ROOT / "book"

#: modules and packages of saebook that are plumbing, infrastructure or the tiny world itself
NOT_TECHNIQUES = frozenset(
    {
        "checks",  # exercise checkers (the book's parts, not techniques)
        "display",
        "errors",
        "files",
        "hooks",
        "notebook",
        "profiles",
        "rehearsal",
        "tasks",  # reached through Profile.task()
        "tinyworld",
        "validate",
    }
)

CODE_LINE = re.compile(r"^Code for this chapter: (.+)\.$")
CHAPTERS_LINE = re.compile(r"^Chapters: (.+)$")
CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.M | re.S)


def technique_modules() -> list[str]:
    """Names of saebook's technique modules (``src/saebook/<name>.py``), sorted."""
    names = [p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"]
    names += [p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()]
    return sorted(n for n in names if n not in NOT_TECHNIQUES)


def pages() -> list[Path]:
    """Every page of the book (index pages included), sorted."""
    return sorted(BOOK.glob("*/*.md"))


def chapter_id(page: Path) -> str:
    """``intro/04`` for ``book/intro/04_finding_latents.md``; ``appendix/tiny_world`` else."""
    match = re.match(r"(\d+)_", page.stem)
    return f"{page.parent.name}/{match.group(1) if match else page.stem}"


def module_chapters(name: str) -> list[str] | None:
    """The chapter ids a module's docstring names on its ``Chapters:`` line (None: no line)."""
    path = PACKAGE / f"{name}.py"
    path = path if path.exists() else PACKAGE / name / "__init__.py"
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    paragraphs = [" ".join(p.split()) for p in doc.split("\n\n")]  # a long line may wrap
    found = [m.group(1) for m in map(CHAPTERS_LINE.match, paragraphs) if m]
    if not found:
        return None
    assert len(found) == 1, f"{path}: one 'Chapters:' paragraph, got {len(found)}"
    return [c.strip() for c in found[0].split(",")]


def imported_modules(text: str) -> set[str]:
    """Technique modules a page's code cells import or call (``saebook.<name>.``)."""
    known = set(technique_modules())
    used: set[str] = set()
    for cell in CODE_CELL.findall(text):
        used.update(re.findall(r"\bfrom saebook\.(\w+)", cell))
        used.update(re.findall(r"\bimport saebook\.(\w+)", cell))
        used.update(re.findall(r"\bsaebook\.(\w+)\.", cell))
        for group, line in re.findall(r"\bfrom saebook import (?:\(([^)]*)\)|([\w ,]+))", cell):
            names = re.sub(r"#[^\n]*", "", group or line).split(",")
            used.update(n.split(" as ")[0].strip() for n in names)
    return used & known


def _code_paragraph(page: Path) -> tuple[int, str] | None:
    """(first line index, text joined on one line) of the page's ``Code for this chapter``."""
    lines = page.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Code for this chapter:")]
    if not starts:
        return None
    assert len(starts) == 1, f"{page}: one 'Code for this chapter:' line, got {len(starts)}"
    end = next((i for i in range(starts[0], len(lines)) if not lines[i].strip()), len(lines))
    return starts[0], " ".join(" ".join(lines[starts[0] : end]).split())


def named_modules(page: Path) -> list[str] | None:
    """The modules on a page's ``Code for this chapter:`` line, in order (None: no line)."""
    found = _code_paragraph(page)
    if found is None:
        return None
    match = CODE_LINE.match(found[1])
    assert match, f"{page}: 'Code for this chapter: `saebook.x`, `saebook.y`.', got {found[1]!r}"
    names = [n.strip() for n in match.group(1).split(",")]
    assert all(re.fullmatch(r"`saebook\.\w+`", n) for n in names), (page, names)
    return [n.strip("`").removeprefix("saebook.") for n in names]


def code_line_is_placed(page: Path) -> bool:
    """The line follows the learning objectives, or precedes the first code cell without them."""
    lines = page.read_text().splitlines()
    at = _code_paragraph(page)[0]
    opens = [i for i, line in enumerate(lines) if "{admonition} Learning objectives" in line]
    if opens:
        close = next(i for i in range(opens[0] + 1, len(lines)) if lines[i] == "```")
        return all(not line.strip() for line in lines[close + 1 : at]) and close < at
    return not any(line.startswith("```{code-cell}") for line in lines[:at])


def test_every_technique_module_names_its_chapters():
    ids = {chapter_id(p) for p in pages()}
    for name in technique_modules():
        chapters = module_chapters(name)
        assert chapters, f"saebook.{name}'s docstring needs a line 'Chapters: part/nn, ...'"
        unknown = sorted(set(chapters) - ids)
        assert not unknown, f"saebook.{name} names chapters that do not exist: {unknown}"


@pytest.mark.parametrize("page", pages(), ids=chapter_id)
def test_each_page_names_the_modules_it_uses(page):
    used = imported_modules(page.read_text())
    named = named_modules(page)
    if named is None:
        assert not used, f"{page} uses {sorted(used)}: add 'Code for this chapter: ...'"
        return
    assert named == sorted(named), f"{page}: name the modules alphabetically, got {named}"
    assert set(named) <= set(technique_modules()), f"{page} names non-techniques: {named}"
    missing = sorted(used - set(named))
    assert not missing, f"{page} uses {missing} but its 'Code for this chapter' line omits them"
    assert code_line_is_placed(page), f"{page}: put the line right after the learning objectives"


def test_modules_and_chapters_agree():
    from_modules = {
        (name, chapter) for name in technique_modules() for chapter in module_chapters(name) or []
    }
    from_pages = {
        (name, chapter_id(page)) for page in pages() for name in named_modules(page) or []
    }
    assert sorted(from_pages - from_modules) == [], "pages name modules that do not name them"
    assert sorted(from_modules - from_pages) == [], "modules name pages that do not name them"


def test_the_map_catches_disagreements(tmp_path):
    """The parsers see imports in code cells only, and a misplaced or unsorted line."""
    text = (
        "# T\n\n```{admonition} Learning objectives\n- x\n```\n\n"
        "Code for this chapter: `saebook.metrics`.\n\n"
        "See `saebook.splitting` in prose.\n\n"
        "```{code-cell} ipython3\nfrom saebook import display, metrics as m\n"
        "from saebook import (\n    probing,\n    steering as st,\n)\n"
        "from saebook.attribution import ablation_effects\nsaebook.geometry.x()\n```\n"
    )
    assert imported_modules(text) == {"metrics", "probing", "steering", "attribution", "geometry"}
    page = tmp_path / "intro" / "09_x.md"
    page.parent.mkdir()
    page.write_text(text)
    assert named_modules(page) == ["metrics"] and code_line_is_placed(page)
    assert chapter_id(page) == "intro/09"
    page.write_text(text.replace("```\n\nCode for", "```\n\nA paragraph.\n\nCode for"))
    assert not code_line_is_placed(page)
    page.write_text(text.replace("`saebook.metrics`", "`saebook.metrics`, `saebook.attention`"))
    assert named_modules(page) == ["metrics", "attention"]  # unsorted: the test above fails it
