"""sae-dashboard's own virtualenv, built the same way on every machine.

sae-dashboard 0.8 pins transformer-lens 2.x, transformers < 4.57, numpy 1.26 and safetensors
0.4, so it cannot share the book's environment. :func:`sae_dashboard_python` builds a separate
virtualenv on first use and reuses it after. It lives outside the repository, under
``~/.cache/saebook/`` (``$SAEBOOK_CACHE`` overrides that folder), in a folder named by a hash of
the constraints, the Python and the torch version, so every clone and worktree on a machine
shares one build and a new pin builds a new one:

* every package it installs is pinned by ``benchmarks/sae-dashboard-constraints.txt`` (a
  ``pip freeze`` of a working build), so a fresh clone gets the versions that were tested;
* torch is pinned to the book's own torch version, so pip never swaps in another build (on
  CPU machines no CUDA download: the same wheel the book uses);
* a stamp records the constraints, the Python and the torch version it was built from; when
  any of them changes the virtualenv is rebuilt;
* after building (and before each reuse) one import of sae-dashboard, SAELens and
  TransformerLens must succeed inside it.

Any failure raises :class:`SideVenvError` with pip's or Python's own last lines, never a
silent fallback. Other code (the benchmarks, tests that compare with sae-dashboard) imports
this module; on the command line ``python benchmarks/sidevenv.py`` builds or checks the
virtualenv and prints its Python (``--rebuild`` forces a fresh build).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = [
    "CONSTRAINTS",
    "SAE_DASHBOARD",
    "cache_root",
    "default_venv",
    "SideVenvError",
    "run_in_venv",
    "sae_dashboard_python",
]

HERE = Path(__file__).resolve().parent
CONSTRAINTS = HERE / "sae-dashboard-constraints.txt"
SAE_DASHBOARD = "sae-dashboard==0.8.0"
#: packages that a dependency drags in, built for another torch; transformers then fails on
#: import, and sae-dashboard needs none of them
_UNWANTED = ("torchvision", "torchaudio")
_SMOKE = (
    "import sae_dashboard, sae_lens, transformer_lens, torch, numpy; "
    "from sae_dashboard.sae_vis_runner import SaeVisRunner; "
    "print(torch.__version__, numpy.__version__)"
)


class SideVenvError(RuntimeError):
    """sae-dashboard's virtualenv could not be built or does not work."""


def _torch_version() -> str:
    """The book's torch version without its local tag (``2.13.0+cpu`` -> ``2.13.0``)."""
    import torch

    return torch.__version__.split("+")[0]


def _stamp(constraints: Path) -> str:
    digest = hashlib.sha256(constraints.read_bytes()).hexdigest()[:16]
    py = ".".join(map(str, sys.version_info[:3]))
    return f"constraints {digest} python {py} torch {_torch_version()} {SAE_DASHBOARD}\n"


def cache_root() -> Path:
    """Where side virtualenvs live: ``$SAEBOOK_CACHE`` or ``~/.cache/saebook``."""
    return Path(os.environ.get("SAEBOOK_CACHE") or Path.home() / ".cache" / "saebook")


def default_venv(constraints: Path = CONSTRAINTS) -> Path:
    """The side virtualenv's folder for ``constraints`` (keyed by :func:`_stamp`'s hash)."""
    if not Path(constraints).is_file():
        raise SideVenvError(f"constraints file {constraints} is missing (it is part of the repo)")
    key = hashlib.sha256(_stamp(Path(constraints)).encode()).hexdigest()[:12]
    return cache_root() / f"venv-sae-dashboard-{key}"


def _tail(text: str, n: int = 12) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return "\n".join(lines[-n:])


def _run(cmd: list[str], what: str, timeout: float | None = None) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise SideVenvError(f"{what}: timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise SideVenvError(
            f"{what} failed (exit status {done.returncode}); its last lines:\n"
            f"{_tail(done.stderr) or _tail(done.stdout)}"
        )
    return done.stdout


def _build(venv: Path, constraints: Path, python: Path) -> None:
    if not constraints.is_file():
        raise SideVenvError(f"constraints file {constraints} is missing (it is part of the repo)")
    _run([sys.executable, "-m", "venv", "--clear", str(venv)], f"creating {venv}")
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    torch_pin = f"torch=={_torch_version()}"
    _run([*pip, "-c", str(constraints), torch_pin, SAE_DASHBOARD],
         f"pip install {SAE_DASHBOARD} with {constraints.name}")  # fmt: skip
    listed = _run([str(python), "-m", "pip", "list", "--format=freeze"], "pip list")
    present = [name for name in _UNWANTED if f"\n{name}==" in "\n" + listed.lower()]
    if present:
        _run([str(python), "-m", "pip", "uninstall", "-y", "-q", *present], "pip uninstall")


def sae_dashboard_python(
    venv: Path | None = None, constraints: Path = CONSTRAINTS, rebuild: bool = False
) -> Path:
    """The Python of a working sae-dashboard virtualenv (``venv``, by default
    :func:`default_venv`): reused when its stamp matches, otherwise built from scratch (a lock
    keeps two processes from building it at once). Raises :class:`SideVenvError` saying why
    when it cannot."""
    constraints = Path(constraints)
    venv = Path(venv) if venv is not None else default_venv(constraints)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure(venv, constraints, rebuild)


def _ensure(venv: Path, constraints: Path, rebuild: bool) -> Path:
    python = venv / "bin" / "python"
    stamp_file = venv / ".installed"
    stamp = _stamp(constraints) if constraints.is_file() else None
    fresh = rebuild or stamp is None or not python.exists()
    if not fresh and (not stamp_file.is_file() or stamp_file.read_text() != stamp):
        fresh = True
    if fresh:
        if stamp_file.exists():
            stamp_file.unlink()
        _build(venv, constraints, python)
    out = _run([str(python), "-c", _SMOKE], f"importing sae-dashboard in {venv}", timeout=300)
    torch_there = out.split()[0].split("+")[0] if out.split() else "?"
    if torch_there != _torch_version():
        raise SideVenvError(
            f"the side virtualenv must run torch {_torch_version()} (the book's), got "
            f"{torch_there}; rebuild it with `python benchmarks/sidevenv.py --rebuild`"
        )
    if fresh:
        stamp_file.write_text(stamp)
    return python


def run_in_venv(args: list[str], timeout: float | None = None, env: dict | None = None) -> str:
    """Run ``python ARGS`` in sae-dashboard's virtualenv (built if needed) and return its
    stdout; a non-zero exit (a crash, or the kernel killing it for memory) raises
    :class:`SideVenvError` with the exit status and the last lines of its stderr."""
    python = sae_dashboard_python()
    cmd = [str(python), *map(str, args)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise SideVenvError(f"sae-dashboard run timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        why = (
            f"killed by signal {-done.returncode} (SIGKILL is usually the kernel's out-of-memory "
            "killer: the stderr lines below are only the last output before it)"
            if done.returncode < 0
            else f"exit status {done.returncode}"
        )
        raise SideVenvError(f"sae-dashboard run failed, {why}:\n{_tail(done.stderr)}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description="Build or check sae-dashboard's virtualenv.")
    parser.add_argument("--rebuild", action="store_true", help="build it from scratch")
    args = parser.parse_args()
    venv = default_venv()
    if args.rebuild and venv.exists():
        shutil.rmtree(venv)
    try:
        print(sae_dashboard_python(rebuild=args.rebuild))
    except SideVenvError as exc:
        sys.exit(f"sidevenv: {exc}")


if __name__ == "__main__":
    main()
