"""CI's entry point (.ci/run) installs what make test needs beyond Python, then runs it.

Checked with ``--dry-run`` on a PATH that holds only the tools a test gives it, so nothing is
installed: a machine without Chromium gets Debian's ``chromium`` package, one with it gets
nothing, and either way the command that runs is README's ``make test``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE_TOOLS = ("bash", "dirname", "id", "env", "make", "git", "python3")


def _dry_run(tmp_path: Path, extra: tuple[str, ...] = ()) -> str:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for tool in BASE_TOOLS + extra:
        found = sys.executable if tool == "python3" else shutil.which(tool)  # no pyenv shim
        if found is None:
            pytest.skip(f"{tool} is not installed here")
        wrapper = fake_bin / tool  # a script, not a link: python3 must find its own prefix
        wrapper.write_text(f'#!/bin/sh\nexec "{os.path.realpath(found)}" "$@"\n')
        wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "SAEBOOK_CHROMIUM"}
    env["PATH"] = str(fake_bin)
    result = subprocess.run(
        [shutil.which("bash"), str(ROOT / ".ci" / "run"), "--dry-run"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_ci_installs_chromium_when_missing(tmp_path: Path) -> None:
    out = _dry_run(tmp_path)
    assert "apt-get install -y --no-install-recommends chromium" in out, out
    assert out.strip().endswith("would run: make test"), out


def test_ci_installs_nothing_when_chromium_is_there(tmp_path: Path) -> None:
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(b)), None)  # fmt: skip
    if browser is None:
        pytest.skip("no Chromium on this machine")
    out = _dry_run(tmp_path, (browser,))
    assert "apt-get" not in out and out.strip() == "would run: make test", out


def test_ci_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert script.rstrip().endswith("make test") and "make test    # run the tests" in readme
