"""A real mosquitto on a free 127.0.0.1 port, configured per test: optional password file, ACL
and TLS; persistence on in a temp dir; restartable on the same port (the broker-restart fault).

Use the `mosquitto_broker` fixture (a factory): `broker = mosquitto_broker(acl=..., passwd=...)`.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.require import require_binary, require_file


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Broker:
    binary: str
    workdir: Path
    port: int = field(default_factory=free_port)
    passwd: Path | None = None
    acl: Path | None = None
    tls: tuple[Path, Path, Path] | None = None  # (ca, server cert, server key)
    max_queued_messages: int = 1000
    max_inflight_messages: int = 20
    max_connections: int = -1
    broker_conf: Path | None = None  # settings written by `edgeship fleet credentials` (broker.conf)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if self.passwd or self.broker_conf else 'true'}",
            "persistence true",
            f"persistence_location {data}/",
            "autosave_interval 1",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_inflight_messages {self.max_inflight_messages}",
            f"max_connections {self.max_connections}",
            "message_size_limit 0",
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")
        if self.broker_conf:
            lines += [line for line in self.broker_conf.read_text().splitlines()
                      if line.strip() and not line.startswith("#") and not line.startswith("allow_anonymous")]
            for line in lines:
                if line.startswith("plugin "):
                    require_file(line.split(" ", 1)[1], "mosquitto's dynamic-security plugin (Debian package mosquitto)")
        if self.passwd:
            lines.append(f"password_file {self.passwd}")
        if self.acl:
            lines.append(f"acl_file {self.acl}")
        if self.tls:
            ca, cert, key = self.tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}", "tls_version tlsv1.2"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> "Broker":
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start: {err.strip()} {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s")

    def stop(self, kill: bool = False) -> None:
        """Stop the broker: SIGTERM saves the persistence db; kill=True is a crash (SIGKILL)."""
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self, kill: bool = False) -> "Broker":
        self.stop(kill=kill)
        return self.start()

    def log_tail(self, lines: int = 20) -> str:
        log = self.workdir / "mosquitto.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


@pytest.fixture
def mosquitto_broker(tmp_path):
    binary = require_binary("mosquitto", "/usr/sbin/mosquitto")
    started: list[Broker] = []

    def start(**options) -> Broker:
        workdir = tmp_path / f"mosquitto-{len(started)}"
        workdir.mkdir()
        broker = Broker(binary=binary, workdir=workdir, **options)
        started.append(broker)
        return broker.start()

    yield start
    for broker in started:
        broker.stop()
