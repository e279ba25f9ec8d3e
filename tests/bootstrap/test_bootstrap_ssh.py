"""`edgeship fleet bootstrap` against boards reached over real loopback sshd.

The boards have no package index: the agent is installed with `pip install --no-index` from the
wheels pushed out of a wheelhouse built here from this checkout (cached in pytest's cache folder, so
a rerun downloads nothing and only rebuilds the edgeship wheel). Then one board takes a rollout over
SSH with the agent it got, a second bootstrap changes nothing, and upgrades: a broken agent is
refused by its self-test (the board keeps its agent), a good one is switched to (the previous kept).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet.agent import Agent
from edgeship.fleet.agent_config import config_for_root
from edgeship.fleet.bootstrap import unit, wheelhouse
from tests.support.bundles import make_bundle, signing_keys
from tests.support.require import require_binary
from tests.support.sshd import SshdFarm

pytestmark = pytest.mark.integration

BOARD_PYTHON = os.path.realpath(getattr(sys, "_base_executable", sys.executable))  # the board's own Python, no venv


@pytest.fixture(scope="module")
def wheelhouse_dir(request):
    cache = Path(request.config.cache.mkdir("edgeship-wheelhouse"))
    board = wheelhouse.Platform(f"{sys.version_info[0]}.{sys.version_info[1]}", platform.machine(),
                                platform.libc_ver()[1] or wheelhouse.DEFAULT_GLIBC)
    wheelhouse.build(cache, [board])
    return cache


def _fleet(tmp_path, farm, pub, name, devices):
    doc = farm.fleet_document(trust=[pub])
    doc["metadata"]["name"] = name
    doc["devices"] = devices
    doc["transports"]["mqtt"] = {"broker": "mqtt://127.0.0.1:1883", "prefix": "edgeship"}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _board(tmp_path, farm, i, transport):
    dev = farm.devices[i]
    home = tmp_path / "boards" / dev.id
    return {"id": dev.id, "target": "host-cpu", "transport": transport, "address": dev.address, "root": str(dev.root),
            "labels": {"kind": transport},
            "options": {"agent_home": str(home), "python": str(home / "agent" / "bin" / "python"),
                        "bootstrap_python": BOARD_PYTHON, "keep_releases": 2}}


def _link(home: Path, name: str = "agent") -> str:
    return os.readlink(home / name)


def _variant(src_tag: Path, dest: Path, edit) -> Path:
    """A copy of a wheelhouse folder whose edgeship wheel has one file changed by `edit(text) -> text`
    (RECORD rewritten to match, as a real build would)."""
    folder = dest / src_tag.name
    shutil.copytree(src_tag, folder)
    manifest = json.loads((folder / wheelhouse.MANIFEST).read_text())
    wheel = folder / manifest["edgeship_wheel"]
    with zipfile.ZipFile(wheel) as zin:
        files = {n: zin.read(n) for n in zin.namelist()}
    files = {n: edit(n, data) for n, data in files.items()}
    record = next(n for n in files if n.endswith(".dist-info/RECORD"))
    lines = []
    for n, data in files.items():
        if n == record:
            continue
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{n},sha256={digest},{len(data)}")
    files[record] = ("\n".join(lines + [f"{record},,"]) + "\n").encode()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zout:
        for n, data in files.items():
            zout.writestr(n, data)
    manifest["wheels"][wheel.name] = artifact.sha256_file(wheel)
    (folder / wheelhouse.MANIFEST).write_text(json.dumps(manifest))
    return dest


def test_bootstrap_offline_board_then_rollout_then_upgrades(tmp_path, wheelhouse_dir, capsys):
    require_binary("systemd-analyze")
    with SshdFarm(tmp_path / "sshd", count=2) as farm:
        _, pub = signing_keys(tmp_path)
        ssh_dev, mqtt_dev = _board(tmp_path, farm, 0, "ssh"), _board(tmp_path, farm, 1, "mqtt")
        fleet_all = _fleet(tmp_path, farm, pub, "boards", [ssh_dev, mqtt_dev])
        fleet_ssh = _fleet(tmp_path, farm, pub, "ssh-boards", [ssh_dev])
        home0, home1 = Path(ssh_dev["options"]["agent_home"]), Path(mqtt_dev["options"]["agent_home"])

        # 1. first bootstrap: wheels pushed, agent installed from them only, agent.yaml, the unit (no systemd here)
        assert main(["fleet", "bootstrap", str(fleet_all), "--wheelhouse", str(wheelhouse_dir)]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
        assert "wheel(s) pushed" in lines["dev-00"] and "installed" in lines["dev-00"] and "agent.yaml written" in lines["dev-00"]
        assert "unit written" in lines["dev-01"] and "no systemd on this board" in lines["dev-01"]
        board_python = home0 / "agent" / "bin" / "python"
        slim = subprocess.run([str(board_python), "-c", "import importlib.util as u, json; print(json.dumps("
                               "[m for m in ('onnx', 'fabric', 'paramiko', 'jsonschema', 'onnxruntime') if u.find_spec(m)]))"],
                              capture_output=True, text=True, timeout=60)
        assert json.loads(slim.stdout) == ["onnxruntime"], slim.stderr  # the board venv holds the agent only
        config = yaml.safe_load((Path(ssh_dev["root"]) / "agent.yaml").read_text())
        assert config["keep_releases"] == 2 and (Path(ssh_dev["root"]) / config["trusted_keys"][0]).read_bytes() == pub.read_bytes()
        unit_text = (home1 / unit.UNIT_NAME).read_text()
        assert f"--device-id dev-01" in unit_text and unit.verify(unit_text) == []

        # 2. idempotent: a second run changes nothing
        assert main(["fleet", "bootstrap", str(fleet_all), "--wheelhouse", str(wheelhouse_dir)]) == 0
        lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
        assert lines["dev-00"] == "unchanged" and lines["dev-01"].startswith("unchanged;"), lines
        assert main(["fleet", "bootstrap", str(fleet_ssh), "--wheelhouse", str(wheelhouse_dir), "--json"]) == 0
        (report,) = json.loads(capsys.readouterr().out)
        assert report["ok"] and not report["changed"] and report["agent"]["ok"] and report["board"]["arch"] == platform.machine()
        # the same board as an Intel one: its releases need OpenVINO, which the `agent` wheelhouse lacks: said, with the fix
        intel = _fleet(tmp_path, farm, pub, "intel-boards", [{**ssh_dev, "target": "intel-core-ultra-cpu"}])
        assert main(["fleet", "bootstrap", str(intel), "--wheelhouse", str(wheelhouse_dir)]) == 0
        line = capsys.readouterr().out.strip()
        assert line.startswith("dev-00: unchanged; intel-core-ultra-cpu releases run on openvino, which this agent "
                               "lacks: build the wheelhouse with --extras agent,openvino-runtime and bootstrap --upgrade"), line

        # 3. the bootstrapped board takes a rollout over SSH, run by its own agent
        v1 = make_bundle(tmp_path, "kws", seed=1)
        rollout = tmp_path / "rollout.yaml"
        rollout.write_text(yaml.safe_dump({"apiVersion": "edgeship/v1", "kind": "Rollout", "metadata": {"name": "boot-v1"},
                                           "fleet": str(fleet_ssh), "artifact": {"path": str(v1)}}, sort_keys=False))
        assert main(["apply", str(rollout)]) == 0, capsys.readouterr().err
        root0 = Path(ssh_dev["root"])
        assert Agent(root0, config_for_root(root0)).status()["current"] == artifact.bundle_digest(v1)
        capsys.readouterr()
        assert main(["fleet", "status", str(fleet_ssh)]) == 0
        status = capsys.readouterr().out
        assert "AGENT" in status and "0.1.0 onnxruntime" in status, status

        # 4. --upgrade to a broken agent: refused by its self-test, the board keeps the agent it had
        before = _link(home0)
        broken = _variant(wheelhouse_dir / f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}",
                          tmp_path / "wh-broken",
                          lambda n, d: d + b"\nraise ImportError('a broken agent')\n" if n == "edgeship/fleet/agent.py" else d)
        assert main(["fleet", "bootstrap", str(fleet_ssh), "--wheelhouse", str(broken)]) == 0
        assert "run with --upgrade" in capsys.readouterr().out and _link(home0) == before
        assert main(["fleet", "bootstrap", str(fleet_ssh), "--wheelhouse", str(broken), "--upgrade"]) == 1
        err = capsys.readouterr().err
        assert "failed its self-test" in err and "a broken agent" in err and "kept the running agent" in err, err
        assert _link(home0) == before and sorted(os.listdir(home0 / "venvs")) == [before.split("/")[-1]]

        # 5. --upgrade to a good agent: switched, the previous one kept, and it still serves the board
        good = _variant(wheelhouse_dir / f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}",
                        tmp_path / "wh-good",
                        lambda n, d: d + b"\n# upgraded\n" if n == "edgeship/__init__.py" else d)
        assert main(["fleet", "bootstrap", str(fleet_ssh), "--wheelhouse", str(good), "--upgrade"]) == 0, capsys.readouterr().err
        assert "agent upgraded" in capsys.readouterr().out
        assert _link(home0) != before and _link(home0, "previous") == before
        assert main(["fleet", "status", str(fleet_ssh)]) == 0
        assert artifact.bundle_digest(v1).split(":")[1][:12] in capsys.readouterr().out


def test_wheelhouse_asks_the_boards_and_bootstrap_refusals_are_one_line(tmp_path, wheelhouse_dir, capsys):
    with SshdFarm(tmp_path / "sshd", count=1) as farm:
        _, pub = signing_keys(tmp_path)
        dev = _board(tmp_path, farm, 0, "ssh")
        fleet = _fleet(tmp_path, farm, pub, "one", [dev])
        tag = f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}"

        # the wheelhouse command probes the board over SSH for its platform (wheels already there are reused)
        assert main(["fleet", "wheelhouse", str(fleet), "--out", str(wheelhouse_dir)]) == 0, capsys.readouterr().err
        assert f"{tag}: " in capsys.readouterr().out

        # no wheels for the board's platform: says which command makes them, the board is untouched
        assert main(["fleet", "bootstrap", str(fleet), "--wheelhouse", str(tmp_path / "empty")]) == 1
        err = capsys.readouterr().err
        assert f"no wheelhouse for {tag}" in err and "edgeship fleet wheelhouse" in err and "Traceback" not in err
        assert not Path(dev["options"]["agent_home"]).exists()

        # a board without room: refused before anything is pushed
        dev["options"]["bootstrap_min_free_mb"] = 10**9
        fleet = _fleet(tmp_path, farm, pub, "full-disk", [dev])
        assert main(["fleet", "bootstrap", str(fleet), "--wheelhouse", str(wheelhouse_dir)]) == 1
        assert "board not ready" in capsys.readouterr().err and not Path(dev["options"]["agent_home"]).exists()

        # an unknown host key: refused, never added
        farm.known_hosts.write_text("")
        assert main(["fleet", "bootstrap", str(fleet), "--wheelhouse", str(wheelhouse_dir)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("dev-00: error: host key for") and "refusing to connect" in err and err.count("\n") == 1
