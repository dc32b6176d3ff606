"""Every exercise of the book follows one pattern, so readers meet the same thing everywhere.

An exercise is a section headed ``### Exercise: <what to write>`` in an executable chapter:

1. prose and a ```` ```python ```` block giving the signature (``def NAME(...)``,
   ``class NAME``, or for an answer that is data, an annotated ``NAME: type``) with shapes in
   its docstring or comments;
2. the first code cell after the heading is the solution: tagged ``hide-cell`` (collapsed on
   the site; a titled Colab form in the Colab notebooks), with the toggle text
   ``mystnb: {code_prompt_show: Show a solution, code_prompt_hide: Hide the solution}``,
   and it defines ``NAME``;
3. the next code cell calls the exercise's checker, ``checks.check_<...>(NAME, ...)``, a
   public function of :mod:`saebook.checks` that compares the reader's function with the
   reference on named cases and names the first case on which they differ
   (:func:`saebook.checks.check_function`).

In MyST the solution cell is written

    ```{code-cell} ipython3
    ---
    tags: [hide-cell]
    mystnb:
      code_prompt_show: Show a solution
      code_prompt_hide: Hide the solution
    ---
    def NAME(...):
        ...
    ```
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jupytext
import pytest

from saebook import checks

ROOT = Path(__file__).resolve().parents[1]
HEADING = re.compile(r"^### Exercise: \S", re.M)
SIGNATURE = re.compile(r"```python\n(.*?)```", re.S)
SHOW, HIDE = "Show a solution", "Hide the solution"


def _executable_chapters() -> list[str]:
    from test_chapters import chapters  # the toc's executable chapters (a kernelspec)

    return chapters()


def _exercises(entry: str) -> list[tuple[str, list]]:
    """``(heading line, cells from the heading's markdown cell to the next heading)``."""
    nb = jupytext.read(ROOT / f"{entry}.md", fmt="md:myst")
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for match in HEADING.finditer(cell.source):
            line = cell.source[match.start() :].splitlines()[0]
            after = cell.source[match.start() :]
            cells = [after, *nb.cells[index + 1 :]]
            found.append((line, cells))
    return found


def _defined_names(source: str) -> set[str]:
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


def _check_exercise(entry: str, heading: str, cells: list) -> list[str]:
    """Problems with one exercise (empty when it follows the pattern)."""
    where = f"{entry}.md, {heading!r}"
    prose = [cells[0]]
    rest = cells[1:]
    while rest and rest[0].cell_type == "markdown" and not HEADING.search(rest[0].source):
        prose.append(rest[0].source)
        rest = rest[1:]
    text = "\n".join(prose)
    signature = SIGNATURE.search(text)
    if not signature:
        return [f"{where}: no ```python block with the signature before the solution"]
    names = _defined_names(signature.group(1))
    if len(names) != 1:
        kinds = "one function, class or annotated name"
        return [f"{where}: the signature block must define {kinds}, got {names}"]
    (name,) = names
    code = [c for c in rest if c.cell_type == "code"]
    if len(code) < 2:
        return [f"{where}: expected a solution cell and a checker cell after the heading"]
    solution, check = code[0], code[1]
    problems = []
    tags = solution.metadata.get("tags", [])
    if tags != ["hide-cell"]:
        problems.append(f"{where}: the solution cell must be tagged [hide-cell], got {tags}")
    prompts = solution.metadata.get("mystnb", {})
    if prompts.get("code_prompt_show") != SHOW or prompts.get("code_prompt_hide") != HIDE:
        problems.append(
            f"{where}: the solution cell needs mystnb code_prompt_show {SHOW!r} and "
            f"code_prompt_hide {HIDE!r}, got {prompts}"
        )
    if name not in _defined_names(solution.source):
        problems.append(f"{where}: the solution cell does not define {name!r}")
    call = re.search(rf"checks\.(check_\w+)\(\s*{re.escape(name)}\b", check.source)
    if not call:
        problems.append(f"{where}: the cell after the solution must call checks.check_...({name}")
    elif call.group(1) not in checks.__all__:
        problems.append(f"{where}: {call.group(1)} is not in saebook.checks.__all__")
    elif not (getattr(checks, call.group(1)).__doc__ or "").strip():
        problems.append(f"{where}: saebook.checks.{call.group(1)} has no docstring")
    if check.metadata.get("tags"):
        problems.append(f"{where}: the checker cell must be visible, got tags {check.metadata}")
    return problems


def test_the_book_has_exercises() -> None:
    total = sum(len(_exercises(entry)) for entry in _executable_chapters())
    assert total >= 7, f"expected the book's exercises to be found, got {total}"


@pytest.mark.parametrize("entry", _executable_chapters())
def test_exercises_follow_the_pattern(entry: str) -> None:
    problems = [
        p for heading, cells in _exercises(entry) for p in _check_exercise(entry, heading, cells)
    ]
    assert not problems, "\n".join(problems)


def test_pattern_check_catches_a_visible_solution() -> None:
    md = """---
kernelspec: {name: python3, display_name: Python 3, language: python}
---
### Exercise: double it

```python
def double(x): ...
```

```{code-cell} ipython3
def double(x):
    return 2 * x
```

```{code-cell} ipython3
checks.check_nothing(double)
```
"""
    nb = jupytext.reads(md, fmt="md:myst")
    cells = [nb.cells[0].source, *nb.cells[1:]]
    problems = _check_exercise("x", "### Exercise: double it", cells)
    assert any("tagged [hide-cell]" in p for p in problems), problems
    assert any("code_prompt_show" in p for p in problems), problems
    assert any("check_nothing is not in" in p for p in problems), problems


def test_checker_names_the_first_differing_case() -> None:
    """The feedback a reader gets: the first case (in order) that differs, by name."""
    cases = [
        ("ordinary", (2.0,), {}),
        ("zero", (0.0,), {}),
        ("negative", (-3.0,), {}),
    ]
    with pytest.raises(AssertionError, match=r"^case 'zero': output differs"):
        checks.check_function(lambda x: x * 2 if x else 1.0, lambda x: x * 2, cases)
    with pytest.raises(AssertionError, match=r"^case 'ordinary': your function raised"):
        checks.check_function(lambda x: 1 / 0, lambda x: x * 2, cases)
