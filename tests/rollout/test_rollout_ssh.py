"""A rollout over real sshd devices on loopback: the canary's smoke failure trips the gate, the
canary rolls back over SSH, the other devices are never touched."""

from __future__ import annotations

import pytest
import yaml

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet.agent import Agent
from edgeship.fleet.agent_config import CONFIG_NAME, AgentConfig, SmokeConfig, config_for_root
from edgeship.fleet.rollout.journal import Journal
from rollout_kit import TINY_MS, make_bundle, signing_keys, write_rollout
from tests.support.sshd import SshdFarm

pytestmark = pytest.mark.integration


def _current(root):
    return Agent(root, config_for_root(root)).status()["current"]


def test_ssh_fleet_canary_failure_rolls_back(tmp_path, capsys):
    with SshdFarm(tmp_path / "sshd", count=4) as farm:
        _, pub = signing_keys(tmp_path)
        fleet = farm.write_fleet(tmp_path / "fleet.yaml", trust=[pub])
        v1, v2 = make_bundle(tmp_path, "kws", seed=1), make_bundle(tmp_path, "kws", seed=2)
        d1, d2 = artifact.bundle_digest(v1), artifact.bundle_digest(v2)
        strategy = {"canary": {"count": 2}, "waves": [100], "max_unavailable": 2}
        r1 = write_rollout(tmp_path, "ssh-v1", fleet, v1, strategy)
        assert main(["apply", str(r1)]) == 0, capsys.readouterr().err
        assert all(_current(d.root) == d1 for d in farm.devices)
        assert main(["apply", str(r1)]) == 0
        assert "unchanged; 0 bytes pushed" in capsys.readouterr().out

        bad = farm.devices[1].root  # in the canary (ids sort dev-00, dev-01, ...)
        config = AgentConfig(trusted_keys=[pub], smoke=SmokeConfig(max_latency_ms=TINY_MS))
        (bad / CONFIG_NAME).write_text(yaml.safe_dump(config.to_yaml_dict(relative_to=bad)))
        r2 = write_rollout(tmp_path, "ssh-v2", fleet, v2, strategy)
        assert main(["plan", str(r2)]) == 1
        capsys.readouterr()
        assert main(["apply", str(r2), "--take-over"]) == 1
        err = capsys.readouterr().err
        assert "gate failed at canary" in err and "dev-01 smoke-failed" in err and "rolled back 1 device(s)" in err
        assert all(_current(d.root) == d1 for d in farm.devices)
        hex2 = artifact.short(d2, 64)
        for d in farm.devices[2:]:
            assert not (d.root / "releases" / hex2).exists() and not (d.root / "incoming" / f"{hex2}.tar").exists()
        with Journal() as j:
            assert {s["device"] for s in j.steps("ssh-v2")} == {"dev-00", "dev-01"}

        farm.devices[3].proc.terminate()  # a device that cannot be reached makes the plan incomplete: exit 2
        farm.devices[3].proc.wait(10)
        assert main(["plan", str(r2)]) == 2
        out, err = capsys.readouterr()
        assert "unreachable" in out and "dev-03" in out and "plan is incomplete" in err
