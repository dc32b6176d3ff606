"""scripts/rehearse.py's verdicts, on two small chapters executed in a real kernel."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import rehearse  # noqa: E402

HEADER = "---\nkernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n"


def _chapter(folder: Path, name: str, cells: list[str]) -> str:
    body = "".join(f"\n```{{code-cell}} ipython3\n{c}\n```\n" for c in cells)
    (folder / f"{name}.md").write_text(HEADER + body, encoding="utf-8")
    return str(folder / name)  # an absolute entry: ROOT / entry is the entry itself


def test_errors_fail_unless_a_content_check_failed_before(tmp_path):
    env = {**rehearse.os.environ, "PYTHONPATH": str(ROOT / "src")}
    code_bug = _chapter(tmp_path, "a", ["x = 1", "raise ValueError('a bug')", "y = 2"])
    after = _chapter(tmp_path, "b", ["assert 1 == 2, 'random weights'", "[][0]", "z = 3"])
    a = rehearse.rehearse_chapter(code_bug, env, memory_gb=8, cell_timeout=60, verbose=False)
    assert a.status == "failed" and a.error.startswith("cell 1: ValueError: a bug")
    assert [c.outcome for c in a.cells] == ["ok", "error"]  # stopped there
    b = rehearse.rehearse_chapter(after, env, memory_gb=8, cell_timeout=60, verbose=False)
    assert b.status == rehearse.AFTER_CONTENT and b.content_checks == 1
    assert "IndexError" in b.error and "after the content check of cell 0" in b.error
    assert [c.outcome for c in b.cells] == ["content check", "error"]


def test_tiny_only_chapters_are_exactly_those_pinned_to_tiny():
    """The skip list names every chapter that loads the tiny profile whatever is rehearsed, and
    nothing else; each reason fits the table's error column."""
    from chapters import chapters

    pinned = {
        entry
        for entry in chapters(ROOT)
        if 'setup(profile="tiny")' in (ROOT / f"{entry}.md").read_text(encoding="utf-8")
    }
    assert pinned == set(rehearse.TINY_ONLY)
    assert all(
        reason.startswith("tiny-only") and len(reason) <= 80
        for reason in rehearse.TINY_ONLY.values()
    )


def test_tiny_only_chapters_are_reported_as_skipped_with_their_reason(tmp_path, capsys):
    entry = next(iter(rehearse.TINY_ONLY))
    out = tmp_path / "r.json"
    assert rehearse.main([entry, "--json", str(out)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(entry))
    assert rehearse.SKIPPED in row and rehearse.TINY_ONLY[entry] in row
