"""Static checks of the repository: GitHub workflows (actionlint) and Python code (ruff)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin/ (not resolved: that would leave the venv)


def _tool(name: str) -> str:
    """The tool from the interpreter's bin dir, else from PATH; fail if it is not installed."""
    local = BIN / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (it is pinned in requirements.txt)")
    return found


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_actionlint() -> None:
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
    assert workflows, "no workflows under .github/workflows"
    result = _run([_tool("actionlint"), "-no-color", *map(str, workflows)])
    if result.returncode != 0:
        pytest.fail(f"actionlint failed:\n{result.stdout}{result.stderr}", pytrace=False)


def test_ruff() -> None:
    targets = [
        d
        for d in ("src", "tests", "benchmarks", "book/_ext", ".github/scripts")
        if (ROOT / d).is_dir()
    ]
    result = _run([_tool("ruff"), "check", "--no-cache", *targets])
    if result.returncode != 0:
        cmd = f"ruff check {' '.join(targets)}"
        pytest.fail(f"{cmd} failed:\n{result.stdout}{result.stderr}", pytrace=False)
