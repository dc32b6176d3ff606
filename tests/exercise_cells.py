"""Find the book's exercises in its chapters, and their solution cells, for tests.

An exercise is a ``### Exercise: ...`` section of an executable chapter (the pattern is
described in tests/test_exercises.py). :func:`exercises` parses a chapter into
:class:`Exercise` records; :func:`solution_source` returns one exercise's solution cell by the
name it defines, and :func:`load_solution` runs that cell in a fresh namespace and returns the
object, so the checker tests can feed a checker the book's own solution.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jupytext

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))  # chapters.py

#: The parts of the book whose chapters must each hold exercises (the appendix does not).
PARTS = ("toy_models", "intro", "deeper", "training", "circuits")
HEADING = re.compile(r"^### Exercise: \S", re.M)
SIGNATURE = re.compile(r"```python\n(.*?)```", re.S)


@dataclass
class Exercise:
    """One exercise of a chapter, as written in its MyST source."""

    entry: str  # toc entry, e.g. "book/intro/03_latent_dashboards"
    heading: str  # the heading line
    prose: str  # markdown from the heading to the solution cell
    code: list = field(default_factory=list)  # code cells after the heading (nbformat cells)

    @property
    def signature(self) -> str | None:
        found = SIGNATURE.search(self.prose)
        return found.group(1) if found else None

    @property
    def name(self) -> str | None:
        """The one name the signature block defines (None when there is not exactly one)."""
        signature = self.signature
        names = defined_names(signature) if signature is not None else set()
        return next(iter(names)) if len(names) == 1 else None

    @property
    def solution(self):
        return self.code[0] if self.code else None

    @property
    def checker(self):
        return self.code[1] if len(self.code) > 1 else None


def executable_chapters() -> list[str]:
    """The toc's executable chapters (toc entries, without ``.md``)."""
    from chapters import chapters

    return chapters()


def part_of(entry: str) -> str:
    """``"book/intro/03_x"`` -> ``"intro"``."""
    return Path(entry).parent.name


def exercise_chapters() -> list[str]:
    """Executable chapters of the parts that must hold exercises."""
    return [e for e in executable_chapters() if part_of(e) in PARTS]


def defined_names(source: str) -> set[str]:
    """Functions, classes and annotated variables (``NAME: type``) a block defines."""
    tree = ast.parse(source)
    names = {
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
    }
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def read_chapter(entry: str):
    return jupytext.read(ROOT / f"{entry}.md", fmt="md:myst")


def exercises_in(nb, entry: str = "") -> list[Exercise]:
    """The exercises of a parsed chapter notebook, in order."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for match in HEADING.finditer(cell.source):
            after = cell.source[match.start() :]
            heading = after.splitlines()[0]
            nxt = HEADING.search(after, 1)
            prose = [after[: nxt.start()] if nxt else after]
            rest = nb.cells[index + 1 :]
            if nxt is None:
                while (
                    rest and rest[0].cell_type == "markdown" and not HEADING.search(rest[0].source)
                ):
                    prose.append(rest[0].source)
                    rest = rest[1:]
            code = [c for c in rest if c.cell_type == "code"] if nxt is None else []
            found.append(Exercise(entry, heading, "\n".join(prose), code))
    return found


def exercises(entry: str) -> list[Exercise]:
    """The exercises of one chapter (toc entry), in order."""
    return exercises_in(read_chapter(entry), entry)


def solution_source(entry: str, name: str) -> str:
    """The source of the solution cell of the exercise of ``entry`` whose signature is ``name``."""
    for exercise in exercises(entry):
        if exercise.name == name and exercise.solution is not None:
            return exercise.solution.source
    raise KeyError(f"{entry}.md has no exercise whose signature defines {name!r}")


def load_solution(entry: str, name: str, namespace: dict[str, Any] | None = None) -> Any:
    """Run the solution cell of ``name`` in ``entry`` and return the object it defines.

    The cell runs in a fresh namespace holding ``torch``, ``np``, ``F``
    (``torch.nn.functional``) and whatever ``namespace`` adds (the chapter's other globals a
    solution relies on).
    """
    import numpy as np
    import torch

    scope: dict[str, Any] = {"torch": torch, "np": np, "F": torch.nn.functional}
    scope.update(namespace or {})
    exec(compile(solution_source(entry, name), f"<{entry} solution {name}>", "exec"), scope)
    return scope[name]
