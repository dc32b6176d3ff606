"""Block network connections in any Python process that puts this folder on PYTHONPATH.

Python imports ``sitecustomize`` at start-up, so a chapter's Jupyter kernel started with
``PYTHONPATH=tests/netblock`` (see tests/chapter_runner.py) cannot reach the internet: every
``socket.connect``/``connect_ex`` and ``socket.create_connection`` to a host that is not the
machine itself raises :class:`NetworkBlocked` at once, without a DNS lookup. Loopback
addresses and Unix sockets stay allowed (a kernel talks to its client over localhost ZMQ,
which does not use Python sockets at all, but local services may). ``NetworkBlocked`` is an
``OSError``, so code that already handles an unreachable host (``saebook.profiles`` checking
the hub, ``saebook.dashboards`` checking Neuronpedia) takes its offline path.

Set ``SAEBOOK_ALLOW_NETWORK=1`` to switch the block off. The test process imports this file
too (tests/conftest.py) and calls :func:`install`.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import ipaddress
import os
import socket
import sys

ALLOW_ENV = "SAEBOOK_ALLOW_NETWORK"
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


class NetworkBlocked(OSError):
    """A connection to a remote host was attempted while the network is blocked."""


def is_local(address: object) -> bool:
    """True for a Unix-socket path or a (host, port, ...) tuple naming this machine."""
    if isinstance(address, (str, bytes)):
        return True  # AF_UNIX path
    if not isinstance(address, tuple) or not address:
        return False
    host = address[0]
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name: never resolved while blocked


def _refuse(address: object) -> NetworkBlocked:
    return NetworkBlocked(
        f"network access is blocked in saebook's test run (connection to {address!r}); "
        f"set {ALLOW_ENV}=1 to allow it"
    )


def install() -> bool:
    """Patch ``socket`` to refuse remote connections; False when the block is switched off."""
    if os.environ.get(ALLOW_ENV) == "1":
        return False
    if getattr(socket.socket.connect, "_saebook_blocked", False):
        return True
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_create = socket.create_connection

    def connect(self, address):
        if self.family != getattr(socket, "AF_UNIX", None) and not is_local(address):
            raise _refuse(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family != getattr(socket, "AF_UNIX", None) and not is_local(address):
            raise _refuse(address)
        return real_connect_ex(self, address)

    def create_connection(address, *args, **kwargs):
        if not is_local(address):
            raise _refuse(address)
        return real_create(address, *args, **kwargs)

    for fn in (connect, connect_ex, create_connection):
        fn._saebook_blocked = True
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.create_connection = create_connection
    return True


def _run_next_sitecustomize() -> None:
    """Import the ``sitecustomize`` this file shadows, if the environment has one."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.origin is None or os.path.samefile(spec.origin, __file__):
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


if __name__ == "sitecustomize":  # imported by Python at start-up, not by conftest
    install()
    _run_next_sitecustomize()
