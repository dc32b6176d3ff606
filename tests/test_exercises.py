"""Every exercise of the book follows one pattern, so readers meet the same thing everywhere.

An exercise is a section headed ``### Exercise: <what to write>`` in an executable chapter:

1. right under the heading, one line rating it, exactly of the form
   ``Difficulty: 🔴🔴⚪⚪⚪ | Importance: 🔵🔵🔵⚪⚪`` (five symbols each, the count of red or
   blue ones is the rating, 1 to 5);
2. the task in prose and a ```` ```python ```` block giving the signature (``def NAME(...)``,
   ``class NAME``, or for an answer that is data, an annotated ``NAME: type``) with shapes in
   its docstring or comments;
3. after the signature block, one or two hints, each a MyST dropdown titled ``Hint 1``,
   ``Hint 2`` (collapsed on the site);
4. the first code cell after the heading is the solution: tagged ``[hide-cell, solution]``
   (collapsed on the site; a titled Colab form in the Colab notebooks; replaced by a stub in
   the exercise notebooks), with the toggle text
   ``mystnb: {code_prompt_show: Show a solution, code_prompt_hide: Hide the solution}``,
   and it defines ``NAME``;
5. the next code cell calls the exercise's checker, ``checks.check_<...>(NAME, ...)``, a
   public function of :mod:`saebook.checks` that compares the reader's function with the
   reference on named cases and names the first case on which they differ
   (:func:`saebook.checks.check_function`).

In MyST an exercise is written

    ### Exercise: double it

    Difficulty: 🔴⚪⚪⚪⚪ | Importance: 🔵🔵⚪⚪⚪

    Write ...

    ```python
    def double(x: torch.Tensor) -> torch.Tensor:
        # x: (n,) -> (n,)
    ```

    ```{dropdown} Hint 1
    ...
    ```

    ```{code-cell} ipython3
    ---
    tags: [hide-cell, solution]
    mystnb:
      code_prompt_show: Show a solution
      code_prompt_hide: Hide the solution
    ---
    def double(x):
        ...
    ```

    ```{code-cell} ipython3
    checks.check_double(double)
    ```

Parsing lives in tests/exercise_cells.py (shared with the checker tests).
"""

from __future__ import annotations

import re

import jupytext
import pytest
from exercise_cells import (
    SIGNATURE,
    Exercise,
    defined_names,
    executable_chapters,
    exercises,
    exercises_in,
)

from saebook import checks

SHOW, HIDE = "Show a solution", "Hide the solution"
SOLUTION_TAGS = ["hide-cell", "solution"]
RATING = re.compile(r"^Difficulty: (?P<d>🔴*)(?P<dn>⚪*) \| Importance: (?P<i>🔵*)(?P<in>⚪*)$")
HINT = re.compile(r"^```\{dropdown\} Hint (\d)\n(.*?)^```$", re.S | re.M)


def _rating_problems(where: str, prose: str) -> list[str]:
    lines = [line for line in prose.splitlines()[1:] if line.strip()]
    first = lines[0] if lines else ""
    found = RATING.match(first)
    wanted = "'Difficulty: 🔴🔴⚪⚪⚪ | Importance: 🔵🔵🔵⚪⚪' (five symbols each)"
    if not found:
        return [f"{where}: the first line under the heading must be {wanted}, got {first!r}"]
    problems = []
    for kind, on, off in (("Difficulty", "d", "dn"), ("Importance", "i", "in")):
        n_on, n_off = len(found.group(on)), len(found.group(off))
        if n_on + n_off != 5 or n_on == 0:
            problems.append(
                f"{where}: {kind} needs 5 symbols with 1 to 5 filled, got {n_on} filled and "
                f"{n_off} empty"
            )
    return problems


def _hint_problems(where: str, prose: str) -> list[str]:
    signature = SIGNATURE.search(prose)
    after = prose[signature.end() :] if signature else prose
    hints = HINT.findall(after)
    numbers = [int(n) for n, _ in hints]
    if numbers not in ([1], [1, 2]):
        return [
            f"{where}: after the signature block, one or two hints are needed, written "
            f"```{{dropdown}} Hint 1 ... ``` (and Hint 2); found hints {numbers}"
        ]
    empty = [n for n, text in hints if not text.strip()]
    return [f"{where}: hint {empty[0]} is empty"] if empty else []


def _check_exercise(exercise: Exercise) -> list[str]:
    """Problems with one exercise (empty when it follows the pattern)."""
    where = f"{exercise.entry}.md, {exercise.heading!r}"
    problems = _rating_problems(where, exercise.prose)
    signature = exercise.signature
    if signature is None:
        return [*problems, f"{where}: no ```python block with the signature before the solution"]
    names = defined_names(signature)
    if len(names) != 1:
        kinds = "one function, class or annotated name"
        return [*problems, f"{where}: the signature block must define {kinds}, got {names}"]
    (name,) = names
    problems += _hint_problems(where, exercise.prose)
    if exercise.checker is None:
        problems.append(f"{where}: expected a solution cell and a checker cell after the heading")
        return problems
    solution, check = exercise.solution, exercise.checker
    tags = solution.metadata.get("tags", [])
    if tags != SOLUTION_TAGS:
        problems.append(f"{where}: the solution cell must be tagged {SOLUTION_TAGS}, got {tags}")
    prompts = solution.metadata.get("mystnb", {})
    if prompts.get("code_prompt_show") != SHOW or prompts.get("code_prompt_hide") != HIDE:
        problems.append(
            f"{where}: the solution cell needs mystnb code_prompt_show {SHOW!r} and "
            f"code_prompt_hide {HIDE!r}, got {prompts}"
        )
    if name not in defined_names(solution.source):
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
    total = sum(len(exercises(entry)) for entry in executable_chapters())
    assert total >= 24, f"expected the book's exercises to be found, got {total}"


@pytest.mark.parametrize("entry", executable_chapters())
def test_exercises_follow_the_pattern(entry: str) -> None:
    problems = [p for exercise in exercises(entry) for p in _check_exercise(exercise)]
    assert not problems, "\n".join(problems)


GOOD = """---
kernelspec: {name: python3, display_name: Python 3, language: python}
---
### Exercise: double it

Difficulty: 🔴⚪⚪⚪⚪ | Importance: 🔵🔵⚪⚪⚪

Write it.

```python
def double(x): ...
```

```{dropdown} Hint 1
Multiply by two.
```

```{code-cell} ipython3
---
tags: [hide-cell, solution]
mystnb:
  code_prompt_show: Show a solution
  code_prompt_hide: Hide the solution
---
def double(x):
    return 2 * x
```

```{code-cell} ipython3
checks.check_toy_forward(double)
```
"""


def _problems(md: str) -> list[str]:
    (exercise,) = exercises_in(jupytext.reads(md, fmt="md:myst"), "x")
    return _check_exercise(exercise)


def test_pattern_check_accepts_the_pattern() -> None:
    assert _problems(GOOD) == []


def test_pattern_check_catches_a_visible_solution() -> None:
    md = GOOD.replace(
        "tags: [hide-cell, solution]\nmystnb:\n  code_prompt_show: Show a "
        "solution\n  code_prompt_hide: Hide the solution\n",
        "",
    )
    md = md.replace("---\ndef double", "def double").replace("check_toy_forward", "check_nothing")
    problems = _problems(md)
    assert any("must be tagged" in p for p in problems), problems
    assert any("code_prompt_show" in p for p in problems), problems
    assert any("check_nothing is not in" in p for p in problems), problems


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("Difficulty: 🔴⚪⚪⚪⚪ | Importance: 🔵🔵⚪⚪⚪\n", "", "first line under the heading"),
        ("🔴⚪⚪⚪⚪", "🔴⚪⚪⚪", "Difficulty needs 5 symbols"),
        ("🔵🔵⚪⚪⚪", "⚪⚪⚪⚪⚪", "Importance needs 5 symbols"),
        ("Difficulty: 🔴", "Difficulty:  🔴", "first line under the heading"),
        ("```{dropdown} Hint 1\nMultiply by two.\n```\n", "", "one or two hints"),
        ("Hint 1", "Hint 2", "one or two hints"),
        ("Multiply by two.", "", "hint 1 is empty"),
        ("tags: [hide-cell, solution]", "tags: [hide-cell]", "must be tagged"),
    ],
)
def test_pattern_check_catches_a_missing_part(old: str, new: str, message: str) -> None:
    assert old in GOOD
    problems = _problems(GOOD.replace(old, new))
    assert any(message in p for p in problems), problems


def test_hints_before_the_signature_do_not_count() -> None:
    hint = "```{dropdown} Hint 1\nMultiply by two.\n```\n"
    md = GOOD.replace(hint, "").replace("Write it.\n", "Write it.\n\n" + hint)
    assert any("one or two hints" in p for p in _problems(md))


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


def test_checker_says_a_stub_is_not_implemented() -> None:
    """A reader's function still raising NotImplementedError is reported as such, not a crash."""

    def stub(x):
        raise NotImplementedError

    cases = [("ordinary", (2.0,), {})]
    with pytest.raises(AssertionError, match=r"^case 'ordinary': not implemented yet"):
        checks.check_function(stub, lambda x: x * 2, cases)


def test_an_answer_left_as_a_stub_is_not_implemented() -> None:
    """An exercise whose answer is data (``NAME: type``) is stubbed as ``NotImplemented``."""
    with pytest.raises(AssertionError, match=r"^case 'the diagnosis': not implemented yet"):
        checks.check_diagnosis(NotImplemented)
    checks.require_answer({"A": "healthy"}, "an answer")  # a real answer passes
