"""docs/mqtt.md's Quick start, run as written: its shell blocks, in order, in one bash, against a real
mosquitto that drops to its own user. Only the three variables of its first block are set for the test
(a broker folder the `mosquitto` user can reach, a free port, loopback). It must end with a TLS broker
and three devices converged on the release."""

from __future__ import annotations

import grp
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from edgeship import artifact
from tests.support.mosquitto import free_port
from tests.support.require import require_binary, require_root

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def quick_start_blocks(text: str) -> list[str]:
    """The ```sh blocks of the `## Quick start` section, in order."""
    start = text.index("## Quick start")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else len(text)]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def _stop_process_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_mqtt_quick_start_runs_as_documented(tmp_path):
    require_binary("mosquitto", "/usr/sbin/mosquitto")
    require_root("the Quick start gives files to the broker's group (chgrp, install -o)")
    try:
        grp.getgrnam("mosquitto")
    except KeyError:
        pytest.fail("no 'mosquitto' group: the mosquitto package creates it")
    blocks = quick_start_blocks((REPO / "docs" / "mqtt.md").read_text())
    assert len(blocks) >= 6 and "export BROKER_DIR=" in blocks[0] and "PORT=" in blocks[0]

    # a source checkout as the doc assumes (only what the Quick start reads from it)
    checkout = tmp_path / "checkout"
    (checkout / "examples" / "kws").mkdir(parents=True)
    for name in ("make_model.py", "pipeline.yaml"):
        shutil.copyfile(REPO / "examples" / "kws" / name, checkout / "examples" / "kws" / name)
    # the broker's folder must be reachable by the mosquitto user: pytest's tmp folders are 0700
    outer = Path(tempfile.mkdtemp(prefix="edgeship-doc-", dir="/tmp"))
    os.chmod(outer, 0o755)
    broker_dir = outer / "mosquitto"
    overrides = f"export BROKER_DIR={broker_dir} PORT={free_port()} LISTEN=127.0.0.1\n"
    script = "set -euo pipefail\n" + blocks[0] + overrides + "".join(blocks[1:])
    (tmp_path / "walkthrough.sh").write_text(script)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    env.pop("EDGESHIP_SIGNING_KEY", None)
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    proc = None
    try:
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen(["bash", str(tmp_path / "walkthrough.sh")], cwd=checkout, env=env, stdout=out,
                                    stderr=err, start_new_session=True)
            code = proc.wait(timeout=420)
        stdout, stderr = out_path.read_text(), err_path.read_text()
        log = broker_dir / "data" / "mosquitto.log"
        broker_log = log.read_text(errors="replace") if log.exists() else "(no broker log)"
        assert code == 0, f"{stdout}\n{stderr}\n--- broker log\n{broker_log}"

        lab = checkout / "lab"
        digest = artifact.bundle_digest(lab / "out" / "kws-host.tar")
        rows = {line.split()[0]: line for line in stdout.splitlines() if line.startswith("cam-0")}
        for device in ("cam-01", "cam-02", "cam-03"):
            assert " online " in rows[device] and artifact.short(digest) in rows[device], stdout
        assert "Rollout kws-lab: Synced, Healthy: 3/3 device(s)" in stdout
        assert "does not contain '%c' or '%u'" not in broker_log and "Error" not in broker_log, broker_log
        device_log = (lab / "devices" / "cam-02.log").read_text()
        assert "desired state seq" in device_log and "transfer of" in device_log and "activate" in device_log
    finally:
        if proc is not None:
            _stop_process_group(proc.pid)  # the three `agent serve` started in the background
        pid_file = broker_dir / "data" / "mosquitto.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        shutil.rmtree(outer, ignore_errors=True)
