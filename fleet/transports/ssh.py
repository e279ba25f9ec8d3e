"""The `ssh` transport (fabric + paramiko): SFTP upload, remote activation by the same agent code.

Security: host keys are checked against the fleet's `known_hosts` file only. fabric's Connection
sets paramiko's AutoAddPolicy and never loads known_hosts (fabric #2071, #1804), so each connection
gets a RejectPolicy and the known_hosts file loaded before it connects: an unknown or changed host
key is refused with a clear error, never added. Authentication: `identity_file` (only that key) or a
password from a ${ENV} reference when set; otherwise, like `ssh`, the SSH agent and the default keys in
~/.ssh (id_ed25519, id_ecdsa, id_rsa). ~/.ssh/config is never read.

The fleet's trust chain (`trust.document`) is uploaded with every push as
`<root>/incoming/trust-chain.json`; the remote agent takes it before the bundle.

Upload: to `<root>/incoming/<hex>.tar.<writer>.part` (one per manager state folder: writer.py), appended from the size already on the device after a
dropped connection (resumable), then the remote sha256 is checked against the local file before the
part is renamed into place; a mismatch deletes the part and re-sends. Activation runs
`<python> -m edgeship agent activate sha256:<hex> --root <root> --json` on the device, so devices
need the agent: `pip install 'edgeship[agent]'` (Python 3.10+), or `edgeship fleet bootstrap`.

Settings (`transports.ssh` in the Fleet, each overridable per device in `options`):
user, identity_file, password (a ${ENV} reference), known_hosts, port (22), connect_timeout_s (10), command_timeout_s (300),
io_timeout_s (60), retries (3), root (/var/lib/edgeship), python (python3).
"""

from __future__ import annotations

import json
import shlex
import socket
import threading
import time
from pathlib import Path

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut

from edgeship import artifact
from edgeship.errors import ArtifactError, TransportError
from edgeship.fleet.agent import digest_hex
from edgeship.fleet.agent_config import CONFIG_NAME
from edgeship.fleet.bootstrap.provision import device_files
from edgeship.fleet.device_trust import INCOMING_FILE
from edgeship.fleet.trust_delivery import fleet_chain_bytes
from edgeship.fleet.inventory import Device, Fleet
from edgeship.fleet.transports import register
from edgeship.fleet.transports.writer import part_name, writer_id
from edgeship.fleet.types import DeviceState, PushResult, Result

_CHUNK = 256 * 1024
DEFAULTS = {"user": None, "identity_file": None, "known_hosts": "~/.ssh/known_hosts", "port": 22,
            "connect_timeout_s": 10, "command_timeout_s": 300, "io_timeout_s": 60, "retries": 3,
            "root": "/var/lib/edgeship", "python": "python3"}


class HostKeyRefused(TransportError):
    """The device's host key is unknown or changed: never retried, never added."""

    reason = "host-key"


class TransportTimeout(TransportError):
    """A remote command ran past its per-device timeout (the connection is dropped)."""

    reason = "timeout"


def _split_address(address: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]:port` -> (host, port or None)."""
    if address.startswith("[") and "]" in address:
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if address.count(":") == 1:
        host, port = address.split(":")
        return host, int(port) if port.isdigit() else None
    return address, None


def _retryable(err: BaseException) -> bool:
    return isinstance(err, (OSError, EOFError, paramiko.SSHException, socket.timeout, _Resend)) and not isinstance(
        err, (paramiko.AuthenticationException, paramiko.BadHostKeyException))


class _Resend(Exception):
    """The remote copy does not match: delete it and send again."""


@register("ssh")
class SshTransport:
    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self._lock = threading.Lock()
        self._conns: dict[str, Connection] = {}
        self._sha_cache: dict[tuple, str] = {}
        self.on_bytes = None  # optional callable(n): bytes uploaded, for a progress bar
        self.writer = writer_id()  # another manager's upload to the same device never shares our .part

    # --- settings and connections ---------------------------------------------------------------

    def settings(self, device: Device) -> dict:
        merged = dict(DEFAULTS)
        merged.update({k: v for k, v in self.fleet.transport_settings("ssh").items() if v is not None})
        merged.update({k: v for k, v in (device.options or {}).items() if v is not None})
        host, port = _split_address(device.address or "")
        merged["host"] = host
        if port:
            merged["port"] = port
        merged["root"] = device.root or merged["root"]
        return merged

    def _connect(self, device: Device) -> Connection:
        with self._lock:
            conn = self._conns.get(device.id)
        if conn is not None and conn.is_connected and conn.transport and conn.transport.is_active():
            return conn
        self._drop(device)
        s = self.settings(device)
        if not s["host"]:
            raise TransportError(device.id, "ssh device has no address (host[:port])")
        known_hosts = self.fleet.resolve(s["known_hosts"])
        defaults = not s["identity_file"] and not s.get("password")  # nothing named: the agent and ~/.ssh keys
        connect_kwargs = {"allow_agent": defaults, "look_for_keys": defaults, "banner_timeout": s["connect_timeout_s"],
                          "auth_timeout": s["connect_timeout_s"], "channel_timeout": s["connect_timeout_s"]}
        if s["identity_file"]:
            from edgeship.pipelines.manifest import expand_env  # may be a ${ENV} reference naming the file

            key_file = self.fleet.resolve(expand_env(str(s["identity_file"])))
            if not key_file.is_file():
                raise TransportError(device.id, f"identity_file {key_file} does not exist")
            connect_kwargs["key_filename"] = str(key_file)
        if s.get("password"):
            from edgeship.pipelines.manifest import expand_env  # secrets only as ${ENV}, resolved now

            connect_kwargs["password"] = expand_env(s["password"])
        # An empty ssh_config: nothing from ~/.ssh/config or /etc/ssh changes where or how we connect.
        config = Config(ssh_config=paramiko.SSHConfig())
        conn = Connection(s["host"], user=s["user"], port=int(s["port"]), config=config,
                          connect_timeout=max(1, int(s["connect_timeout_s"])), connect_kwargs=connect_kwargs)
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            conn.client.load_host_keys(str(known_hosts))
        except FileNotFoundError:
            raise HostKeyRefused(device.id, f"known_hosts file {known_hosts} does not exist: refusing to connect "
                                            "to an unverified host") from None
        where = f"{s['host']}:{s['port']}"
        try:
            self._open(conn, where, known_hosts, device, s)
        except BaseException:
            conn.close()
            raise
        if conn.transport is not None:
            conn.transport.set_keepalive(15)
        with self._lock:
            self._conns[device.id] = conn
        return conn

    @staticmethod
    def _open(conn: Connection, where: str, known_hosts: Path, device: Device, s: dict) -> None:
        """Connect, turning paramiko's host key and auth failures into clear, non-retried errors."""
        try:
            conn.open()
        except paramiko.BadHostKeyException as err:
            raise HostKeyRefused(device.id, f"host key for {where} does not match {known_hosts} (got {err.key.get_name()} "
                                            f"{err.key.fingerprint}): refusing to connect; possible man-in-the-middle") from None
        except paramiko.AuthenticationException as err:
            raise TransportError(device.id, f"authentication to {s['user']}@{where} failed: {err}") from None
        except paramiko.SSHException as err:
            if "not found in known_hosts" in str(err):
                raise HostKeyRefused(device.id, f"host key for {where} is not in {known_hosts}: refusing to connect "
                                                "(verify the fingerprint, then add it with ssh-keyscan)") from None
            raise

    def _drop(self, device: Device) -> None:
        with self._lock:
            conn = self._conns.pop(device.id, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            try:
                conn.close()
            except Exception:
                pass

    def _run(self, device: Device, conn: Connection, command: str, timeout: float | None = None):
        limit = timeout or self.settings(device)["command_timeout_s"]
        started = time.monotonic()
        try:
            result = conn.run(command, hide=True, warn=True, in_stream=False, timeout=limit)
        except CommandTimedOut:
            result = None
        # invoke's timer cuts the channel; on a busy machine the runner can see the closed channel
        # (exit status -1) before it sees its own timer, and returns instead of raising: same timeout.
        if result is None or (result.exited == -1 and time.monotonic() - started >= limit):
            self._drop(device)
            raise TransportTimeout(device.id, f"command timed out after {limit}s: {command.split()[0]}") from None
        return result

    def _with_retries(self, device: Device, what: str, action):
        """Run action(conn, attempt) with a fresh connection per attempt; connection-level errors retry.
        KeyboardInterrupt and SystemExit are not errors of the device: they go through untouched (the
        half-sent `.part` stays on the device and the next push resumes it)."""
        retries = max(1, int(self.settings(device)["retries"]))
        last: BaseException | None = None
        for attempt in range(1, retries + 1):
            try:
                return action(self._connect(device), attempt)
            except TransportError:
                raise
            except (KeyboardInterrupt, SystemExit):
                self._drop(device)  # the channel may be mid-write: never reuse it
                raise
            except Exception as err:  # noqa: BLE001 - classified right below
                if not _retryable(err):
                    raise TransportError(device.id, f"{what} failed: {err}") from None
                last = err
                self._drop(device)
                time.sleep(min(2.0, 0.2 * attempt))
        raise TransportError(device.id, f"{what} failed after {retries} attempts: {type(last).__name__}: {last}")

    # --- push ------------------------------------------------------------------------------------

    def _local_sha(self, bundle: Path) -> str:
        st = bundle.stat()
        key = (str(bundle.resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._sha_cache.get(key)
        if cached is None:
            cached = artifact.sha256_file(bundle)
            with self._lock:
                self._sha_cache[key] = cached
        return cached

    def _remote_sha(self, device: Device, conn: Connection, path: str) -> str | None:
        quoted = shlex.quote(path)
        fallback = shlex.quote("import hashlib,sys;h=hashlib.sha256();f=open(sys.argv[1],'rb');"
                               "[h.update(b) for b in iter(lambda:f.read(1<<20),b'')];print(h.hexdigest())")
        python = shlex.quote(str(self.settings(device)["python"]))
        # sha256sum (coreutils, busybox) where present, else the device's Python
        result = self._run(device, conn, f"sha256sum -- {quoted} 2>/dev/null || {python} -c {fallback} {quoted}")
        if result.exited != 0:
            return None
        return result.stdout.split()[0] if result.stdout.split() else None

    @staticmethod
    def _exists(sftp: paramiko.SFTPClient, path: str):
        try:
            return sftp.stat(path)
        except FileNotFoundError:
            return None
        except OSError as err:
            if getattr(err, "errno", None) == 2:
                return None
            raise

    @staticmethod
    def _makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
        parts, cur = [p for p in path.split("/") if p], "/" if path.startswith("/") else ""
        for part in parts:
            cur = f"{cur}{part}" if cur.endswith("/") or not cur else f"{cur}/{part}"
            try:
                sftp.stat(cur)
            except (FileNotFoundError, OSError):
                sftp.mkdir(cur)

    def _provision(self, sftp: paramiko.SFTPClient, root: str, device: Device) -> None:
        """A device without agent.yaml gets one trusting the fleet's public keys (first contact) and,
        when the fleet has a trust chain, its first root (keys + threshold) and the device's target.
        An existing agent.yaml is never touched: the device owns its trust."""
        if self._exists(sftp, f"{root}/{CONFIG_NAME}"):
            return
        import yaml

        config, files = device_files(self.fleet, device)
        self._makedirs(sftp, f"{root}/trust")
        for name, data in files.items():
            with sftp.open(f"{root}/{name}", "wb") as fh:
                fh.write(data)
        with sftp.open(f"{root}/{CONFIG_NAME}.tmp", "w") as fh:
            fh.write(yaml.safe_dump(config, sort_keys=False))
        sftp.posix_rename(f"{root}/{CONFIG_NAME}.tmp", f"{root}/{CONFIG_NAME}")

    def _upload_trust(self, sftp: paramiko.SFTPClient, root: str, data: bytes | None) -> None:
        """Put the trust chain where the next agent operation takes it (written whole, then renamed)."""
        if data is None:
            return
        part = f"{root}/incoming/{INCOMING_FILE}.{self.writer}.part"
        with sftp.open(part, "wb") as fh:
            fh.write(data)
        sftp.posix_rename(part, f"{root}/incoming/{INCOMING_FILE}")

    def deliver_trust(self, device: Device, data: bytes) -> Result:
        """Upload the chain and have the remote agent take it now (`edgeship agent trust`)."""
        root = self.settings(device)["root"].rstrip("/") or "/"

        def attempt(conn: Connection, n: int) -> None:
            sftp = conn.sftp()
            self._makedirs(sftp, f"{root}/incoming")
            self._upload_trust(sftp, root, data)

        self._with_retries(device, "trust upload", attempt)
        return self._result(device, "", *self._agent(device, "trust", "--json"))

    def _upload(self, conn: Connection, sftp: paramiko.SFTPClient, bundle: Path, part: str, offset: int,
                sent: dict) -> None:
        """Append bundle[offset:] to the remote `part`, counting the bytes in sent["bytes"].

        Writes are pipelined, so closing the remote file waits for the device to acknowledge every
        write. When the upload stops on an error or a Ctrl-C, that wait could hang on a silent link
        (and would replace the KeyboardInterrupt with a timeout): the connection is cut instead."""
        dst = sftp.open(part, "ab" if offset else "wb")
        try:
            dst.set_pipelined(True)
            with open(bundle, "rb") as src:
                src.seek(offset)
                while block := src.read(_CHUNK):
                    dst.write(block)
                    sent["bytes"] += len(block)
                    if self.on_bytes:
                        self.on_bytes(len(block))
        except BaseException:
            if conn.transport is not None:
                conn.transport.close()
            raise
        dst.close()

    def push(self, device: Device, bundle: Path) -> PushResult:
        """Upload the bundle to incoming/ (skip if the device has it), resuming after a dropped link."""
        bundle = Path(bundle)
        try:
            digest = artifact.bundle_digest(bundle)
        except ArtifactError as err:
            raise TransportError(device.id, str(err)) from None
        hexd = digest_hex(digest)
        size = bundle.stat().st_size
        local_sha = self._local_sha(bundle)
        root = self.settings(device)["root"].rstrip("/") or "/"
        target = f"{root}/incoming/{hexd}.tar"
        part = f"{root}/incoming/{part_name(hexd, self.writer)}"
        sent = {"bytes": 0, "resumed_from": None}

        def attempt(conn: Connection, n: int) -> PushResult:
            sftp = conn.sftp()
            sftp.get_channel().settimeout(float(self.settings(device)["io_timeout_s"]))
            self._makedirs(sftp, f"{root}/incoming")
            self._provision(sftp, root, device)
            self._upload_trust(sftp, root, fleet_chain_bytes(self.fleet))
            if self._exists(sftp, f"{root}/releases/{hexd}/{artifact.SUMS}"):
                return PushResult(sent["bytes"], sent["bytes"] == 0, device.id, digest, 0, n)
            existing = self._exists(sftp, target)
            if existing is not None and existing.st_size == size and self._remote_sha(device, conn, target) == local_sha:
                return PushResult(sent["bytes"], sent["bytes"] == 0, device.id, digest, 0, n)
            have = self._exists(sftp, part)
            offset = have.st_size if have is not None and have.st_size <= size else 0
            if have is not None and offset == 0:
                sftp.remove(part)
            if sent["resumed_from"] is None and offset:
                sent["resumed_from"] = offset
            if offset < size:
                self._upload(conn, sftp, bundle, part, offset, sent)
            if self._remote_sha(device, conn, part) != local_sha:
                sftp.remove(part)
                raise _Resend(f"remote copy of {bundle.name} does not match its sha256; re-sending")
            sftp.posix_rename(part, target)
            return PushResult(sent["bytes"], False, device.id, digest, sent["resumed_from"] or 0, n)

        return self._with_retries(device, "upload", attempt)

    # --- agent calls -------------------------------------------------------------------------------

    def _agent(self, device: Device, action: str, *args: str) -> tuple[int, str, str]:
        s = self.settings(device)
        command = " ".join([shlex.quote(str(s["python"])), "-m", "edgeship", "agent", action, *map(shlex.quote, args),
                            "--root", shlex.quote(s["root"]), "--device-id", shlex.quote(device.id)])

        def attempt(conn: Connection, n: int):
            result = self._run(device, conn, command)
            return result.exited, result.stdout, result.stderr

        return self._with_retries(device, f"agent {action}", attempt)

    def _result(self, device: Device, digest: str, code: int, out: str, err: str) -> Result:
        for line in reversed(out.strip().splitlines()):
            if line.startswith("{"):
                try:
                    result = Result.from_dict(json.loads(line))
                    result.device_id = device.id
                    return result
                except ValueError:
                    break
        detail = (err.strip().splitlines() or [f"exit status {code}"])[-1][:300]
        reason = "agent-missing" if code == 127 or "No module named edgeship" in err else "error"
        hint = " (install the agent with `edgeship fleet bootstrap`; set transports.ssh.python)" if reason == "agent-missing" else ""
        return Result(False, device.id, digest, reason, f"remote agent failed: {detail}{hint}")

    def activate(self, device: Device, digest: str) -> Result:
        digest = f"sha256:{digest_hex(digest)}"
        return self._result(device, digest, *self._agent(device, "activate", digest, "--json"))

    def rollback(self, device: Device) -> Result:
        return self._result(device, "", *self._agent(device, "rollback", "--json"))

    def status(self, device: Device) -> DeviceState:
        try:
            code, out, err = self._agent(device, "status", "--compact")
        except TransportError as error:
            if isinstance(error, HostKeyRefused):
                raise
            return DeviceState(device.id, online=False, last_result={"ok": False, "reason": "unreachable", "message": str(error)})
        try:
            data = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return DeviceState(device.id, online=True, last_result=self._result(device, "", code, out, err).to_dict())
        return DeviceState(device.id, online=True, current=data.get("current"), previous=data.get("previous"),
                           last_result=data.get("last_result"), last_seen=time.time(),
                           disk_bytes=data.get("disk_bytes"), releases=data.get("releases") or [],
                           device=data.get("device"),
                           trust=data.get("trust") if isinstance(data.get("trust"), dict) else None)
