"""`edgeship agent serve` under systemd's notify protocol, with its device info in the birth message.

systemd is not running here, so the test plays its part: a unix datagram socket as NOTIFY_SOCKET and
WATCHDOG_USEC set, as the unit's Type=notify and WatchdogSec do.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from edgeship import __version__
from edgeship.fleet.mqtt.transport import MqttTransport
from tests.support.mosquitto import mosquitto_broker  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def _recv_until(sock, wanted: bytes, limit: int = 200) -> list[bytes]:
    got = []
    for _ in range(limit):
        msg = sock.recv(512)
        got.append(msg)
        if wanted in msg.split(b"\n"):
            return got
    raise AssertionError(f"{wanted!r} not among {got}")


def test_serve_notifies_systemd_and_reports_versions_disk_memory(tmp_path, mosquitto_broker):
    broker = mosquitto_broker()
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"}
        proc = subprocess.Popen([sys.executable, "-m", "edgeship", "agent", "serve", "--broker", broker.url,
                                 "--device-id", "cam-07", "--root", str(tmp_path / "root"), "--heartbeat", "1"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert any(m.startswith(b"READY=1") for m in _recv_until(sock, b"READY=1"))
            _recv_until(sock, b"WATCHDOG=1")  # from the worker thread, every half WatchdogSec
            _recv_until(sock, b"WATCHDOG=1")
            transport = MqttTransport(None, broker=broker.url, store_dir=str(tmp_path / "manager"), timeout_s=30)
            try:
                state = None
                for _ in range(100):  # the retained birth may land just after the manager subscribes
                    state = transport.status(type("D", (), {"id": "cam-07"})())
                    if state.device:
                        break
                    time.sleep(0.1)
                assert state.online and state.device["agent_version"] == __version__
                assert state.device["runtimes"]["onnxruntime"] and state.device["free_bytes"] > 0
                assert state.device["mem_available_bytes"] > 0
            finally:
                transport.close()
            proc.terminate()
            _recv_until(sock, b"STOPPING=1")
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            proc.stdout.close()
            proc.stderr.close()
