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


MAX_FUNCTION_LINES = 80
#: A docstring line starting with this marker says why a function may be longer.
LONG_MARKER = "Length:"


def long_functions(root: Path = ROOT / "src") -> list[str]:
    """``path:line name (n lines)`` of each function in ``root`` over the limit whose docstring
    does not say why (a line starting with :data:`LONG_MARKER`)."""
    import ast

    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            n_lines = node.end_lineno - node.lineno + 1
            doc = ast.get_docstring(node) or ""
            explained = any(line.strip().startswith(LONG_MARKER) for line in doc.splitlines())
            if n_lines > MAX_FUNCTION_LINES and not explained:
                where = path.relative_to(root.parent)
                found.append(f"{where}:{node.lineno} {node.name} ({n_lines} lines)")
    return found


def test_long_functions_finds_an_unexplained_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "a.py").write_text(f'def short():\n    """Doc."""\n\n\ndef long():\n{body}\n')
    doc = f'"""Doc.\n\n    {LONG_MARKER} one pipeline, in order.\n    """'
    (tmp_path / "b.py").write_text(f"def long_ok():\n    {doc}\n{body}\n")
    found = long_functions(tmp_path)
    assert found == [f"{tmp_path.name}/a.py:5 long ({MAX_FUNCTION_LINES + 1} lines)"]


def test_no_function_over_80_lines_without_a_reason() -> None:
    """Functions in src/ stay under 80 lines (issue 19) unless their docstring has a line
    ``Length: <why>``."""
    found = long_functions()
    if found:
        pytest.fail(
            f"functions over {MAX_FUNCTION_LINES} lines without a '{LONG_MARKER} <why>' line in "
            "their docstring (split them by responsibility):\n  " + "\n  ".join(found),
            pytrace=False,
        )
