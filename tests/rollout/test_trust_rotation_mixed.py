"""Key rotation and revocation across a real local + MQTT (mosquitto) + SSH (sshd) fleet, with no
device re-provisioned: the devices hold a 2-of-3 root; trust documents travel with the pushes (a
file next to the bundle over local and SSH, the retained fleet-wide topic over MQTT)."""

from __future__ import annotations

import shutil

import pytest
import yaml

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet.agent import Agent
from edgeship.fleet.agent_config import config_for_root
from edgeship.fleet.mqtt.client import SharedLoop, Worker
from edgeship.fleet.mqtt.service import DeviceService, Ticker
from edgeship.fleet.rollout.journal import Journal
from rollout_kit import make_bundle, signing_keys, write_rollout
from tests.support.mosquitto import mosquitto_broker  # noqa: F401  (fixture)
from tests.support.sshd import sshd_farm  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

LOCAL, MQTT = ["loc-1", "loc-2"], ["mq-1", "mq-2"]


def _cli(*argv) -> None:
    assert main([str(a) for a in argv]) == 0, argv


def _provision(root, roots, ci_pub) -> None:
    """Once, at the factory: 2-of-3 root, the first CI key, the device's target."""
    args = ["agent", "init", "--root", root, "--root-threshold", 2, "--trust", ci_pub, "--target", "host-cpu", "--force"]
    for pub in roots:
        args += ["--trust-root", pub]
    _cli(*args)


class MqttDevices:
    def __init__(self, tmp, url, ids):
        self.loop, self.worker = SharedLoop(), Worker()
        self.services = []
        for d in ids:
            root = tmp / "devices" / d
            agent = Agent(root, config_for_root(root), device_id=d)
            self.services.append(DeviceService(d, root, url, agent=agent, loop=self.loop, worker=self.worker,
                                               min_backoff=0.2, max_backoff=2.0).start())
        self.ticker = Ticker(self.services, interval=0.5)
        for svc in self.services:
            svc.client.wait_connected(20)

    def close(self):
        self.ticker.stop()
        for svc in self.services:
            svc.stop()
        self.loop.stop()
        self.worker.stop()


def _roots_of(tmp, farm):
    roots = {d: tmp / "devices" / d for d in LOCAL + MQTT}
    roots.update({d.id: d.root for d in farm.devices})
    return roots


def test_rotate_then_revoke_across_local_mqtt_and_ssh(tmp_path, mosquitto_broker, sshd_farm, monkeypatch, capsys):
    broker = mosquitto_broker()
    for dev in sshd_farm.devices:  # blank devices (the farm is shared by the module)
        shutil.rmtree(dev.root, ignore_errors=True)
        dev.root.mkdir()
    keys = {}
    for name in ("root1", "root2", "root3", "ci2"):
        keys[name] = artifact.generate_keypair(tmp_path / "keys" / f"{name}.key")
    ci1, ci1_pub = signing_keys(tmp_path)
    roots_pub = [keys[n][1] for n in ("root1", "root2", "root3")]
    device_roots = _roots_of(tmp_path, sshd_farm)
    for root in device_roots.values():
        _provision(root, roots_pub, ci1_pub)
    provisioned = {d: (r / "agent.yaml").read_bytes() for d, r in device_roots.items()}

    repo = tmp_path / "trust"
    _cli("keys", "root", "init", "--repo", repo, *sum((["--root", p] for p in roots_pub), []), "--threshold", 2,
         "--artifact-key", ci1_pub, "--sign", keys["root1"][0], "--sign", keys["root2"][0])
    fleet_doc = sshd_farm.fleet_document(trust=[ci1_pub])
    fleet_doc["trust"]["document"] = str(repo / "trust.json")
    fleet_doc["transports"]["mqtt"] = {"broker": broker.url}
    fleet_doc["devices"] += [{"id": d, "target": "host-cpu", "transport": "local", "address": str(device_roots[d])}
                             for d in LOCAL]
    fleet_doc["devices"] += [{"id": d, "target": "host-cpu", "transport": "mqtt"} for d in MQTT]
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(fleet_doc, sort_keys=False))
    strategy = {"canary": {"percent": 100}, "waves": [100], "max_unavailable": 8}  # every device at once
    ids = list(device_roots)

    def current(d):
        return Agent(device_roots[d], config_for_root(device_roots[d])).status()["current"]

    def trust_version(d):
        return Agent(device_roots[d], config_for_root(device_roots[d])).status()["trust"]["version"]

    mqtt = MqttDevices(tmp_path, broker.url, MQTT)
    try:
        # v1 signed by the first CI key, desired state signed by it too
        monkeypatch.setenv("EDGESHIP_SIGNING_KEY", str(ci1))
        v1 = make_bundle(tmp_path, "kws", seed=1, release=1)
        r1 = write_rollout(tmp_path, "kws-v1", fleet, v1, strategy)
        assert main(["apply", str(r1)]) == 0, capsys.readouterr().err
        assert all(current(d) == artifact.bundle_digest(v1) for d in ids)
        assert all(trust_version(d) == 1 for d in ids)

        # rotate to ci2 (trust document v2, 2 of the 3 roots), then revoke ci1 (v3): CI signs with ci2
        _cli("keys", "rotate", "--repo", repo, "--new", keys["ci2"][1],
             "--sign", keys["root2"][0], "--sign", keys["root3"][0])
        ci1_id = artifact.key_id(artifact.load_public_key(ci1_pub))
        _cli("keys", "revoke", "--repo", repo, ci1_id, "--sign", keys["root1"][0], "--sign", keys["root3"][0])
        monkeypatch.setenv("EDGESHIP_SIGNING_KEY", str(keys["ci2"][0]))
        v2 = make_bundle(tmp_path, "kws", seed=2, release=2, key=keys["ci2"][0])
        r2 = write_rollout(tmp_path, "kws-v2", fleet, v2, strategy)
        capsys.readouterr()
        assert main(["plan", str(r2)]) == 1
        out = capsys.readouterr().out
        for d in ids:  # every device still runs the ci1-signed release: plan says so, per device
            line = next(row for row in out.splitlines() if row.startswith(d + " "))
            assert f"signed by revoked key {ci1_id}" in line, out
        assert main(["apply", str(r2), "--take-over"]) == 0, capsys.readouterr().err
        assert all(current(d) == artifact.bundle_digest(v2) for d in ids)
        assert all(trust_version(d) == 3 for d in ids)

        # the leaked, revoked ci1 signs a newer release: refused by every device, v2 keeps running
        leaked = make_bundle(tmp_path, "kws", seed=3, release=3, key=ci1)
        r3 = write_rollout(tmp_path, "kws-v3", fleet, leaked, strategy)
        capsys.readouterr()
        assert main(["apply", str(r3), "--take-over"]) == 1
        err = capsys.readouterr().err
        assert f"signed by revoked key {ci1_id}" in err
        assert all(current(d) == artifact.bundle_digest(v2) for d in ids)
        with Journal() as j:
            ends = [s for s in j.steps("kws-v3") if s["phase"] == "end" and s["action"] == "activate"]
            assert {s["device"] for s in ends} == set(ids)
            assert all(not s["ok"] and "revoked-key" in (s["detail"] or "") for s in ends), ends

        # a renewed document on its own, to every device over its transport (no bundle)
        _cli("keys", "trust", "renew", "--repo", repo, "--sign", keys["root1"][0], "--sign", keys["root2"][0])
        capsys.readouterr()
        assert main(["keys", "trust", "show", "--fleet", str(fleet)]) == 1  # every device is behind
        out = capsys.readouterr().out
        assert out.count("behind version 4") == len(ids), out
        _cli("keys", "trust", "push", fleet)
        out = capsys.readouterr().out
        assert out.count(": ok: ") == len(ids), out
        assert all(trust_version(d) == 4 for d in ids)
        _cli("keys", "trust", "show", "--fleet", fleet)  # every transport reports version 4
        table = capsys.readouterr().out.splitlines()
        assert all(any(row.startswith(d + " ") and " root " in row and " 4 " in row for row in table) for d in ids), table

        # no device was re-provisioned
        assert all((r / "agent.yaml").read_bytes() == provisioned[d] for d, r in device_roots.items())
    finally:
        mqtt.close()
