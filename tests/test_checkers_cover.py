"""Every checker is tested for rejection, and every chapter holds enough exercises.

- Every public ``check_*`` of :mod:`saebook.checks` is a key of the ``WRONG`` dict of its
  part's rejection test (tests/test_checkers_<part>.py, see tests/checker_harness.py).
- Every executable chapter of parts 1-5 holds at least :data:`MIN_EXERCISES` exercises.

Both tests print their tallies (per-part checker counts, per-chapter exercise counts).

``PENDING_PARTS`` and ``PENDING_CHAPTERS`` name the parts and chapters whose exercises are
still being written (issue 17 is split between two branches, exercises and exercises-b);
they are exempt here, and a test fails as soon as one of them no longer needs the exemption,
so the lists can only shrink (empty them when both branches are merged).
"""

from __future__ import annotations

import importlib
from collections import Counter
from pathlib import Path

import pytest
from checker_harness import part_checkers
from exercise_cells import PARTS, exercise_chapters, exercises, part_of

from saebook import checks

TESTS = Path(__file__).resolve().parent
MIN_EXERCISES = 3
#: Parts whose rejection tests are not written yet (none: every part has its file).
PENDING_PARTS: set[str] = set()
#: Chapters allowed fewer than MIN_EXERCISES exercises for now (none).
PENDING_CHAPTERS: set[str] = set()


def _wrong(part: str) -> dict | None:
    if not (TESTS / f"test_checkers_{part}.py").exists():
        return None
    return importlib.import_module(f"test_checkers_{part}").WRONG


def test_every_checker_has_wrong_implementations() -> None:
    covered: dict[str, int] = {}
    missing = []
    for part in PARTS:
        wrong = _wrong(part)
        names = part_checkers(part)
        print(f"{part}: {len(names)} checkers, ", end="")
        if wrong is None:
            print(
                "no rejection test" + (" (pending, other branch)" if part in PENDING_PARTS else "")
            )
            if part not in PENDING_PARTS:
                missing.append(f"tests/test_checkers_{part}.py is missing")
            continue
        print(f"{sum(len(v) for v in wrong.values())} wrong implementations")
        for name, implementations in wrong.items():
            assert implementations, f"{part}: WRONG[{name!r}] is empty"
            covered[name] = part
        missing += [f"{part}: {n} has no entry in WRONG" for n in names if n not in wrong]
    every = [n for n in checks.__all__ if n.startswith("check_") and n != "check_function"]
    pending = {
        n for n in every if getattr(checks, n).__module__.rsplit(".", 1)[-1] in PENDING_PARTS
    }
    missing += [
        f"{n} is in no part's WRONG" for n in every if n not in covered and n not in pending
    ]
    assert not missing, "\n".join(missing)


def test_pending_parts_are_still_pending() -> None:
    done = [p for p in PENDING_PARTS if (TESTS / f"test_checkers_{p}.py").exists()]
    assert not done, f"remove {done} from PENDING_PARTS: their rejection tests exist"


def test_every_chapter_has_enough_exercises() -> None:
    counts = {entry: len(exercises(entry)) for entry in exercise_chapters()}
    per_part = Counter()
    for entry, n in counts.items():
        per_part[part_of(entry)] += n
        print(f"{n:3d} exercises  {entry}" + ("  (pending)" if entry in PENDING_CHAPTERS else ""))
    print(f"{sum(counts.values())} exercises in all; per part: {dict(per_part)}")
    few = [
        f"{entry}: {n} exercises, at least {MIN_EXERCISES} needed"
        for entry, n in counts.items()
        if n < MIN_EXERCISES and entry not in PENDING_CHAPTERS
    ]
    assert not few, "\n".join(few)
    done = sorted(e for e in PENDING_CHAPTERS if counts.get(e, 0) >= MIN_EXERCISES)
    assert not done, f"remove {done} from PENDING_CHAPTERS: they have enough exercises"
    unknown = sorted(PENDING_CHAPTERS - set(counts))
    assert not unknown, f"PENDING_CHAPTERS names chapters that are not in the book: {unknown}"


@pytest.mark.parametrize("part", PARTS)
def test_a_parts_checkers_are_found(part: str) -> None:
    """The per-part lookup is not vacuous: every part of the book has checkers today."""
    assert part_checkers(part), f"no checker of saebook.checks is defined in checks.{part}"
