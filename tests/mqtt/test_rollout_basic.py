"""Push, activate, status and rollback over a real mosquitto to in-process device services."""

from __future__ import annotations

import pytest

from tests.mqtt.conftest import device
from tests.support.bundles import make_bundle

pytestmark = pytest.mark.integration


def test_push_activate_status_rollback(tmp_path, mosquitto_broker, make_service, make_transport):
    broker = mosquitto_broker()
    svc = make_service(broker.url, "cam-01").start()
    svc.client.wait_connected(10)
    transport = make_transport(broker.url)
    dev = device("cam-01")
    v1 = make_bundle(tmp_path, "tiny", seed=1, pad_kb=512)
    v2 = make_bundle(tmp_path, "tiny", seed=2, pad_kb=512)

    pushed = transport.push(dev, v1)
    assert not pushed.skipped and pushed.bytes_sent > 0
    result = transport.activate(dev, pushed.digest)
    assert result.ok, result
    state = transport.status(dev)
    assert state.online and state.current == pushed.digest

    again = transport.push(dev, v1)  # a device that has the digest downloads nothing
    assert again.skipped and again.bytes_sent == 0

    second = transport.push(dev, v2)
    assert transport.activate(dev, second.digest).ok
    assert transport.status(dev).current == second.digest
    back = transport.rollback(dev)
    assert back.ok, back
    assert transport.status(dev).current == pushed.digest


def test_failed_activation_is_reported_and_the_old_release_keeps_running(tmp_path, mosquitto_broker, make_service,
                                                                          make_transport):
    broker = mosquitto_broker()
    make_service(broker.url, "cam-01").start().client.wait_connected(10)
    transport = make_transport(broker.url)
    dev = device("cam-01")
    good = transport.push(dev, make_bundle(tmp_path, "tiny", seed=1)).digest
    assert transport.activate(dev, good).ok
    bad = transport.push(dev, make_bundle(tmp_path, "tiny", seed=2, variant="nan")).digest
    result = transport.activate(dev, bad)
    assert not result.ok and result.reason == "smoke-failed" and result.device_id == "cam-01"
    assert transport.status(dev).current == good


def test_bad_input_is_one_clear_error(tmp_path, make_transport, monkeypatch):
    from edgeship.errors import TransportError
    from edgeship.fleet.mqtt.transport import MqttTransport

    not_a_bundle = tmp_path / "x.tar"
    not_a_bundle.write_bytes(b"junk")
    transport = make_transport("mqtt://127.0.0.1:1")
    with pytest.raises(TransportError, match="^cam-01: .*not"):
        transport.push(device("cam-01"), not_a_bundle)
    monkeypatch.delenv("EDGESHIP_MQTT_PASSWORD", raising=False)
    with pytest.raises(TransportError, match="EDGESHIP_MQTT_PASSWORD is not set"):
        MqttTransport(None, broker="mqtt://127.0.0.1:1", password="${EDGESHIP_MQTT_PASSWORD}")
    with pytest.raises(TransportError, match="broker URL"):
        MqttTransport(None, broker="http://127.0.0.1:1")


def test_many_devices_share_one_loop_thread(tmp_path, mosquitto_broker, make_service, make_transport):
    """The bench's mode: connections driven by one selector thread, handlers on one shared worker."""
    from edgeship.fleet.mqtt.client import SharedLoop, Worker

    broker = mosquitto_broker()
    loop, worker = SharedLoop(), Worker()
    ids = [f"sim-{i:02d}" for i in range(6)]
    try:
        services = [make_service(broker.url, d, loop=loop, worker=worker) for d in ids]
        for svc in services:
            svc.start()
        for svc in services:
            svc.client.wait_connected(20)
        transport = make_transport(broker.url, chunk_kb=16)
        recipe = transport.manager.recipe_for(make_bundle(tmp_path, "tiny", seed=51, pad_kb=200))
        seqs = {d: transport.manager.publish_desired(d, "activate", recipe.digest, recipe) for d in ids}
        for d in ids:
            doc = transport.manager.wait_for_seq(d, seqs[d], timeout=120)
            assert doc["last_result"]["ok"] and doc["current"] == recipe.digest
    finally:
        for svc in services:
            svc.stop()
        loop.stop()
        worker.stop()
