"""Rehearse the book's chapters on a hub profile's real shapes, offline, with random weights.

    python scripts/rehearse.py [CHAPTER ...] [--full] [--memory-gb 12] [--json out.json]

Builds (or reuses) the fabricated Hugging Face cache of :mod:`saebook.rehearsal` (gpt2-small's
real config and widths, random weights), then executes each chapter cell by cell in a fresh
Jupyter kernel with ``SAEBOOK_PROFILE=gpt2``, ``HF_HUB_OFFLINE=1`` and the network block on.
By default token counts are reduced (``$SAEBOOK_SIZES``, see :data:`REDUCED`); ``--full``
keeps the profile's sizes (for a GPU machine, where the profile runs on ``cuda``).

Per cell it records wall time and the kernel's peak resident memory (``VmHWM``); a watcher
kills the kernel when its resident memory passes ``--memory-gb``. Random weights make content
checks fail by design: an ``AssertionError`` (the book's hidden checks and ``saebook.checks``
raise it) is *reported* and execution goes on; any other error stops the chapter, and is a
failure of the code unless a content check of the chapter failed before it (status
``after content``: what the check found missing, e.g. a split or a latent node, may be what
the later cell could not work on; the row names both cells). Chapters about the tiny profile
by nature (:data:`TINY_ONLY`) are not run: their row says ``skipped`` and why. Exit status 1
when any chapter failed. Prints one row per chapter: status,
seconds, peak memory, content checks reported, and the failing cell's error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "book" / "_ext"))

#: fields of :class:`saebook.profiles.Sizes` the default rehearsal reduces
REDUCED = {
    "n_seqs": 64,
    "batch_size": 8,
    "gen_tokens": 8,
    "train_tokens": 16_384,
    "jacobian_seq": 16,
}  # circuits/01: one backward pass per active latent of the text
REHEARSAL_ENV = "SAEBOOK_REHEARSAL"  # set in the kernels: "1" while rehearsing
#: status of a chapter stopped by an error after one of its content checks had failed: random
#: weights leave nothing to select (no split, no latent node), and the error may follow from
#: that; reported as such and not counted as a failure of the code
AFTER_CONTENT = "after content"
#: chapters that are about the tiny profile by nature (they call ``saebook.setup(profile="tiny")``
#: and never load the rehearsed profile), with the reason the table prints for skipping them
TINY_ONLY = {
    "book/appendix/tiny_world": "tiny-only: the tiny model's card, loads tiny on any profile",
}
SKIPPED = "skipped"


@dataclass
class CellRecord:
    index: int
    seconds: float
    peak_gb: float
    outcome: str  # "ok", "content check", "error"
    error: str = ""


@dataclass
class ChapterRecord:
    chapter: str
    status: str = "ok"  # "ok", "failed", "killed (memory)", AFTER_CONTENT
    seconds: float = 0.0
    peak_gb: float = 0.0
    content_checks: int = 0
    error: str = ""
    cells: list[CellRecord] = field(default_factory=list)


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def kernel_env(cache_root: Path, full: bool, sizes: dict | None = None) -> dict[str, str]:
    """The chapters' kernel environment: offline cache, gpt2 profile, network block."""
    from saebook.rehearsal import offline_env

    env = dict(os.environ)
    env.update(offline_env(cache_root))
    env["SAEBOOK_PROFILE"] = "gpt2"
    env[REHEARSAL_ENV] = "1"
    overrides = sizes if sizes is not None else (None if full else REDUCED)
    if overrides is None:
        env.pop("SAEBOOK_SIZES", None)
    else:
        from saebook.profiles import PROFILES

        PROFILES["gpt2"].sizes.replace(**overrides)  # a bad name fails here, not in a kernel
        env["SAEBOOK_SIZES"] = json.dumps(overrides)
    parts = [str(ROOT / "tests" / "netblock"), str(ROOT / "src")]
    env["PYTHONPATH"] = os.pathsep.join(
        parts + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env.pop("SAEBOOK_ALLOW_NETWORK", None)
    from saebook.display import RENDERER_ENV, SITE_RENDERER

    env[RENDERER_ENV] = SITE_RENDERER
    return env


def rehearse_chapter(
    entry: str, env: dict[str, str], memory_gb: float, cell_timeout: float, verbose: bool = True
) -> ChapterRecord:
    """Execute ``entry`` cell by cell; see the module docstring for what is recorded."""
    import jupytext
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    md = ROOT / f"{entry}.md"
    nb = jupytext.reads(md.read_text(encoding="utf-8"), fmt="md:myst")
    record = ChapterRecord(entry)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=cell_timeout,
        allow_errors=False,
        resources={"metadata": {"path": str(md.parent)}},
    )
    killed = threading.Event()
    start = time.perf_counter()
    with client.setup_kernel(env=env):
        pid = client.km.provisioner.process.pid
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(0.2):
                rss = _status_kb(pid, "VmRSS")
                if rss > memory_gb * 1024**2:
                    record.peak_gb = max(record.peak_gb, rss / 1024**2)
                    killed.set()
                    os.kill(pid, 9)
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                t0 = time.perf_counter()
                outcome, error = "ok", ""
                try:
                    client.execute_cell(cell, index)
                except CellExecutionError as err:
                    if err.ename == "AssertionError":
                        outcome, error = "content check", (err.evalue or "")[:200]
                        record.content_checks += 1
                    else:
                        outcome, error = "error", f"{err.ename}: {(err.evalue or '')[:300]}"
                except (CellTimeoutError, DeadKernelError) as err:
                    outcome, error = "error", f"{type(err).__name__}: {str(err)[:200]}"
                peak = _status_kb(pid, "VmHWM") / 1024**2
                record.peak_gb = max(record.peak_gb, peak)
                record.cells.append(
                    CellRecord(
                        index, round(time.perf_counter() - t0, 2), round(peak, 2), outcome, error
                    )
                )
                if verbose:
                    c = record.cells[-1]
                    print(
                        f"  cell {index:3d} {c.seconds:7.1f} s {c.peak_gb:6.2f} GB {outcome}"
                        f" {error[:100]}",
                        flush=True,
                    )
                if outcome == "error":
                    first_check = next(
                        (c.index for c in record.cells if c.outcome == "content check"), None
                    )
                    if killed.is_set():
                        record.status = "killed (memory)"
                    elif first_check is not None:  # may follow from it: reported, not a fail
                        record.status = AFTER_CONTENT
                        error = f"{error} (after the content check of cell {first_check})"
                    else:
                        record.status = "failed"
                    record.error = f"cell {index}: {error}"
                    break
        finally:
            stop.set()
    record.seconds = round(time.perf_counter() - start, 1)
    return record


def table(records: list[ChapterRecord]) -> str:
    """A plain-text table: one row per chapter."""
    lines = [f"{'chapter':40} {'status':16} {'seconds':>8} {'peak GB':>8} {'checks':>6}  error"]
    for r in records:
        lines.append(
            f"{r.chapter:40} {r.status:16} {r.seconds:8.1f} {r.peak_gb:8.2f} "
            f"{r.content_checks:6d}  {r.error[:80]}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from chapters import chapters

    from saebook.rehearsal import fabricate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="toc entries (default: every chapter)")
    parser.add_argument("--full", action="store_true", help="the profile's full sizes")
    parser.add_argument("--memory-gb", type=float, default=12.0)
    parser.add_argument("--cell-timeout", type=int, default=1800)
    parser.add_argument("--cache", default=str(ROOT / ".cache" / "rehearsal"))
    parser.add_argument("--json", default=str(ROOT / "_build" / "rehearsal.json"))
    parser.add_argument(
        "--sizes",
        type=json.loads,
        default=None,
        help="JSON sizes for $SAEBOOK_SIZES, e.g. '{\"n_seqs\": 8}'",
    )
    parser.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="stop starting chapters (and cap cell time) after this many seconds",
    )
    args = parser.parse_args(argv)
    known = chapters(ROOT)
    wanted = args.chapters or known
    unknown = [c for c in wanted if c not in known]
    if unknown:
        parser.error(f"chapters must be toc entries such as {known[0]!r}, got {unknown}")
    t0 = time.time()
    env = {}
    if any(entry not in TINY_ONLY for entry in wanted):  # nothing to fabricate for skips alone
        root = fabricate(args.cache)
        print(f"fabricated cache {root} ready in {time.time() - t0:.1f} s", flush=True)
        env = kernel_env(root, args.full, args.sizes)
    records = []
    for entry in wanted:  # one chapter at a time
        if entry in TINY_ONLY:
            records.append(ChapterRecord(entry, status=SKIPPED, error=TINY_ONLY[entry]))
            print(table([records[-1]]).splitlines()[1], flush=True)
            continue
        timeout = args.cell_timeout
        if args.deadline_s is not None:
            left = args.deadline_s - (time.time() - t0)
            if left < 10:
                records.append(ChapterRecord(entry, status="not run (deadline)"))
                continue
            timeout = min(timeout, left)
        timeout = int(timeout)  # nbclient wants an int
        record = rehearse_chapter(entry, env, args.memory_gb, timeout)
        records.append(record)
        print(table([record]).splitlines()[1], flush=True)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([asdict(r) for r in records], indent=1))
    print()
    print(table(records))
    passed = ("ok", AFTER_CONTENT, "not run (deadline)", SKIPPED)
    return 1 if any(r.status not in passed for r in records) else 0


if __name__ == "__main__":
    raise SystemExit(main())
