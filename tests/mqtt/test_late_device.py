"""A device that drops off during a wave whose gate then fails must not activate the failed release
when it comes back: the rollout withdraws the desired state it left retained (like cancelling a job)."""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as paho
import pytest
import yaml

from edgeship import artifact
from edgeship.fleet.mqtt.transport import MqttTransport
from edgeship.fleet.rollout.artifacts import from_path
from edgeship.fleet.rollout.devices import Transports, load_fleet_and_select
from edgeship.fleet.rollout.engine import Engine
from edgeship.fleet.rollout.journal import Journal
from edgeship.fleet.rollout.spec import load_rollout
from tests.mqtt.conftest import device, write_mqtt_fleet
from tests.support.bundles import make_bundle

pytestmark = pytest.mark.integration

IDS = ("cam-01", "cam-02", "cam-03")


def retained(broker_url: str, topic: str, timeout: float = 10.0) -> bytes | None:
    """The retained message the broker holds on `topic` (None when there is none), read by a fresh
    subscriber: a sync message published after subscribing arrives after any retained one."""
    port = int(broker_url.rsplit(":", 1)[1])
    got: dict = {}
    done = threading.Event()
    sync = f"test/sync/{uuid.uuid4().hex}"
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}")

    def on_message(_c, _u, msg):
        if msg.topic == sync:
            done.set()
        elif msg.retain and msg.payload:
            got["payload"] = msg.payload

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.subscribe([(topic, 1), (sync, 1)])
        client.publish(sync, b"x", qos=1)
        assert done.wait(timeout), "broker did not answer the sync"
    finally:
        client.loop_stop()
        client.disconnect()
    return got.get("payload")


class DropsOffAfterStaging:
    """The real MQTT transport; the one device named goes offline right after its bundle is staged,
    before it is told to activate (a device losing power mid-wave)."""

    def __init__(self, fleet, services: dict, who: str):
        self.real = MqttTransport(fleet)
        self.services, self.who = services, who

    def activate(self, dev, digest):
        if dev.id == self.who:
            svc = self.services[dev.id]
            svc.ticker.stop()
            svc.stop()
        return self.real.activate(dev, digest)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_late_device_after_a_failed_gate_stays_on_the_release_the_rollout_wants(tmp_path, mosquitto_broker,
                                                                                 make_service, keys):
    broker = mosquitto_broker()
    services = {d: make_service(broker.url, d, heartbeat_s=1.0).start() for d in IDS}
    for svc in services.values():
        svc.client.wait_connected(10)
    fleet_path = write_mqtt_fleet(tmp_path / "fleet.yaml", "late", broker.url, keys[1], IDS, offline_grace_s=1,
                                  timeout_s=60, store_dir=str(tmp_path / "manager"))
    v1, v2 = make_bundle(tmp_path, "tiny", seed=1), make_bundle(tmp_path, "tiny", seed=2)
    d1, d2 = artifact.bundle_digest(v1), artifact.bundle_digest(v2)

    def apply(name, bundle, transports_for=None):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "apiVersion": "edgeship/v1", "kind": "Rollout", "metadata": {"name": name}, "fleet": str(fleet_path),
            "artifact": {"path": str(bundle)},
            "strategy": {"canary": {"count": 2}, "waves": [100], "max_unavailable": 1, "on_failure": "rollback"}}))
        spec = load_rollout(path)
        fleet, devices = load_fleet_and_select(spec)
        transports = Transports(fleet, transports_for) if transports_for else None
        with Journal() as journal:
            return Engine(spec, fleet, devices, from_path(bundle), journal, transports=transports,
                          log=lambda line: None).apply()

    assert apply("tiny", v1).state == "done"
    report = apply("tiny", v2, lambda fleet, _dev: DropsOffAfterStaging(fleet, services, "cam-02"))
    assert report.state == "failed" and "cam-02 unreachable" in report.reason
    # nothing is left retained for the device that dropped off
    assert retained(broker.url, "edgeship/devices/cam-02/desired") is None

    back = make_service(broker.url, "cam-02", heartbeat_s=1.0).start()  # it comes back, late
    back.client.wait_connected(10)
    probe = MqttTransport(None, broker=broker.url, store_dir=str(tmp_path / "probe"))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not probe.status(device("cam-02")).online:
            time.sleep(0.2)
        states = {d: probe.status(device(d)) for d in IDS}
    finally:
        probe.close()
    assert states["cam-02"].online
    assert {d: s.current for d, s in states.items()} == {d: d1 for d in IDS}
    assert d2 not in states["cam-02"].releases
