"""The systemd unit for `agent serve` passes `systemd-analyze verify`."""

from __future__ import annotations

import os
import sys

from edgeship.fleet.bootstrap import unit
from tests.support.require import require_binary


def _home(tmp_path):
    """A board home whose agent/bin/python exists (verify checks that ExecStart is executable)."""
    home = tmp_path / "opt edgeship"  # a space: ExecStart quoting is exercised too
    (home / "agent" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, home / "agent" / "bin" / "python")
    return home


def test_unit_passes_systemd_analyze_verify(tmp_path):
    require_binary("systemd-analyze")
    text = unit.render("cam-01", str(_home(tmp_path)), "/var/lib/edgeship", "mqtts://broker.lan:8883",
                       password_file="/var/lib/edgeship/mqtt.password", ca="/var/lib/edgeship/mqtt-ca.pem")
    assert unit.verify(text) == []
    for line in ("Type=notify", "Restart=on-failure", f"WatchdogSec={unit.WATCHDOG_S}", "StandardOutput=journal",
                 "WantedBy=multi-user.target"):
        assert line in text.splitlines()
    assert '"' in text.split("ExecStart=")[1].splitlines()[0]  # the path with a space is quoted
    assert "--device-id cam-01" in text and "--ca /var/lib/edgeship/mqtt-ca.pem" in text


def test_verify_reports_a_broken_unit(tmp_path):
    require_binary("systemd-analyze")
    text = unit.render("cam-01", str(_home(tmp_path)), "/var/lib/edgeship", "mqtt://127.0.0.1:1883")
    problems = unit.verify(text.replace("Type=notify", "Type=notifyy"))
    assert any("notifyy" in p for p in problems)
    missing = unit.render("cam-01", str(tmp_path / "nowhere"), "/var/lib/edgeship", "mqtt://127.0.0.1:1883")
    assert any("not executable" in p for p in unit.verify(missing))
