"""What every checker-rejection test (tests/test_checkers_<part>.py) asserts, in one place.

Each part's test file holds a module-level ``WRONG: dict[str, list[Callable]]`` mapping every
checker of the part (the ``check_*`` names of :mod:`saebook.checks` defined in
``saebook.checks.<part>``) to plausible wrong implementations, and asserts with these helpers
that each checker

(a) rejects a stub raising ``NotImplementedError`` with the "not implemented yet" message;
(b) rejects each wrong implementation with an ``AssertionError`` naming a case;
(c) accepts the book's own solution (the chapter's solution cell, see tests/exercise_cells.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from saebook import checks

CASE_NAMED = re.compile(r"case '[^']+'|run [A-Z]|answers must name")


def part_checkers(part: str) -> list[str]:
    """The public ``check_*`` names of :mod:`saebook.checks` defined in ``checks.<part>``."""
    module = f"saebook.checks.{part}"
    return sorted(
        name
        for name in checks.__all__
        if name.startswith("check_") and getattr(checks, name).__module__ == module
    )


def stub(*args: Any, **kwargs: Any) -> Any:
    """An exercise left as the exercise notebook leaves it."""
    raise NotImplementedError


def assert_stub_rejected(checker: Callable[..., None], answer: Any, *args: Any) -> None:
    with pytest.raises(AssertionError) as info:
        checker(answer, *args)
    message = str(info.value)
    assert checks.NOT_IMPLEMENTED in message, message
    assert CASE_NAMED.search(message), message


def assert_wrong_rejected(checker: Callable[..., None], wrong: Any, *args: Any) -> str:
    """Assert ``checker`` rejects ``wrong`` naming a case; return the message."""
    try:
        checker(wrong, *args)
    except AssertionError as exc:
        message = str(exc)
    else:
        name = getattr(wrong, "__name__", repr(wrong))
        raise AssertionError(f"{checker.__name__} accepted the wrong implementation {name}")
    assert CASE_NAMED.search(message), f"the message names no case: {message}"
    assert checks.NOT_IMPLEMENTED not in message, message
    return message
