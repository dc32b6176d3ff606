"""Atomic writes: an interrupted write leaves the old content intact."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from saebook.files import (
    atomic_write_dir,
    atomic_write_text,
    remove_stale_temporaries,
    remove_stale_text_temporaries,
)


def test_atomic_write_dir_replaces_on_success(tmp_path):
    target = tmp_path / "sae"
    with atomic_write_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with atomic_write_dir(target) as tmp:
        (tmp / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]  # no temporaries left


def test_atomic_write_dir_keeps_old_on_interrupt(tmp_path):
    target = tmp_path / "sae"
    with atomic_write_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write_dir(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise KeyboardInterrupt
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]


def test_atomic_write_text_keeps_old_on_error(tmp_path):
    path = tmp_path / "card.json"
    atomic_write_text(path, "old")
    with pytest.raises(TypeError, match="text must be a str, got int"):
        atomic_write_text(path, 123)  # refused before anything is written
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]


# --- interruptions of the real writers ----------------------------------------------------------


def _listing(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_atomic_write_text_interrupted_half_way_keeps_old(tmp_path, monkeypatch):
    """The writer dies after writing half of the new text: the old file is intact."""
    import saebook.files as files

    path = tmp_path / "card.json"
    atomic_write_text(path, '{"old": 1}')
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            raise KeyboardInterrupt("interrupted half-way")

    monkeypatch.setattr(
        files.os, "fdopen", lambda fd, *a, **k: HalfWriter(real_fdopen(fd, *a, **k))
    )
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, '{"new": 22222222}')
    assert path.read_text() == '{"old": 1}'
    assert _listing(tmp_path) == ["card.json"]


def test_save_model_interrupted_keeps_the_old_model(micro_world, tmp_path, monkeypatch):
    """safetensors fails after writing part of the weights: the saved model still loads."""
    import torch

    from saebook.tinyworld import model as model_module

    world, _ = micro_world
    tokenizer = world / "tokenizer"
    model = model_module.load_model(world / "model", tokenizer)
    target = tmp_path / "model"
    model_module.save_model(model, target)
    before = {p: (target / p).read_bytes() for p in _listing(target)}
    real_save = model_module.save_file

    def half_save(state, filename):
        real_save(state, filename)
        with open(filename, "r+b") as f:
            f.truncate(f.seek(0, 2) // 2)
        raise OSError("disk full half-way")

    with torch.no_grad():
        model.W_E.add_(1.0)  # the new model differs from the saved one
    monkeypatch.setattr(model_module, "save_file", half_save)
    with pytest.raises(OSError, match="half-way"):
        model_module.save_model(model, target)
    assert {p: (target / p).read_bytes() for p in _listing(target)} == before
    assert _listing(tmp_path) == ["model", *(f"model/{p}" for p in before)]
    reloaded = model_module.load_model(target, tokenizer)
    assert not torch.equal(reloaded.W_E, model.W_E)  # the old weights, not the new ones


def test_train_tokenizer_interrupted_keeps_the_old_tokenizer(tmp_path, monkeypatch):
    from saebook.tinyworld import tokenizer as tok_module

    target = tmp_path / "tokenizer"
    texts = ["the cat sat on the mat"] * 20
    tok_module.train_tokenizer(texts, 270, target)
    before = {p: (target / p).read_bytes() for p in _listing(target)}

    def crash(out_dir):
        raise KeyboardInterrupt("interrupted after save_pretrained")

    monkeypatch.setattr(tok_module, "_name_portable_class", crash)
    with pytest.raises(KeyboardInterrupt):
        tok_module.train_tokenizer(["a dog ran to the park"] * 20, 280, target)
    assert {p: (target / p).read_bytes() for p in _listing(target)} == before
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer"]


KILLED_WRITER = """
import sys, time
from pathlib import Path
from saebook.files import atomic_write_dir
with atomic_write_dir(Path(sys.argv[1])) as tmp:
    (tmp / "a.txt").write_text("half of the new")
    print("writing", flush=True)
    time.sleep(120)
"""


def test_killed_writer_leaves_the_old_folder_and_the_next_write_sweeps(tmp_path):
    """SIGKILL mid-write: the old folder is intact; the next write removes the debris."""
    target = tmp_path / "sae"
    with atomic_write_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.kill()
        child.wait(10)
    assert (target / "a.txt").read_text() == "old"
    debris = [p.name for p in tmp_path.iterdir() if p.name != "sae"]
    assert len(debris) == 1 and debris[0].startswith(f".sae.tmp-{child.pid}-")
    with atomic_write_dir(target) as tmp:
        (tmp / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]


def test_stale_temporaries_of_live_processes_are_kept(tmp_path):
    """Another process still writing the same target keeps its temporary."""
    target = tmp_path / "card.json"
    live = tmp_path / f".card.json.tmp-{os.getppid()}-abc"
    live.write_text("someone else's half")
    dead_pid = _dead_pid()
    dead = tmp_path / f".card.json.tmp-{dead_pid}-xyz"
    dead.write_text("a killed writer's half")
    assert remove_stale_temporaries(target) == [dead]
    assert live.exists() and not dead.exists()


def test_a_kill_between_the_two_renames_is_undone(tmp_path):
    """The target was moved aside and the writer died: the next write restores it first."""
    old = tmp_path / f".sae.old-{_dead_pid()}-q1"
    old.mkdir()
    (old / "a.txt").write_text("old")
    assert remove_stale_temporaries(tmp_path / "sae") == []
    assert (tmp_path / "sae" / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]


def test_one_sweep_for_many_text_files(tmp_path):
    """remove_stale_text_temporaries: one listing removes the dead writers' temporaries of the
    named files only; atomic_write_text(clean=False) leaves the folder's debris alone."""
    dead_pid = _dead_pid()
    dead = [tmp_path / f".page_{i}.html.tmp-{dead_pid}-x{i}" for i in range(3)]
    other = tmp_path / f".notes.txt.tmp-{dead_pid}-y"
    live = tmp_path / f".page_0.html.tmp-{os.getppid()}-z"
    for path in [*dead, other, live]:
        path.write_text("half")
    atomic_write_text(tmp_path / "page_0.html", "new", clean=False)
    assert all(p.exists() for p in [*dead, other, live])
    names = {f"page_{i}.html" for i in range(3)}
    assert sorted(remove_stale_text_temporaries(tmp_path, names)) == sorted(dead)
    assert other.exists() and live.exists() and not any(p.exists() for p in dead)
    assert (tmp_path / "page_0.html").read_text() == "new"
    assert remove_stale_text_temporaries(tmp_path / "missing", names) == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- audit: every write in the package goes through saebook.files -------------------------------

SRC = __import__("pathlib").Path(__file__).resolve().parents[1] / "src" / "saebook"
WRITERS = {
    "write_text", "write_bytes", "save_file", "save", "save_model", "save_inference_model",
    "save_pretrained", "save_to_disk", "to_json", "to_csv", "to_parquet", "to_pickle", "dump",
    "savefig", "write_html", "write_image", "writestr", "copyfile", "copytree",
}  # fmt: skip
SAFE_CONTEXTS = {"atomic_write_dir", "TemporaryDirectory"}
#: saebook's own writers, called by bare name (``sae.save_model(...)`` is SAELens' and raw).
ATOMIC_FUNCTIONS = {"save_model"}  # saebook.tinyworld.model.save_model: atomic_write_dir
#: "module.py:function" -> why its writes are atomic anyway.
ALLOWED = {
    "files.py": "the atomic writers themselves",
    "rehearsal.py": (
        "the fabricated hub cache is committed by its DONE file, written last; fabricate() "
        "removes and rebuilds a cache folder that lacks it"
    ),
    "tinyworld/tokenizer.py:_name_portable_class": (
        "edits a file inside train_tokenizer's atomic_write_dir temporary folder only"
    ),
}


def raw_writes(source: str, module: str) -> list[str]:
    """``module:line function`` of every file write in ``source`` that is neither inside a
    ``with atomic_write_dir(...)``/``TemporaryDirectory()`` block nor allowed above."""
    import ast

    found = []

    def name_of(call: ast.Call) -> str:
        f = call.func
        return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""

    def is_write(call: ast.Call) -> bool:
        name = name_of(call)
        if name == "open":
            modes = [a for a in call.args[1:2]] + [
                k.value for k in call.keywords if k.arg == "mode"
            ]
            return any(
                isinstance(m, ast.Constant) and set(str(m.value)) & set("wax+") for m in modes
            )
        return name in WRITERS

    def visit(node: ast.AST, function: str, safe: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if isinstance(node, (ast.With, ast.AsyncWith)) and any(
            isinstance(item.context_expr, ast.Call) and name_of(item.context_expr) in SAFE_CONTEXTS
            for item in node.items
        ):
            safe = True
        ours = isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        if ours and node.func.id in ATOMIC_FUNCTIONS:
            pass
        elif isinstance(node, ast.Call) and is_write(node) and not safe:
            if module not in ALLOWED and f"{module}:{function}" not in ALLOWED:
                found.append(f"{module}:{node.lineno} {function}: {name_of(node)}(...)")
        for child in ast.iter_child_nodes(node):
            visit(child, function, safe)

    visit(ast.parse(source), "<module>", False)
    return found


def test_every_write_in_the_package_is_atomic():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = path.relative_to(SRC).as_posix()
        found += raw_writes(path.read_text(encoding="utf-8"), module)
    assert not found, "writes that bypass saebook.files (make them atomic):\n" + "\n".join(found)


def test_the_write_audit_can_fail():
    source = """
import json, torch
from pathlib import Path
from saebook.files import atomic_write_dir

def bad(path, state, sae):
    Path(path).write_text("x")
    sae.save_model(path)
    torch.save(state, path)
    with open(path, "w") as f:
        json.dump({}, f)

def fine(path, state):
    with open(path) as f:
        f.read()
    with atomic_write_dir(path) as tmp:
        torch.save(state, tmp / "w.pt")
"""
    found = raw_writes(source, "demo.py")
    assert [f.split(" ", 1)[1] for f in found] == [
        "bad: write_text(...)", "bad: save_model(...)", "bad: save(...)", "bad: open(...)",
        "bad: dump(...)",
    ]  # fmt: skip
