"""Session-wide set-up and reporting.

- The network is blocked for the whole session (tests/netblock/sitecustomize.py, also put on
  the PYTHONPATH of every chapter kernel by tests/chapter_runner.py); set
  `SAEBOOK_ALLOW_NETWORK=1` to lift it.
- Chapters are executed by nbmake through the plugin tests/chapter_runner.py (loaded by the
  root conftest.py): it orders the session (unit tests, chapters, then the tests below that
  read the executed chapters), keeps executed notebooks and prints the timing table.
- Tests that compare a technique with an independent reference record one row each with the
  `reference_row` fixture; rows go to `_build/reference_checks.json` as they are recorded
  (keyed by technique and quantity, with the test's node id and the time), feed the appendix
  page "How this book checks itself", and are printed at the end of the session.
- Tests may record one-line tallies the same way: `bad_input` ("tried"/"rejected", from
  tests/test_bad_inputs.py) and `determinism` ("identical"/"different", from
  tests/test_determinism.py); a line per tally is printed at the end (also with -q).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))  # chapters.py (also done by ../conftest.py)
REFERENCES_JSON = ROOT / "_build" / "reference_checks.json"
NETBLOCK_FILE = Path(__file__).resolve().parent / "netblock" / "sitecustomize.py"

_tallies: dict[str, list[str]] = {"bad_input": [], "determinism": []}
_reference_rows: list[dict] = []


def _load_netblock():
    spec = importlib.util.spec_from_file_location("saebook_netblock", NETBLOCK_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


netblock = _load_netblock()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "determinism: executes one chapter twice")
    netblock.install()  # no-op with SAEBOOK_ALLOW_NETWORK=1
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:  # pytest-xdist: share the cores instead of oversubscribing them
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    props = dict(report.user_properties)
    for key, seen in _tallies.items():
        if key in props:
            seen.append(str(props[key]))
    _reference_rows.extend(v for k, v in report.user_properties if k == "reference_row")


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


def _fresh_executions() -> list[str]:
    """The chapters the site is assembled from (``SAEBOOK_SITE_CHAPTERS``, default all); skips
    when one was not executed successfully after its last edit."""
    from chapter_runner import fresh_execution
    from chapters import site_chapters

    entries = site_chapters()
    stale = [entry for entry in entries if fresh_execution(entry) is None]
    if stale:
        pytest.skip(
            f"execute these chapters in the same session first (pytest --nbmake), or they "
            f"failed: {stale}"
        )
    return entries


@pytest.fixture(scope="session")
def site_html(request) -> Path:
    """The built site to test: ``$SAEBOOK_SITE_HTML`` (e.g. ``_build/html`` after ``make book``)
    or, by default, the site assembled with ``book/_ext/chapters.py`` from the notebooks that
    nbmake executed in this session (into ``_build/assembled``), as the site workflow does.
    ``SAEBOOK_SITE_CHAPTERS`` (comma-separated chapters) assembles only those, for a quick
    local check; the other chapters' pages are then built without outputs. Under pytest-xdist
    the first worker that needs the site builds it and the others reuse it."""
    given = os.environ.get("SAEBOOK_SITE_HTML")
    if given:
        site = Path(given).resolve()
        if not (site / "index.html").is_file():
            pytest.skip(f"SAEBOOK_SITE_HTML={given} holds no built site (no index.html)")
        return site
    from chapter_runner import assemble_once

    entries = _fresh_executions()
    # under pytest-xdist (make test) the workers share one build per run
    run = getattr(request.config, "workerinput", {}).get("testrunuid")
    return assemble_once(entries, run)


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
        REFERENCES_JSON.parent.mkdir(parents=True, exist_ok=True)
        # read-modify-write under a lock: `make test` runs the unit tests in parallel workers
        with open(REFERENCES_JSON.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            rows = []
            if REFERENCES_JSON.is_file():
                rows = json.loads(REFERENCES_JSON.read_text(encoding="utf-8")).get("rows", [])
            key = (technique, quantity)
            rows = [r for r in rows if (r["technique"], r["quantity"]) != key] + [row]
            atomic_write_text(REFERENCES_JSON, json.dumps({"rows": rows}, indent=2) + "\n")
        # printed at the end by the process that reports (the controller under pytest-xdist)
        request.node.user_properties.append(("reference_row", row))
        return row

    return record
