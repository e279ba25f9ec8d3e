"""Over real sshd: first contact provisions the fleet's root of trust and the device's target, the
trust chain travels with the push, and the remote agent refuses another target's build even when
the manager is bypassed (the transport called directly)."""

from __future__ import annotations

import shutil

import pytest
import yaml

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet.agent import Agent
from edgeship.fleet.agent_config import config_for_root
from edgeship.fleet.inventory import load_fleet
from edgeship.fleet.transports import close_transports, get_transport
from tests.support.bundles import make_bundle, signing_keys
from tests.support.sshd import sshd_farm  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def test_first_contact_provisions_root_and_target_and_agent_refuses_wrong_target(tmp_path, sshd_farm, capsys):
    for dev in sshd_farm.devices:
        shutil.rmtree(dev.root, ignore_errors=True)
        dev.root.mkdir()
    ci, ci_pub = signing_keys(tmp_path)
    root_key, root_pub = artifact.generate_keypair(tmp_path / "keys" / "root.key")
    repo = tmp_path / "trust"
    assert main(["keys", "root", "init", "--repo", str(repo), "--root", str(root_pub), "--artifact-key", str(ci_pub),
                 "--sign", str(root_key)]) == 0
    doc = sshd_farm.fleet_document(trust=[ci_pub])
    doc["trust"]["document"] = str(repo / "trust.json")
    fleet_path = tmp_path / "fleet.yaml"
    fleet_path.write_text(yaml.safe_dump(doc, sort_keys=False))

    host = make_bundle(tmp_path, "kws", seed=1)
    assert main(["deploy", str(host), "--fleet", str(fleet_path), "--parallel", "3"]) == 0
    for dev in sshd_farm.devices:
        config = config_for_root(dev.root)
        assert config.target == "host-cpu" and config.root_threshold == 1
        assert [artifact.key_id(artifact.load_public_key(p)) for p in config.trust_root] == \
            [artifact.key_id(artifact.load_public_key(root_pub))]
        agent = Agent(dev.root, config)
        assert agent.status()["trust"]["version"] == 1
        assert agent.status()["current"] == artifact.bundle_digest(host)

    ethos = make_bundle(tmp_path, "kws", seed=2, target="arm-ethos-u85")
    capsys.readouterr()
    assert main(["deploy", str(ethos), "--fleet", str(fleet_path)]) == 2
    err = capsys.readouterr().err
    assert sum(line.endswith("device target is host-cpu: refused") for line in err.splitlines()) == 3, err

    fleet = load_fleet(fleet_path)
    try:
        device = fleet.devices[0]
        transport = get_transport(fleet, device)
        transport.push(device, ethos)  # the manager's check bypassed: the device's agent still refuses
        result = transport.activate(device, artifact.bundle_digest(ethos))
        assert not result.ok and result.reason == "wrong-target" and "built for arm-ethos-u85" in result.message
        assert transport.status(device).current == artifact.bundle_digest(host)
    finally:
        close_transports(fleet)
