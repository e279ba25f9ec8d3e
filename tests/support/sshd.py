"""Real OpenSSH servers on loopback ports, one per simulated device, for SSH transport tests.

Each instance: its own generated ed25519 host key, its own port on 127.0.0.1, a pidfile in tmp,
StrictModes no, UsePAM no, key-only auth for the current user against one generated client key.
Works as root (creates /run/sshd, the privilege-separation dir sshd insists on) and as a normal user.

    farm = SshdFarm(tmp_path, count=3)      # starts 3 sshd
    farm.devices[0].port, farm.devices[0].root, farm.known_hosts, farm.client_key, farm.user
    farm.write_fleet(path, trust=[pub])     # a Fleet manifest for these devices
    farm.stop()

The `sshd_farm` fixture (module scope) gives three devices and stops them after the module.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.require import require_binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_banner(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd on port {port} exited with {proc.returncode}: {proc.stderr.read().decode(errors='replace')[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd on port {port} did not answer within {timeout}s")


@dataclass
class SshdDevice:
    id: str
    port: int
    root: Path  # the device's agent root
    host_key: Path  # private host key (its .pub is in known_hosts)
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def host_key_line(self) -> str:
        kind, blob = Path(str(self.host_key) + ".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {blob}\n"


class SshdFarm:
    """`count` sshd processes on loopback, sharing one client key and one known_hosts file."""

    def __init__(self, workdir: Path, count: int = 3, prefix: str = "dev"):
        self.sshd = require_binary("sshd", "/usr/sbin/sshd")
        require_binary("ssh-keygen")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.client_key = self.workdir / "client_ed25519"
        _keygen(self.client_key, "edgeship-tests-client")
        self.authorized_keys = self.workdir / "authorized_keys"
        self.authorized_keys.write_text(Path(str(self.client_key) + ".pub").read_text())
        os.chmod(self.authorized_keys, 0o600)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.devices: list[SshdDevice] = []
        try:
            for i in range(count):
                self.devices.append(self._start(f"{prefix}-{i:02d}"))
        except BaseException:
            self.stop()
            raise
        self.known_hosts = self.workdir / "known_hosts"
        self.known_hosts.write_text("".join(d.host_key_line() for d in self.devices))

    def _start(self, device_id: str) -> SshdDevice:
        home = self.workdir / device_id
        home.mkdir()
        host_key = home / "ssh_host_ed25519_key"
        _keygen(host_key, f"{device_id}-host")
        root = home / "root"
        root.mkdir()
        for attempt in range(5):
            port = free_port()
            config = home / "sshd_config"
            config.write_text("\n".join([
                f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {home / 'sshd.pid'}",
                f"AuthorizedKeysFile {self.authorized_keys}", "StrictModes no", "UsePAM no",
                "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password", f"AllowUsers {self.user}", "Subsystem sftp internal-sftp",
                "MaxStartups 200:30:400", "MaxSessions 50", "LogLevel ERROR", "UseDNS no", "PrintMotd no", "",
            ]))
            proc = subprocess.Popen([self.sshd, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True)
            try:
                _wait_banner(port, proc)
                return SshdDevice(device_id, port, root, host_key, proc)
            except RuntimeError:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        for dev in self.devices:
            if dev.proc and dev.proc.poll() is None:
                dev.proc.terminate()
                try:
                    dev.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    dev.proc.kill()
                    dev.proc.wait()
            if dev.proc and dev.proc.stderr:
                dev.proc.stderr.close()

    def fleet_document(self, trust: list[Path] | None = None, python: str | None = None, **ssh_settings) -> dict:
        settings = {"user": self.user, "identity_file": str(self.client_key), "known_hosts": str(self.known_hosts),
                    "connect_timeout_s": 10, "python": python or sys.executable}
        settings.update(ssh_settings)
        doc = {
            "apiVersion": "edgeship/v1", "kind": "Fleet", "metadata": {"name": "sshd-farm"},
            "transports": {"ssh": settings},
            "devices": [
                {"id": d.id, "target": "host-cpu", "transport": "ssh", "address": d.address, "root": str(d.root),
                 "labels": {"site": "lab", "ring": "canary" if i == 0 else "main"}}
                for i, d in enumerate(self.devices)
            ],
        }
        if trust:
            doc["trust"] = {"public_keys": [str(p) for p in trust]}
        return doc

    def write_fleet(self, path: Path, trust: list[Path] | None = None, **kwargs) -> Path:
        Path(path).write_text(yaml.safe_dump(self.fleet_document(trust, **kwargs), sort_keys=False))
        return Path(path)

    def __enter__(self) -> "SshdFarm":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="module")
def sshd_farm(tmp_path_factory):
    farm = SshdFarm(tmp_path_factory.mktemp("sshd"), count=3)
    yield farm
    farm.stop()


class DroppingProxy:
    """A loopback TCP proxy in front of one sshd that cuts its first connection after
    `drop_after` client->server bytes (a link dying mid-upload); later connections pass through.
    With `stall=True` the first connection hangs there instead (a link gone silent): an upload is
    then reliably in progress, for as long as the test needs."""

    def __init__(self, target_port: int, drop_after: int, stall: bool = False):
        import threading

        self.target_port, self.drop_after, self.stall = target_port, drop_after, stall
        self.stalled = threading.Event()
        self.connections = 0
        self.dropped = 0
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import threading

        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            limit = self.drop_after if self.connections == 1 else None
            threading.Thread(target=self._pipe, args=(client, limit), daemon=True).start()

    def _pipe(self, client: socket.socket, limit: int | None) -> None:
        import select

        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        sent, holding = 0, False
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([upstream] if holding else [client, upstream], [], [], 0.5)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if limit is not None and sent + len(data) > limit:
                            if self.stall:
                                holding = True  # hold: never read this client again
                                self.stalled.set()
                                break
                            self.dropped += 1
                            return  # cut: both sockets close below, mid-stream
                        sent += len(data)
                        upstream.sendall(data)
                    else:
                        client.sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
