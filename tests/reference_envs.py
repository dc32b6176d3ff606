"""Reference libraries for the tests, installed on first use into a git-ignored cache.

SAEBench (``sae-bench``) and delphi (``eai-delphi``) pin packages that clash with the book's
(numpy < 2, vllm, faiss, ...), but the parts the tests call (SAEBench's absorption calculator,
delphi's classification metrics) import only packages the book already has. So each reference
is installed *without* its dependencies, at an exact version, into its own folder under
``tests/.reference/`` (keyed by the pins, so a new pin installs anew), and put on ``sys.path``
of the test process. Installing takes seconds with a warm pip cache; a lock keeps two test
processes from installing the same folder at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".reference"  # git-ignored

# the reference packages and the extra pure-Python packages their imported modules need
SAE_BENCH = ("sae-bench==0.6.0",)
DELPHI = ("eai-delphi==0.1.3", "orjson==3.13.0")


def reference_site(pins: tuple[str, ...]) -> Path:
    """The folder holding ``pins`` (each ``name==version``), installed there on first use."""
    bad = [p for p in pins if "==" not in p]
    if bad:
        raise ValueError(f"pins must be exact (name==version), got {bad}")
    key = hashlib.sha256("\n".join(sorted(pins)).encode()).hexdigest()[:12]
    site = CACHE / f"{pins[0].replace('==', '-')}-{key}"
    stamp = site / ".installed"
    if stamp.is_file():
        return site
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{site.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file():
            return site
        partial = site.with_name(site.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--no-compile", "--target", str(partial), *pins],
            check=True, timeout=300,
        )  # fmt: skip
        shutil.rmtree(site, ignore_errors=True)
        partial.rename(site)
        stamp.write_text("\n".join(pins) + "\n")
    return site


def use_reference(pins: tuple[str, ...]) -> Path:
    """Install ``pins`` if needed and put their folder first on ``sys.path``."""
    site = reference_site(pins)
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    return site
