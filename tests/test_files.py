"""Atomic writes: an interrupted write leaves the old content intact."""

from __future__ import annotations

import pytest

from saebook.files import atomic_write_dir, atomic_write_text


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
    with pytest.raises(TypeError):
        atomic_write_text(path, 123)  # not a str: the write fails half-way
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]
