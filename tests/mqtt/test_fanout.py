"""Fan-out transfer: each chunk published once per release on a shared retained topic, whatever the
fleet size; each device receives only the chunks it lacks, verified against its signed recipe."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from edgeship.fleet.mqtt import credentials
from tests.mqtt.conftest import BROKER_SETUPS, broker_enforcing, device
from tests.mqtt.models import mlp_bundle
from tests.support.bundles import make_bundle

pytestmark = pytest.mark.integration

FLEET = 6


def _manager_bytes(transport) -> int:
    server = transport.manager.server
    return server.bytes_shared + sum(server.bytes_sent.values())


def _push_all(transport, ids, bundle):
    with ThreadPoolExecutor(len(ids)) as pool:
        return list(pool.map(lambda d: transport.push(device(d), bundle), ids))


def test_a_release_costs_the_manager_one_artifact_whatever_the_fleet_size(tmp_path, mosquitto_broker, make_service,
                                                                           make_transport):
    broker = mosquitto_broker()
    ids = [f"cam-{i:02d}" for i in range(FLEET)]
    services = {d: make_service(broker.url, d).start() for d in ids}
    for svc in services.values():
        svc.client.wait_connected(10)
    transport = make_transport(broker.url, fanout=True, chunk_kb=64)
    v1, v2 = mlp_bundle(tmp_path, "v1"), mlp_bundle(tmp_path, "v2")
    size = v1.stat().st_size

    before_in = {d: services[d].client.bytes_in for d in ids}
    pushed = _push_all(transport, ids, v1)
    first = _manager_bytes(transport)
    print(f"\nfan-out v1 to {FLEET} devices: manager sent {first} bytes for a {size}-byte artifact "
          f"(unicast would send {FLEET}x)")
    assert size <= first <= 1.05 * size  # once, not once per device
    for d, p in zip(ids, pushed):
        assert p.bytes_sent == size  # each device received the whole release (it had nothing)
        assert services[d].client.bytes_in - before_in[d] <= 1.05 * size  # and not much more on its wire
        assert transport.activate(device(d), p.digest).ok

    pushed = _push_all(transport, ids, v2)  # a retrained head: the devices lack only a few chunks
    delta = _manager_bytes(transport) - first
    assert 0 < delta < 0.25 * size  # only the new chunks, once
    assert all(0 < p.bytes_sent < 0.25 * size for p in pushed)
    assert all(transport.activate(device(d), p.digest).ok for d, p in zip(ids, pushed))


def test_a_late_device_reads_the_retained_chunks_without_the_manager_sending_again(
        tmp_path, mosquitto_broker, make_service, make_transport):
    broker = mosquitto_broker()
    make_service(broker.url, "cam-01").start().client.wait_connected(10)
    transport = make_transport(broker.url, fanout=True, chunk_kb=64)
    bundle = make_bundle(tmp_path, "tiny", seed=6, pad_kb=512)
    digest = transport.push(device("cam-01"), bundle).digest
    sent = _manager_bytes(transport)
    make_service(broker.url, "cam-02").start().client.wait_connected(10)
    late = transport.push(device("cam-02"), bundle)
    assert late.bytes_sent == bundle.stat().st_size
    assert _manager_bytes(transport) == sent  # the broker served the retained chunks
    assert transport.activate(device("cam-02"), digest).ok


def test_a_corrupt_shared_chunk_is_refused_and_fetched_alone(tmp_path, mosquitto_broker, make_service, make_transport):
    """The trust chain holds: a chunk on the shared topic that does not match the sha256 in the
    signed recipe is dropped, and the device asks for it on its own topic."""
    broker = mosquitto_broker()
    make_service(broker.url, "cam-01").start().client.wait_connected(10)
    transport = make_transport(broker.url, fanout=True, chunk_kb=64)
    bundle = make_bundle(tmp_path, "tiny", seed=4, pad_kb=256)
    spoiled: list[str] = []

    def corrupt_shared(device_id, chunk_id, data):
        if device_id == "*" and not spoiled:
            spoiled.append(chunk_id)
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        return data

    transport.manager.server.tamper = corrupt_shared
    pushed = transport.push(device("cam-01"), bundle)
    assert transport.activate(device("cam-01"), pushed.digest).ok
    sends = [d for d, c in transport.manager.server.sent_log if c == spoiled[0]]
    assert sends == ["*", "cam-01"]  # shared (corrupt), then to the device alone


@pytest.mark.parametrize("setup", BROKER_SETUPS)
def test_generated_acl_lets_devices_read_the_shared_chunks(tmp_path, mosquitto_broker, make_service, make_transport,
                                                           setup):
    files = credentials.write_credentials(tmp_path / "creds", ["cam-01", "cam-02"])
    broker = broker_enforcing(mosquitto_broker, files, setup)
    secret = lambda user: (files.secrets_dir / f"{user}.password").read_text().strip()  # noqa: E731
    for d in ("cam-01", "cam-02"):
        make_service(broker.url, d, username=d, password=secret(d)).start().client.wait_connected(10)
    transport = make_transport(broker.url, username="manager", password=secret("manager"), fanout=True, chunk_kb=64)
    bundle = make_bundle(tmp_path, "tiny", seed=8, pad_kb=256)
    pushed = _push_all(transport, ["cam-01", "cam-02"], bundle)
    assert not transport.manager.server.bytes_sent  # nothing fell back to unicast
    assert all(transport.activate(device(d), p.digest).ok for d, p in zip(["cam-01", "cam-02"], pushed))


def test_a_lost_retained_chunk_is_published_again_when_a_device_re_asks(tmp_path, mosquitto_broker, make_service,
                                                                         make_transport):
    """The broker lost the retained copies (cleared here, as a restart without persistence would):
    a device whose chunks are overdue asks once more on the shared topic and the manager publishes
    them again there, instead of every device falling back to unicast."""
    broker = mosquitto_broker()
    make_service(broker.url, "cam-01").start().client.wait_connected(10)
    transport = make_transport(broker.url, fanout=True, chunk_kb=64)
    server = transport.manager.server
    server.republish_after_s = 0.0
    bundle = make_bundle(tmp_path, "tiny", seed=9, pad_kb=256)
    transport.push(device("cam-01"), bundle)
    first = server.bytes_shared
    recipe = transport.manager.recipe_for(bundle)
    for cid in set(recipe.ids()):  # an empty retained message deletes the retained copy
        transport.manager.client.publish(transport.manager.topics.chunk(cid), b"", retain=True).wait_for_publish(5)
    make_service(broker.url, "cam-02", request_timeout_s=1.0).start().client.wait_connected(10)
    late = transport.push(device("cam-02"), bundle)
    assert late.bytes_sent == bundle.stat().st_size
    assert server.bytes_shared == 2 * first  # published again on the shared topics
    assert not server.bytes_sent  # no device fell back to unicast
