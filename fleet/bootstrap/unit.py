"""The systemd unit that keeps `edgeship agent serve` running on an MQTT board.

Type=notify with WatchdogSec: the service says READY=1 when its loop runs and WATCHDOG=1 from its
worker thread (fleet/sdnotify.py), so systemd restarts it when it exits with an error *or* hangs.
Logs go to journald (`journalctl -u edgeship-agent`). The ExecStart uses the `agent` symlink, so an
upgrade that switches the symlink needs only a restart.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

UNIT_NAME = "edgeship-agent.service"
WATCHDOG_S = 60


def _arg(value: str) -> str:
    """Quote an ExecStart argument for systemd when it needs it."""
    text = str(value)
    if text and all(c.isalnum() or c in "/._-:=@+," for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(device_id: str, home: str, root: str, broker: str, *, prefix: str = "edgeship",
           password_file: str | None = None, ca: str | None = None) -> str:
    command = [f"{home}/agent/bin/python", "-m", "edgeship", "agent", "serve", "--broker", broker,
               "--device-id", device_id, "--root", root, "--prefix", prefix]
    if password_file:
        command += ["--password-file", password_file]
    if ca:
        command += ["--ca", ca]
    return "\n".join([
        "# Written by `edgeship fleet bootstrap`: the edgeship device agent (MQTT device service).",
        "[Unit]",
        f"Description=edgeship device agent ({device_id})",
        "Wants=network-online.target",
        "After=network-online.target",
        "StartLimitIntervalSec=600",
        "StartLimitBurst=20",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={' '.join(_arg(a) for a in command)}",
        "Restart=on-failure",
        "RestartSec=5",
        f"WatchdogSec={WATCHDOG_S}",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=edgeship-agent",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def verify(text: str) -> list[str]:
    """Problems `systemd-analyze verify` finds in the unit (an empty list: it passes)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        raise FileNotFoundError("systemd-analyze is not installed (apt-get install systemd)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / UNIT_NAME
        path.write_text(text)
        proc = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return lines if proc.returncode != 0 or lines else []
