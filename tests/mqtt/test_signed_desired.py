"""Desired state is signed and ordered by a per-device counter; a device counts as converged only
when it reports the target digest running. Attacks and faults against a real mosquitto, with real
device services and agents: a forged huge seq, a foreign key, a replay for another device, an old
replayed intent, a manager whose clock was an hour ahead, and a device that answers without running."""

from __future__ import annotations

import json
import time

import pytest

from edgeship import artifact
from edgeship.fleet import desired_state
from edgeship.fleet.mqtt import protocol
from edgeship.fleet.mqtt.client import MqttClient
from edgeship.fleet.mqtt.topics import Topics
from tests.mqtt.conftest import device, root_of
from tests.mqtt.test_cli import run
from tests.support.bundles import make_bundle

pytestmark = pytest.mark.integration
TOPICS = Topics("edgeship")


def handled(svc, publish, timeout: float = 30.0) -> dict:
    """Run `publish`, wait until the device service has answered one desired document, return its
    last result (bounded wait, no timing asserted)."""
    svc.converged.clear()
    publish()
    assert svc.converged.wait(timeout), "the device never answered"
    return svc.last_result


def raw_client(url: str, label: str) -> MqttClient:
    client = MqttClient(url, label=label)
    client.start().wait_connected(10)
    return client


def on_v1(tmp_path, broker, make_service, make_transport):
    svc = make_service(broker.url, "cam-01").start()
    svc.client.wait_connected(10)
    transport = make_transport(broker.url)
    v1 = make_bundle(tmp_path, "tiny", seed=1)
    d1 = transport.push(device("cam-01"), v1).digest
    assert transport.activate(device("cam-01"), d1).ok
    return svc, transport, d1


def test_unsigned_or_foreign_intents_with_a_huge_seq_change_nothing(tmp_path, mosquitto_broker, make_service,
                                                                    make_transport):
    broker = mosquitto_broker()
    svc, transport, d1 = on_v1(tmp_path, broker, make_service, make_transport)
    d2 = transport.push(device("cam-01"), make_bundle(tmp_path, "tiny", seed=2)).digest
    assert transport.activate(device("cam-01"), d2).ok  # now v2 current, v1 previous
    seq_before = svc._handled_seq
    attacker = raw_client(broker.url, "attacker")
    topic = TOPICS.device("cam-01", "desired")
    try:
        forged = {"seq": protocol.MAX_SEQ, "device": "cam-01", "action": "rollback"}
        result = handled(svc, lambda: attacker.publish(topic, protocol.dumps(forged), retain=True).wait_for_publish(5))
        assert not result["ok"] and result["reason"] == "unsigned"
        other_key = tmp_path / "other" / "evil.key"
        artifact.generate_keypair(other_key)
        signed_by_other = desired_state.sign(forged, other_key)
        result = handled(svc, lambda: attacker.publish(topic, protocol.dumps(signed_by_other), retain=True)
                         .wait_for_publish(5))
        assert not result["ok"] and result["reason"] == "untrusted-key"
    finally:
        attacker.stop()
    assert svc._handled_seq == seq_before  # not frozen
    assert svc.agent.status()["current"] == d2  # not rolled back
    d3 = transport.push(device("cam-01"), make_bundle(tmp_path, "tiny", seed=3)).digest
    result = transport.activate(device("cam-01"), d3)
    assert result.ok, result
    assert transport.status(device("cam-01")).current == d3
    assert transport.manager._desired["cam-01"]["seq"] < 100  # the forged retained seq did not count


def test_a_signed_intent_cannot_be_replayed_to_another_device_or_later(tmp_path, mosquitto_broker, make_service,
                                                                        make_transport):
    broker = mosquitto_broker()
    svc, transport, d1 = on_v1(tmp_path, broker, make_service, make_transport)
    old_intent = dict(transport.manager._desired["cam-01"])  # the signed activate of v1
    svc2 = make_service(broker.url, "cam-02").start()
    svc2.client.wait_connected(10)
    attacker = raw_client(broker.url, "attacker")
    try:
        result = handled(svc2, lambda: attacker.publish(TOPICS.device("cam-02", "desired"), protocol.dumps(old_intent),
                                                        retain=True).wait_for_publish(5))
        assert not result["ok"] and result["reason"] == "wrong-device"
        assert svc2.agent.status()["current"] is None

        d2 = transport.push(device("cam-01"), make_bundle(tmp_path, "tiny", seed=2)).digest
        assert transport.activate(device("cam-01"), d2).ok
        attacker.publish(TOPICS.device("cam-01", "desired"), protocol.dumps(old_intent), retain=True).wait_for_publish(5)
        assert svc.agent.status()["current"] == d2
        # the device handles its desired topic in order: once this later intent is answered, so was the replay
        assert transport.rollback(device("cam-01")).ok
        assert svc.agent.status()["current"] == d1  # the rollback, not the replayed activate, moved it
        assert svc.agent.status()["last_result"]["message"] == "rolled back"
    finally:
        attacker.stop()


def write_rollout(tmp_path, broker_url: str, pub, bundle, device_id: str):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "apiVersion: edgeship/v1\nkind: Fleet\nmetadata: {name: lab}\n"
        f"trust: {{public_keys: ['{pub}']}}\n"
        f"transports:\n  mqtt: {{broker: '{broker_url}', store_dir: manager-store, timeout_s: 60}}\n"
        f"devices:\n  - {{id: {device_id}, target: host-cpu, transport: mqtt}}\n")
    rollout = tmp_path / f"rollout-{bundle.stem}.yaml"
    rollout.write_text(
        f"apiVersion: edgeship/v1\nkind: Rollout\nmetadata: {{name: r-{bundle.stem}}}\nfleet: fleet.yaml\n"
        f"artifact: {{path: {bundle}}}\nstrategy: {{waves: [100], max_unavailable: 1, on_failure: pause}}\n")
    return rollout


def test_apply_after_a_manager_clock_an_hour_ahead_converges_for_real(tmp_path, mosquitto_broker, make_service,
                                                                       make_transport, keys):
    """A manager whose clock was an hour ahead once left a time-based seq on the device; later
    intents (from a manager with the right time) must still be acted on, and apply must say so only
    when the device runs the new release."""
    broker = mosquitto_broker()
    svc, transport, d1 = on_v1(tmp_path, broker, make_service, make_transport)
    transport.close()
    svc.stop()
    (root_of(tmp_path, "cam-01") / "mqtt-state.json").write_text(json.dumps({"seq": time.time_ns() + 3600 * 10**9}))
    svc = make_service(broker.url, "cam-01").start()
    svc.client.wait_connected(10)

    v2 = make_bundle(tmp_path, "tiny", seed=2)
    res = run("apply", str(write_rollout(tmp_path, broker.url, keys[1], v2, "cam-01")), timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert svc.agent.status()["current"] == artifact.bundle_digest(v2)


def test_a_device_that_answers_without_running_the_target_is_not_converged(tmp_path, mosquitto_broker, keys):
    """The device's report is the only truth: an 'ok' whose report says another release runs is a failure."""
    broker = mosquitto_broker()
    v0, v1 = make_bundle(tmp_path, "tiny", seed=0), make_bundle(tmp_path, "tiny", seed=1)
    d0, d1 = artifact.bundle_digest(v0), artifact.bundle_digest(v1)
    liar = MqttClient(broker.url, label="cam-09")

    def answer(msg):
        if not msg.payload:
            return
        doc = protocol.loads(msg.payload)
        report = {"device_id": "cam-09", "seq": doc["seq"], "current": d0, "releases": [d0],
                  "staged": [doc.get("digest")], "ts": time.time(),
                  "last_result": {"ok": True, "device_id": "cam-09", "digest": doc.get("digest") or d0,
                                  "reason": "", "message": "activated", "figures": {}}}
        liar.publish(TOPICS.device("cam-09", "reported"), protocol.dumps(report), retain=True)

    liar.subscribe(TOPICS.device("cam-09", "desired"), answer)
    liar.start().wait_connected(10)
    liar.publish(TOPICS.device("cam-09", "status"), protocol.status_doc("online"), retain=True).wait_for_publish(5)
    try:
        res = run("apply", str(write_rollout(tmp_path, broker.url, keys[1], v1, "cam-09")), timeout=180)
    finally:
        liar.stop()
    assert res.returncode != 0, res.stdout + res.stderr
    assert "not-running" in res.stdout + res.stderr
    from edgeship.fleet.rollout.journal import Journal

    with Journal() as journal:
        assert journal.applied("lab").get("cam-09", {}).get("digest") != d1


def test_desired_seq_is_a_counter_not_a_clock(tmp_path, mosquitto_broker, make_service, make_transport, monkeypatch):
    broker = mosquitto_broker()
    svc, transport, d1 = on_v1(tmp_path, broker, make_service, make_transport)
    seqs = [doc["seq"] for doc in [transport.manager._desired["cam-01"]]]
    monkeypatch.setattr(time, "time_ns", lambda: 1)  # a manager clock far in the past changes nothing
    d2 = transport.push(device("cam-01"), make_bundle(tmp_path, "tiny", seed=2)).digest
    assert transport.activate(device("cam-01"), d2).ok
    seqs.append(transport.manager._desired["cam-01"]["seq"])
    assert seqs[1] > seqs[0] and seqs[0] < 100
