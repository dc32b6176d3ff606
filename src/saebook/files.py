"""Atomic writes: whatever saebook saves appears whole or not at all.

A reader who interrupts a build (Ctrl-C, a killed Colab runtime) keeps the previous files.
Every file saebook writes goes through :func:`atomic_write_dir` (a folder: trained SAEs, the
tiny world's model and tokenizer) or :func:`atomic_write_text` (a JSON card): the content is
written to a temporary sibling and renamed over the target in one step.

Temporaries are named ``.<target>.tmp-<pid>-<random>`` (and ``.<target>.old-<pid>-...`` for
the folder being replaced). A process killed mid-write (SIGKILL, a lost runtime) cannot clean
up, so the next write to the same target removes the temporaries of processes that no longer
exist (:func:`remove_stale_temporaries`), and puts back a replaced folder if the kill came
between its two renames.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "atomic_write_dir",
    "atomic_write_text",
    "remove_stale_temporaries",
    "remove_stale_text_temporaries",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _prefix(target: Path, kind: str) -> str:
    return f".{target.name}.{kind}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporaries that killed writers left beside ``target``; return them.

    Only temporaries of processes that no longer run are touched. If ``target`` itself is
    missing and a dead writer had moved it aside (``.old-``), it is put back first.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(tmp|old)-(\d+)-")
    stale: list[tuple[str, Path]] = []
    for path in target.parent.iterdir():
        match = pattern.match(path.name)
        if match and int(match.group(2)) != os.getpid() and not _alive(int(match.group(2))):
            stale.append((match.group(1), path))
    old = [p for kind, p in stale if kind == "old"]
    if old and not os.path.lexists(target):
        os.rename(old[0], target)  # the kill came between the two renames: undo the first
    removed = []
    for _, path in stale:
        if os.path.lexists(path):
            _remove(path)
            removed.append(path)
    return removed


def remove_stale_text_temporaries(folder: Path, names: Collection[str]) -> list[Path]:
    """Remove the temporaries that killed :func:`atomic_write_text` writers of any of the
    files ``names`` left in ``folder``; return them. One listing of ``folder`` for all the
    names: a writer of many files calls this once and then ``atomic_write_text(...,
    clean=False)`` per file (the per-file sweep lists the folder each time)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = set(names)
    pattern = re.compile(r"^\.(.+)\.tmp-(\d+)-")
    removed = []
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if not match or match.group(1) not in names or int(match.group(2)) == os.getpid():
            continue
        if not _alive(int(match.group(2))) and os.path.lexists(path):
            _remove(path)
            removed.append(path)
    return removed


@contextmanager
def atomic_write_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``; on success it replaces ``target``.

    If the body raises, the temporary directory is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(target, "tmp"), dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result should not be
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.lexists(target):
        old = Path(tempfile.mkdtemp(prefix=_prefix(target, "old"), dir=target.parent))
        os.rmdir(old)
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        _remove(old)


def atomic_write_text(path: Path, text: str, *, clean: bool = True) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename.

    ``clean=False`` skips the sweep of killed writers' temporaries (for a caller that swept
    the folder once with :func:`remove_stale_text_temporaries`)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean:
        remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path, "tmp"), dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result should not be
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
