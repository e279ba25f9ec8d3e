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
