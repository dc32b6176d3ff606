"""Session-wide set-up and reporting.

- The network is blocked for the whole session (tests/netblock/sitecustomize.py, also put on
  the PYTHONPATH of every chapter kernel by tests/chapter_runner.py); set
  `SAEBOOK_ALLOW_NETWORK=1` to lift it.
- Each chapter test records `chapter` and `chapter_seconds` with `record_property`; the hooks
  below collect them with the test's outcome, print a timing table at the end of the session
  and write `_build/chapter_times.json` (uploaded as an artifact by CI).
- Tests that compare a technique with an independent reference record one row each with the
  `reference_row` fixture; rows go to `_build/reference_checks.json` as they are recorded
  (keyed by technique and quantity, with the test's node id and the time), feed the appendix
  page "How this book checks itself", and are printed at the end of the session.
- Tests may record one-line tallies the same way: `bad_input` ("tried"/"rejected", from
  tests/test_bad_inputs.py) and `determinism` ("identical"/"different", from
  tests/test_determinism.py); a line per tally is printed at the end (also with -q).
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))  # chapters.py: list, execute, assemble
TIMES_JSON = ROOT / "_build" / "chapter_times.json"
REFERENCES_JSON = ROOT / "_build" / "reference_checks.json"
NETBLOCK_FILE = Path(__file__).resolve().parent / "netblock" / "sitecustomize.py"

CHAPTER_BUDGET_S = 120  # per chapter, on the 2-core CI machine (issue: build budget)
BOOK_BUDGET_S = 15 * 60  # the whole book

_times: list[dict] = []
_chapter_tests_ran = False  # a chapter test ran or was skipped (no chapters yet)
_tallies: dict[str, list[str]] = {"bad_input": [], "determinism": []}
_reference_rows: list[dict] = []


def _load_netblock():
    spec = importlib.util.spec_from_file_location("saebook_netblock", NETBLOCK_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


netblock = _load_netblock()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chapter: executes one chapter of the book")
    config.addinivalue_line("markers", "determinism: executes one chapter twice")
    netblock.install()  # no-op with SAEBOOK_ALLOW_NETWORK=1


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _chapter_tests_ran
    if "chapter" in report.keywords and (report.when == "call" or report.skipped):
        _chapter_tests_ran = True
    if report.when != "call":
        return
    props = dict(report.user_properties)
    for key, seen in _tallies.items():
        if key in props:
            seen.append(str(props[key]))
    if "chapter_seconds" in props:
        _times.append(
            {
                "chapter": props.get("chapter", report.nodeid),
                "seconds": props["chapter_seconds"],
                "outcome": report.outcome,
                "profile": props.get("chapter_profile", ""),
            }
        )


def tally_lines() -> list[str]:
    """The one-line summaries of the tallies recorded in this session."""
    lines = []
    if _tallies["bad_input"]:
        seen = _tallies["bad_input"]
        lines.append(
            f"bad inputs: tried {len(seen)}, rejected with a named error {seen.count('rejected')}"
        )
    if _tallies["determinism"]:
        seen = _tallies["determinism"]
        lines.append(
            f"determinism: {seen.count('identical')} chapters identical on a second run "
            f"(of {len(seen)} run twice)"
        )
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    lines = tally_lines()
    if lines:
        terminalreporter.write_sep("=", "robustness")
        for line in lines:
            terminalreporter.write_line(line)
    if _reference_rows:
        terminalreporter.write_sep("=", "agreement with independent references")
        for row in _reference_rows:
            verdict = "agrees" if row["ok"] else "DISAGREES"
            terminalreporter.write_line(
                f"{row['technique']} / {row['quantity']}: {row['measured']} "
                f"(tolerance {row['tolerance']}) vs {row['reference']}: {verdict}"
            )
    if not _chapter_tests_ran:
        return  # e.g. `pytest tests/test_repo_lint.py`: keep the last chapter timings
    profile = ",".join(sorted({t["profile"] for t in _times})) or "tiny"
    tr = terminalreporter
    tr.write_sep("=", f"chapter execution times (SAEBOOK_PROFILE={profile})")
    if _times:
        width = max(len(t["chapter"]) for t in _times)
        for t in _times:
            over = "  OVER BUDGET" if t["seconds"] > CHAPTER_BUDGET_S else ""
            tr.write_line(f"{t['chapter']:<{width}}  {t['seconds']:>8.1f} s  {t['outcome']}{over}")
        total = sum(t["seconds"] for t in _times)
        tr.write_line(
            f"{'total':<{width}}  {total:>8.1f} s  (budget {CHAPTER_BUDGET_S} s per chapter, "
            f"{BOOK_BUDGET_S} s in all; {os.cpu_count()} cpus)"
        )
    else:
        tr.write_line("no chapter was executed")
    from saebook.files import atomic_write_text

    atomic_write_text(
        TIMES_JSON,
        json.dumps(
            {
                "profile": profile,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "chapters": _times,
            },
            indent=2,
        )
        + "\n",
    )
    tr.write_line(f"written to {TIMES_JSON.relative_to(ROOT)}")


@pytest.fixture(scope="session")
def micro_world(tmp_path_factory):
    """(output folder, model card) of a micro tiny-world build: the real pipeline in seconds."""
    from saebook.tinyworld.build import MICRO, build

    out = tmp_path_factory.mktemp("micro_world")
    card = build(out, MICRO)
    return out, card


@pytest.fixture(scope="session")
def micro_model(micro_world):
    """(model, SAEs by role, width family) loaded from the micro build."""
    from saebook.tinyworld.shipped import load_shipped

    return load_shipped(micro_world[0])


def _fresh_executions() -> dict[str, dict]:
    """Execution metadata per chapter; skips when a notebook is missing or older than its .md."""
    from chapters import EXECUTION_KEY, chapters

    found, problems = {}, []
    for entry in chapters():
        path = ROOT / "_build" / "executed" / f"{entry}.ipynb"
        if not path.is_file():
            problems.append(f"{entry} (not executed)")
            continue
        meta = json.loads(path.read_text(encoding="utf-8"))["metadata"].get(EXECUTION_KEY, {})
        if meta.get("mtime", 0) < (ROOT / f"{entry}.md").stat().st_mtime:
            problems.append(f"{entry} (executed before its last edit)")
        found[entry] = meta
    if problems:
        pytest.skip(f"run tests/test_chapters.py in the same session first: {problems}")
    return found


@pytest.fixture(scope="session")
def site_html() -> Path:
    """The built site to test: ``$SAEBOOK_SITE_HTML`` (e.g. ``_build/html`` after ``make book``)
    or, by default, the site assembled with ``book/_ext/chapters.py`` from the notebooks that
    tests/test_chapters.py executed (into ``_build/assembled``), as the site workflow does."""
    given = os.environ.get("SAEBOOK_SITE_HTML")
    if given:
        site = Path(given).resolve()
        if not (site / "index.html").is_file():
            pytest.skip(f"SAEBOOK_SITE_HTML={given} holds no built site (no index.html)")
        return site
    from chapters import assemble

    executions = _fresh_executions()
    failed = [e for e, meta in executions.items() if not meta.get("succeeded")]
    assert not failed, f"chapters that failed to execute cannot be assembled: {failed}"
    return assemble(ROOT / "_build" / "executed", ROOT / "_build" / "assembled")


@pytest.fixture
def reference_row(request):
    """Record one row of the appendix table "How this book checks itself".

    Call it as ``reference_row(technique=..., reference=..., quantity=..., measured=...,
    tolerance=..., ok=...)``: the technique checked (e.g. "attribution patching"), the
    independent reference it was compared with (e.g. "exact hook-level ablation"), the
    quantity compared (e.g. "least-squares slope vs ablation"), the measured agreement as
    text, the tolerance the test asserts, and whether it held. The row is written to
    `_build/reference_checks.json` at once (replacing an older row of the same technique and
    quantity) with the test's node id and the time; the test still asserts ``ok`` itself.
    """
    from saebook.files import atomic_write_text

    def record(*, technique: str, reference: str, quantity: str, measured: str,
               tolerance: str, ok: bool, note: str = "") -> dict:
        row = {
            "technique": technique, "reference": reference, "quantity": quantity,
            "measured": str(measured), "tolerance": str(tolerance), "ok": bool(ok),
            "note": note, "test": request.node.nodeid,
            "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        rows = []
        if REFERENCES_JSON.is_file():
            rows = json.loads(REFERENCES_JSON.read_text(encoding="utf-8")).get("rows", [])
        key = (technique, quantity)
        rows = [r for r in rows if (r["technique"], r["quantity"]) != key] + [row]
        atomic_write_text(REFERENCES_JSON, json.dumps({"rows": rows}, indent=2) + "\n")
        _reference_rows.append(row)
        return row

    return record
