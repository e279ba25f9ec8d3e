"""Trust documents over MQTT against a real mosquitto: the retained fleet-wide and per-device trust
topics, a chain signed by a foreign root refused, and an intent signed by a revoked key refused
before its seq counts."""

from __future__ import annotations

import json
import threading
import time

import pytest

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet import desired_state
from edgeship.fleet.agent import Agent
from edgeship.fleet.agent_config import config_for_root
from edgeship.fleet.mqtt import protocol
from edgeship.fleet.mqtt.service import DeviceService, Ticker
from edgeship.fleet.mqtt.topics import Topics, device_client_id
from edgeship.fleet.trust import TrustDocument, load_chain
from tests.mqtt.conftest import BROKER_SETUPS, broker_enforcing, device
from tests.mqtt.test_signed_desired import handled, raw_client
from tests.support.bundles import make_bundle

pytestmark = pytest.mark.integration
TOPICS = Topics("edgeship")


def _cli(*argv):
    assert main([str(a) for a in argv]) == 0, argv


def _wait_version(agent, version, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent.trust().summary()["version"] == version:
            return
        time.sleep(0.1)
    raise AssertionError(f"device never trusted version {version}: {agent.trust().summary()}")


def test_trust_topics_rotation_foreign_root_and_revoked_intent(tmp_path, mosquitto_broker, keys, make_transport):
    broker = mosquitto_broker()
    ci1, ci1_pub = keys
    root_key, root_pub = artifact.generate_keypair(tmp_path / "keys" / "root.key")
    ci2, ci2_pub = artifact.generate_keypair(tmp_path / "keys" / "ci2.key")
    evil_root, evil_pub = artifact.generate_keypair(tmp_path / "keys" / "evil-root.key")
    root = tmp_path / "devices" / "cam-01"
    _cli("agent", "init", "--root", root, "--trust", ci1_pub, "--trust-root", root_pub, "--target", "host-cpu")
    agent = Agent(root, config_for_root(root), device_id="cam-01")
    svc = DeviceService("cam-01", root, broker.url, agent=agent, min_backoff=0.2, max_backoff=2.0).start()
    ticker = Ticker([svc], interval=0.5)
    svc.client.wait_connected(10)
    repo = tmp_path / "trust"
    transport = make_transport(broker.url)
    attacker = raw_client(broker.url, "attacker")
    try:
        _cli("keys", "root", "init", "--repo", repo, "--root", root_pub, "--artifact-key", ci1_pub, "--sign", root_key)
        delivered = transport.deliver_trust(device("cam-01"), (repo / "trust.json").read_bytes())
        assert delivered.ok and delivered.figures["trust_version"] == 1, delivered
        v1 = make_bundle(tmp_path, "tiny", seed=1)
        assert transport.activate(device("cam-01"), transport.push(device("cam-01"), v1).digest).ok

        # rotate to ci2 and revoke ci1 (v2, v3): the retained fleet-wide topic carries the chain
        _cli("keys", "rotate", "--repo", repo, "--new", ci2_pub, "--sign", root_key)
        _cli("keys", "revoke", "--repo", repo, ci1_pub, "--sign", root_key)
        attacker.publish(TOPICS.fleet_trust(), (repo / "trust.json").read_bytes(), retain=True).wait_for_publish(5)
        _wait_version(agent, 3)

        # a chain from a root the device does not hold, on its own trust topic: refused, v3 stays
        _cli("keys", "root", "init", "--repo", tmp_path / "evil", "--root", evil_pub, "--artifact-key", ci1_pub,
             "--sign", evil_root)
        evil_doc = load_chain(tmp_path / "evil" / "trust.json")[0]
        forged = json.dumps([TrustDocument(dict(evil_doc.signed, version=9), ()).with_signature(evil_root).to_json()]).encode()
        attacker.publish(TOPICS.device("cam-01", "trust"), forged, retain=True).wait_for_publish(5)
        refused = agent.accept_trust(forged)  # the same check the service ran
        assert not refused.ok and refused.reason == "untrusted-root"
        assert agent.trust().summary()["version"] == 3

        # an intent signed by the revoked key: refused before its seq counts
        seq_before = svc._handled_seq
        intent = desired_state.sign({"seq": seq_before + 1, "device": "cam-01", "action": "rollback"}, ci1)
        result = handled(svc, lambda: attacker.publish(TOPICS.device("cam-01", "desired"), protocol.dumps(intent),
                                                       retain=True).wait_for_publish(5))
        assert not result["ok"] and result["reason"] == "revoked-key", result
        assert svc._handled_seq == seq_before
        # the manager now signs with ci2: the device moves on
        ci2_transport = make_transport(broker.url, signing_key=str(ci2), store_dir=str(tmp_path / "manager2"))
        v2 = make_bundle(tmp_path, "tiny", seed=2, key=ci2)
        d2 = ci2_transport.push(device("cam-01"), v2).digest
        assert ci2_transport.activate(device("cam-01"), d2).ok

        # an intent by a key the device learns of only afterwards (the trust message queued behind it at
        # the broker): refused at first, acted on once the trust document naming the key arrives
        ci3, ci3_pub = artifact.generate_keypair(tmp_path / "keys" / "ci3.key")
        seq = svc._handled_seq + 1
        early = desired_state.sign({"seq": seq, "device": "cam-01", "action": "activate", "digest": d2}, ci3)
        result = handled(svc, lambda: attacker.publish(TOPICS.device("cam-01", "desired"), protocol.dumps(early),
                                                       retain=True).wait_for_publish(5))
        assert not result["ok"] and result["reason"] == "untrusted-key"
        _cli("keys", "rotate", "--repo", repo, "--new", ci3_pub, "--keep-old", "--sign", root_key)
        result = handled(svc, lambda: attacker.publish(TOPICS.fleet_trust(), (repo / "trust.json").read_bytes(),
                                                       retain=True).wait_for_publish(5))
        assert result["ok"] and svc._handled_seq == seq, result
    finally:
        attacker.stop()
        ticker.stop()
        svc.stop()


@pytest.mark.parametrize("setup", BROKER_SETUPS)
def test_acl_lets_each_device_read_the_fleet_trust_topic_and_only_its_own(tmp_path, mosquitto_broker, setup):
    from edgeship.fleet.mqtt import credentials
    from edgeship.fleet.mqtt.client import MqttClient

    files = credentials.write_credentials(tmp_path / "creds", ["cam-01", "cam-02"])
    acl = files.acl_file.read_text()
    assert "topic read edgeship/trust" in acl and "write edgeship/trust" not in acl
    broker = broker_enforcing(mosquitto_broker, files, setup)
    secret = lambda user: (files.secrets_dir / f"{user}.password").read_text().strip()  # noqa: E731
    manager = MqttClient(broker.url, username="manager", password=secret("manager"), label="manager").start()
    manager.wait_connected(10)
    manager.publish(TOPICS.device("cam-02", "trust"), b'["for cam-02"]', retain=True).wait_for_publish(5)
    manager.publish(TOPICS.fleet_trust(), b'["fleet"]', retain=True).wait_for_publish(5)
    manager.publish(TOPICS.device("cam-01", "trust"), b'["for cam-01"]', retain=True).wait_for_publish(5)
    got = []
    own = threading.Event()

    def seen(msg):
        got.append((msg.topic, msg.payload))
        if msg.topic == TOPICS.device("cam-01", "trust"):
            own.set()

    cam = MqttClient(broker.url, device_client_id("cam-01"), username="cam-01", password=secret("cam-01"), label="cam-01")
    for topic in (TOPICS.device("cam-02", "trust"), TOPICS.fleet_trust(), TOPICS.device("cam-01", "trust")):
        cam.subscribe(topic, seen)
    cam.start().wait_connected(10)
    try:
        assert own.wait(10)
        deadline = time.monotonic() + 10
        while (TOPICS.fleet_trust(), b'["fleet"]') not in got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (TOPICS.fleet_trust(), b'["fleet"]') in got
        assert all(topic != TOPICS.device("cam-02", "trust") for topic, _ in got), got
    finally:
        cam.stop()
        manager.stop()
