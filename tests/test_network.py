"""The network block (tests/netblock/sitecustomize.py) in this process and in a chapter kernel.

The whole test session and every chapter kernel run with remote connections refused, so a
chapter that silently downloads something fails here instead of on a reader's offline
machine. These tests prove the block is in place where chapters run, that it leaves
loopback alone, and that hub profiles then fail fast with one clear sentence.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import nbformat
import pytest
from chapter_runner import network_allowed, run_notebook

from conftest import netblock

pytestmark = pytest.mark.skipif(
    network_allowed(), reason="SAEBOOK_ALLOW_NETWORK=1 switches the network block off"
)


@pytest.mark.parametrize(
    ("address", "local"),
    [
        (("127.0.0.1", 80), True),
        (("127.8.9.1", 80), True),
        (("::1", 80, 0, 0), True),
        (("localhost", 8888), True),
        ("/tmp/some.sock", True),
        (("huggingface.co", 443), False),
        (("93.184.216.34", 80), False),
        (("10.0.0.1", 22), False),
        (("2606:4700::1111", 443, 0, 0), False),
        ((), False),
    ],
)
def test_is_local(address, local):
    assert netblock.is_local(address) is local


def test_remote_connections_fail_at_once_in_this_process():
    assert getattr(socket.create_connection, "_saebook_blocked", False)
    for connect in (
        lambda: socket.create_connection(("huggingface.co", 443), timeout=30),
        lambda: socket.socket().connect(("93.184.216.34", 80)),
        lambda: socket.socket(socket.AF_INET6).connect_ex(("2606:4700::1111", 443, 0, 0)),
    ):
        start = time.perf_counter()
        with pytest.raises(netblock.NetworkBlocked, match="SAEBOOK_ALLOW_NETWORK=1"):
            connect()
        assert time.perf_counter() - start < 0.5  # refused, not timed out


def test_loopback_connections_still_work():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted = threading.Thread(target=lambda: server.accept()[0].close())
    accepted.start()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        accepted.join(5)
        server.close()


def test_install_is_idempotent_and_can_be_switched_off(monkeypatch):
    assert netblock.install() is True  # already installed: nothing patched twice
    assert not getattr(netblock.install, "_saebook_blocked", False)
    monkeypatch.setenv("SAEBOOK_ALLOW_NETWORK", "1")
    assert netblock.install() is False


PROBE = r"""
import json, socket, time, urllib.request
report = {"patched": getattr(socket.create_connection, "_saebook_blocked", False)}
for name, attempt in [
    ("create_connection", lambda: socket.create_connection(("huggingface.co", 443), timeout=20)),
    ("urlopen", lambda: urllib.request.urlopen("https://pypi.org/simple/", timeout=20)),
]:
    start = time.perf_counter()
    try:
        attempt()
        report[name] = "connected"
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        report[name] = f"{type(reason).__name__}: {reason}"
    report[name + "_s"] = time.perf_counter() - start
from saebook import profiles
for name in ("gpt2", "gemma"):
    start = time.perf_counter()
    try:
        profiles.load(name)
        report[name] = "loaded"
    except Exception as exc:
        report[name] = f"{type(exc).__name__}: {exc}"
    report[name + "_s"] = time.perf_counter() - start
print(json.dumps(report))
"""


def _probe_kernel(tmp_path, monkeypatch) -> dict:
    """Run PROBE in a kernel started as nbmake starts a chapter's (tests/chapter_runner.py)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PROBE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    path = tmp_path / "probe.ipynb"
    nbformat.write(nb, path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    result = run_notebook(path, extra_env={"SAEBOOK_PROFILE": "tiny"}, timeout=120)
    assert result.error is None, result.error.trace
    nb = result.nb
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.output_type == "stream")
    return json.loads(text.strip().splitlines()[-1])


def test_a_chapter_kernel_cannot_open_a_connection(tmp_path, monkeypatch):
    """A kernel started the way chapters are started cannot reach the internet."""
    report = _probe_kernel(tmp_path, monkeypatch)
    assert report["patched"], "the kernel did not import tests/netblock/sitecustomize.py"
    for name in ("create_connection", "urlopen"):
        assert report[name].startswith("NetworkBlocked"), report
        assert report[name + "_s"] < 1.0, report
    for name in ("gpt2", "gemma"):
        assert report[name].startswith("HubUnavailableError"), report
        assert report[name + "_s"] < 5.0, report
        assert "SAEBOOK_PROFILE=tiny" in report[name]
        assert report[name].count(". ") == 0, f"more than one sentence: {report[name]}"
