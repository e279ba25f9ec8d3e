"""One board's bootstrap over SSH: probe, push wheels, install the agent's virtualenv, self-test,
switch, provision agent.yaml, and (MQTT devices) install the systemd unit.

The connection is the SSH transport's own (host key checked against the fleet's known_hosts, the
same authentication settings). Board layout under `agent_home` (default /opt/edgeship):

    wheels/*.whl            the board platform's wheelhouse, synced by sha256 (only changed files move)
    venvs/<version>-<id>/   one virtualenv per wheel set; `.edgeship-ok` once it passed its self-test
    agent -> venvs/<...>    the active agent, switched with one rename (never half-installed)
    previous -> venvs/<...> the one before an upgrade, kept for a manual switch back
    edgeship-agent.service  the unit as written (MQTT devices), also installed when the board runs systemd

Idempotent: a second run finds the same wheels, the same venv passing its self-test, the same
agent.yaml and unit, and changes nothing. A different wheel set is installed beside the active one
only with `upgrade`; it is self-tested before the switch and again through the switched symlink, and
a failure removes it (or switches back) so the board keeps the agent it had.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import yaml

from edgeship.errors import TransportError
from edgeship.fleet.agent_config import CONFIG_NAME
from edgeship.fleet.bootstrap import provision, unit, wheelhouse
from edgeship.fleet.bootstrap.probe import PROBE, Board
from edgeship.fleet.bootstrap.runtime_check import missing_runtime
from edgeship.fleet.inventory import Device, Fleet
from edgeship.fleet.transports.ssh import SshTransport

DEFAULT_HOME = "/opt/edgeship"
MIN_FREE_MB = 400
OK_MARK = ".edgeship-ok"
# The board's pip sees only the pushed wheels: no index, no config file, no find-links from the environment.
PIP_ENV = "env -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null"
SWITCH = "import os,sys; t=sys.argv[2]+'.tmp'; os.path.lexists(t) and os.unlink(t); os.symlink(sys.argv[1], t); os.replace(t, sys.argv[2])"


@dataclass
class Outcome:
    device_id: str
    ok: bool = True
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    board: dict | None = None
    agent: dict | None = None  # the self-test report of the active agent

    def line(self) -> str:
        if not self.ok:
            return f"{self.device_id}: error: {self.error}"
        what = ", ".join(self.changes) if self.changes else "unchanged"
        return f"{self.device_id}: {what}" + "".join(f"; {n}" for n in self.notes)

    def to_dict(self) -> dict:
        return {"device_id": self.device_id, "ok": self.ok, "changed": bool(self.changes), "changes": self.changes,
                "notes": self.notes, "error": self.error or None, "board": self.board, "agent": self.agent}


class BoardError(Exception):
    """A step on the board failed: the message is the one line the operator reads."""


class Bootstrapper:
    def __init__(self, fleet: Fleet, wheelhouse_dir: Path, *, upgrade: bool = False, reprovision: bool = False):
        self.fleet = fleet
        self.wheelhouse_dir = Path(wheelhouse_dir)
        self.upgrade = upgrade
        self.reprovision = reprovision
        self.ssh = SshTransport(fleet)

    def close(self) -> None:
        self.ssh.close()

    # --- remote helpers -----------------------------------------------------------------------

    def _run(self, device: Device, command: str, timeout: float | None = None) -> tuple[int, str, str]:
        conn = self.ssh._connect(device)
        result = self.ssh._run(device, conn, command, timeout)
        return result.exited, result.stdout, result.stderr

    def _must(self, device: Device, command: str, what: str, timeout: float | None = None) -> str:
        code, out, err = self._run(device, command, timeout)
        if code != 0:
            detail = (err.strip() or out.strip() or f"exit status {code}").splitlines()[-1][:300]
            raise BoardError(f"{what} failed: {detail}")
        return out

    def _read(self, device: Device, path: str) -> bytes | None:
        sftp = self.ssh._connect(device).sftp()
        if self.ssh._exists(sftp, path) is None:
            return None
        with sftp.open(path, "rb") as fh:
            return fh.read()

    def _write(self, device: Device, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write a file on the board atomically (a .tmp beside it, then one rename)."""
        sftp = self.ssh._connect(device).sftp()
        with sftp.open(path + ".tmp", "wb") as fh:
            fh.write(data)
        sftp.chmod(path + ".tmp", mode)
        sftp.posix_rename(path + ".tmp", path)

    # --- the steps ----------------------------------------------------------------------------

    def run(self, device: Device) -> Outcome:
        outcome = Outcome(device.id)
        try:
            self._bootstrap(device, outcome)
        except (BoardError, wheelhouse.WheelhouseError) as err:
            outcome.ok, outcome.error = False, str(err)
        except TransportError as err:  # its text starts with the device id, which the line already names
            outcome.ok, outcome.error = False, str(err).removeprefix(f"{device.id}: ")
        except (OSError, paramiko.SSHException) as err:  # an SFTP write refused (not root for /etc), a dropped link
            outcome.ok, outcome.error = False, f"on the board: {type(err).__name__}: {err}"
        return outcome

    def _bootstrap(self, device: Device, outcome: Outcome) -> None:
        s = self.ssh.settings(device)
        home = str(s.get("agent_home") or DEFAULT_HOME).rstrip("/")
        root = str(s["root"]).rstrip("/") or "/"
        python = str(s.get("bootstrap_python") or "python3")  # the board's own Python makes the venv
        board = Board.from_json(self._must(device, f"{shlex.quote(python)} -c {shlex.quote(PROBE)} {shlex.quote(home)}",
                                           "probing the board (python3 -c)"))
        outcome.board = {"python": board.python, "arch": board.arch, "glibc": board.libc_version,
                         "free_bytes": board.free_bytes, "systemd": board.systemd}
        problems = board.problems(int(float(s.get("bootstrap_min_free_mb") or MIN_FREE_MB) * 2**20))
        if problems:
            raise BoardError(f"board not ready ({board.python} {board.arch}): " + "; ".join(problems))
        manifest = wheelhouse.load(self.wheelhouse_dir, board.tag)
        self._must(device, f"mkdir -p {shlex.quote(home + '/wheels')} {shlex.quote(home + '/venvs')} {shlex.quote(root)}",
                   f"creating {home}")
        pushed = self._sync_wheels(device, home, board.tag, manifest)
        if pushed:
            outcome.changes.append(f"{pushed} wheel(s) pushed")
        self._install(device, home, root, python, manifest, outcome)
        gap = missing_runtime(device, outcome.agent)
        if gap:
            outcome.notes.append(gap)
        self._provision(device, root, outcome)
        if device.transport == "mqtt":
            self._service(device, home, root, board, outcome)

    def _sync_wheels(self, device: Device, home: str, tag: str, manifest: dict) -> int:
        """Make <home>/wheels hold exactly the manifest's wheels; send only missing or changed files."""
        wheels = f"{home}/wheels"
        out = self._must(device, f"cd {shlex.quote(wheels)} && for f in *.whl; do [ -e \"$f\" ] && sha256sum -- \"$f\"; done; true",
                         "listing the board's wheels")
        have = {}
        for line in out.splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2:
                have[parts[1].strip().lstrip("*")] = parts[0]
        wanted = manifest["wheels"]
        sftp = self.ssh._connect(device).sftp()
        pushed = 0
        for name, sha in sorted(wanted.items()):
            if have.get(name) == sha:
                continue
            sftp.put(str(self.wheelhouse_dir / tag / name), f"{wheels}/{name}.part")
            sftp.posix_rename(f"{wheels}/{name}.part", f"{wheels}/{name}")
            pushed += 1
        for name in sorted(set(have) - set(wanted)):
            sftp.remove(f"{wheels}/{name}")
        if pushed:
            check = self._must(device, f"cd {shlex.quote(wheels)} && sha256sum -- " + " ".join(shlex.quote(n) for n in wanted),
                               "checking the pushed wheels")
            got = {p[1].strip().lstrip("*"): p[0] for p in (ln.split(None, 1) for ln in check.splitlines()) if len(p) == 2}
            bad = [n for n, sha in wanted.items() if got.get(n) != sha]
            if bad:
                raise BoardError(f"wheel {bad[0]} arrived damaged (sha256 differs): run again")
        return pushed

    @staticmethod
    def venv_name(manifest: dict) -> str:
        """One virtualenv per exact wheel set: same wheels, same venv, nothing to do."""
        h = hashlib.sha256(json.dumps([manifest["python"], manifest["extras"], sorted(manifest["wheels"].items())]).encode())
        version = manifest["edgeship_wheel"].split("-")[1]
        return f"{version}-{h.hexdigest()[:12]}"

    def _selftest(self, device: Device, venv_path: str, root: str) -> dict:
        code, out, err = self._run(device, f"{shlex.quote(venv_path + '/bin/python')} -m edgeship agent selftest "
                                           f"--root {shlex.quote(root)}", timeout=180)
        try:
            report = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            detail = (err.strip() or out.strip() or f"exit status {code}").splitlines()[-1][:300]
            return {"ok": False, "problems": [detail]}
        if code != 0:
            report["ok"] = False
        return report

    def _install(self, device: Device, home: str, root: str, python: str, manifest: dict, outcome: Outcome) -> None:
        name = self.venv_name(manifest)
        venv = f"{home}/venvs/{name}"
        link = f"{home}/agent"
        code, current, _ = self._run(device, f"readlink {shlex.quote(link)}")
        current = current.strip() if code == 0 else ""
        ready = self._run(device, f"test -e {shlex.quote(venv + '/' + OK_MARK)}")[0] == 0
        if current == f"venvs/{name}" and ready:
            report = self._selftest(device, link, root)
            if report.get("ok"):
                outcome.agent = report
                return
            outcome.notes.append("the installed agent failed its self-test: reinstalling it")
            ready = False
        if current and current != f"venvs/{name}" and not self.upgrade:
            report = self._selftest(device, link, root)
            outcome.agent = report
            outcome.notes.append(f"agent {report.get('agent_version', '?')} ({current.split('/')[-1]}) kept; the wheelhouse "
                                 f"has {name}: run with --upgrade to move to it")
            return
        if not ready:
            wheels = f"{home}/wheels"
            pip = f"{wheels}/{manifest['pip_wheel']}/pip"
            requirement = f"{wheels}/{manifest['edgeship_wheel']}[{manifest['extras']}]"
            self._must(device, f"rm -rf {shlex.quote(venv)} && {shlex.quote(python)} -m venv --without-pip {shlex.quote(venv)}",
                       "creating the agent's virtualenv")
            self._must(device, f"{PIP_ENV} {shlex.quote(venv + '/bin/python')} {shlex.quote(pip)} install --no-index "
                               f"--no-cache-dir --disable-pip-version-check --no-warn-script-location -q "
                               f"--find-links {shlex.quote(wheels)} {shlex.quote(requirement)}",
                       "installing the agent from the pushed wheels (pip install --no-index)", timeout=900)
        report = self._selftest(device, venv, root)
        if not report.get("ok"):
            if current and current != f"venvs/{name}":
                self._run(device, f"rm -rf {shlex.quote(venv)}")
            raise BoardError(f"the new agent ({name}) failed its self-test: {'; '.join(report.get('problems') or [])[:300]}"
                             + (f"; kept the running agent ({current.split('/')[-1]})" if current else ""))
        self._must(device, f"touch {shlex.quote(venv + '/' + OK_MARK)}", "marking the virtualenv")
        switch = f"{shlex.quote(python)} -c {shlex.quote(SWITCH)}"
        self._must(device, f"{switch} venvs/{shlex.quote(name)} {shlex.quote(link)}", "switching the agent symlink")
        if current and current != f"venvs/{name}":
            self._must(device, f"{switch} {shlex.quote(current)} {shlex.quote(home + '/previous')}", "keeping the previous agent")
            after = self._selftest(device, link, root)
            if not after.get("ok"):  # through the switched link: switch back, the old agent stays
                self._must(device, f"{switch} {shlex.quote(current)} {shlex.quote(link)}", "switching back")
                raise BoardError(f"the new agent failed its self-test after the switch: switched back to {current.split('/')[-1]}")
            keep = {name, current.split("/")[-1]}
            listing = self._must(device, f"ls -1 {shlex.quote(home + '/venvs')}", "listing venvs").split()
            stale = [v for v in listing if v not in keep]
            if stale:
                self._run(device, "rm -rf " + " ".join(shlex.quote(f"{home}/venvs/{v}") for v in stale))
            outcome.changes.append(f"agent upgraded {current.split('/')[-1]} -> {name} (previous kept)")
            report = after
        else:
            outcome.changes.append(f"agent {name} installed ({manifest['python']} {manifest['arch']})")
        outcome.agent = report

    def _provision(self, device: Device, root: str, outcome: Outcome) -> None:
        """agent.yaml and the trusted keys: written when absent (or with reprovision); an existing
        one is the device's own and is kept."""
        path = f"{root}/{CONFIG_NAME}"
        existing = self._read(device, path)
        config, files = provision.device_files(self.fleet, device)
        text = yaml.safe_dump(config, sort_keys=False).encode()
        keys_same = all(self._read(device, f"{root}/{name}") == data for name, data in files.items())
        if existing == text and keys_same:
            return
        if existing is not None and not self.reprovision:
            outcome.notes.append(f"{CONFIG_NAME} kept (the device's own; --reprovision replaces it)")
            return
        self.ssh._makedirs(self.ssh._connect(device).sftp(), f"{root}/trust")
        for name, data in files.items():
            self._write(device, f"{root}/{name}", data)
        self._write(device, path, text)
        outcome.changes.append(f"{CONFIG_NAME} written ({len(config['trusted_keys'])} trusted key(s))")

    def _service(self, device: Device, home: str, root: str, board: Board, outcome: Outcome) -> None:
        """The unit for `agent serve`, with the broker secrets it names pushed beside agent.yaml (0600)."""
        mqtt = self.fleet.transport_settings("mqtt")
        options = device.options or {}
        broker = options.get("broker") or mqtt.get("broker")
        if not broker:
            raise BoardError("transports.mqtt.broker is not set: the device service needs a broker URL")
        password_file = ca = None
        if options.get("mqtt_password_file"):
            password_file = f"{root}/mqtt.password"
            self._put_if_changed(device, self.fleet.resolve(str(options["mqtt_password_file"])), password_file, 0o600, outcome)
        tls = mqtt.get("tls") or {}
        if isinstance(tls, dict) and tls.get("ca"):
            ca = f"{root}/mqtt-ca.pem"
            self._put_if_changed(device, self.fleet.resolve(str(tls["ca"])), ca, 0o644, outcome)
        text = unit.render(device.id, home, root, str(broker), prefix=str(mqtt.get("prefix") or "edgeship"),
                           password_file=password_file, ca=ca).encode()
        copy = f"{home}/{unit.UNIT_NAME}"
        changed = self._read(device, copy) != text
        if changed:
            self._write(device, copy, text)
            outcome.changes.append(f"unit written ({copy})")
        if not board.systemd:
            outcome.notes.append(f"no systemd on this board: {unit.UNIT_NAME} written to {home}/, nothing started "
                                 "(run `agent serve` under the board's own supervisor)")
            return
        installed = f"/etc/systemd/system/{unit.UNIT_NAME}"
        if self._read(device, installed) != text:
            self._write(device, installed, text)
            self._must(device, "systemctl daemon-reload", "systemctl daemon-reload")
            changed = True
        active = self._run(device, f"systemctl is-active --quiet {unit.UNIT_NAME}")[0] == 0
        enabled = self._run(device, f"systemctl is-enabled --quiet {unit.UNIT_NAME}")[0] == 0
        if not enabled:
            self._must(device, f"systemctl enable {unit.UNIT_NAME}", "systemctl enable")
        if not active or changed or any(c.startswith("agent upgraded") for c in outcome.changes):
            self._must(device, f"systemctl restart {unit.UNIT_NAME}", "systemctl restart")
            outcome.changes.append(f"{unit.UNIT_NAME} (re)started")

    def _put_if_changed(self, device: Device, local: Path, remote: str, mode: int, outcome: Outcome) -> None:
        try:
            data = Path(local).read_bytes()
        except OSError as err:
            raise BoardError(f"{local}: {err.strerror}") from None
        if self._read(device, remote) != data:
            self._write(device, remote, data, mode)
            outcome.changes.append(f"{Path(remote).name} written")
