"""A flipped byte in a kept (not current) release on an MQTT device: activation quarantines it, the
device stops reporting it as held, and the next push brings it back. Real mosquitto and agent."""

from __future__ import annotations

import pytest

from edgeship import artifact
from tests.fleet.fleet_helpers import flip_a_byte
from tests.mqtt.conftest import device, root_of
from tests.mqtt.test_signed_desired import on_v1
from tests.support.bundles import make_bundle

pytestmark = pytest.mark.integration


def test_a_damaged_kept_release_is_fetched_again_on_the_next_push(tmp_path, mosquitto_broker, make_service,
                                                                   make_transport):
    _, transport, d1 = on_v1(tmp_path, mosquitto_broker(), make_service, make_transport)
    v1 = make_bundle(tmp_path, "tiny", seed=1)  # the bundle on_v1 shipped
    d2 = transport.push(device("cam-01"), make_bundle(tmp_path, "tiny", seed=2)).digest
    assert transport.activate(device("cam-01"), d2).ok
    flip_a_byte(root_of(tmp_path, "cam-01") / "releases" / artifact.short(d1, 64) / "model.onnx")

    result = transport.activate(device("cam-01"), d1)
    assert not result.ok and result.reason == "tampered" and "quarantined" in result.message
    assert d1 not in transport.status(device("cam-01")).releases
    transport.push(device("cam-01"), v1)  # staged again (from the device's verified chunks or the manager's)
    assert transport.activate(device("cam-01"), d1).ok
    assert transport.status(device("cam-01")).current == d1
