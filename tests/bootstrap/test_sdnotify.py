"""sd_notify over a real unix datagram socket, as systemd's NOTIFY_SOCKET is."""

from __future__ import annotations

import os
import socket

from edgeship.fleet.sdnotify import Notifier


def _listener(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    return sock


def test_ready_watchdog_stopping_reach_the_socket(tmp_path):
    now = [100.0]
    with _listener(tmp_path / "notify") as sock:
        n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "4000000",
                      "WATCHDOG_PID": str(os.getpid())}, clock=lambda: now[0])
        assert n.enabled and n.watchdog_interval == 2.0
        assert n.ready("serving cam-01")
        assert sock.recv(256) == b"READY=1\nSTATUS=serving cam-01"
        assert n.watchdog()
        assert sock.recv(256) == b"WATCHDOG=1"
        now[0] += 1.0
        assert not n.watchdog()  # half the timeout has not passed: no ping
        now[0] += 1.5
        assert n.watchdog() and sock.recv(256) == b"WATCHDOG=1"
        assert n.stopping() and sock.recv(256) == b"STOPPING=1"


def test_abstract_namespace_socket():
    name = f"edgeship-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(64) == b"READY=1"


def test_outside_systemd_everything_is_a_no_op(tmp_path):
    n = Notifier({})
    assert not n.enabled and not n.ready() and not n.watchdog() and not n.stopping()
    # a watchdog meant for another process (WATCHDOG_PID) is not ours to feed
    other = Notifier({"NOTIFY_SOCKET": str(tmp_path / "x"), "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None and not other.watchdog()
    # a socket that is gone: False, never an exception
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing")}).ready()
