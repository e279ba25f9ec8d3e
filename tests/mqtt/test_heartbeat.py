"""What the manager reports is what an MQTT device runs: a release switched on the device itself is
reported within one heartbeat, and "last seen" is the device's last heartbeat (or its clean stop)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.mqtt.conftest import device, root_of
from tests.support.bundles import make_bundle

pytestmark = pytest.mark.integration


def _until(predicate, timeout: float = 30.0, step: float = 0.2):
    """Poll `predicate` (bounded in time and count); returns its last value."""
    value = predicate()
    for _ in range(int(timeout / step)):
        if value:
            return value
        time.sleep(step)
        value = predicate()
    return value


def test_a_local_rollback_on_the_device_is_reported_within_a_heartbeat(tmp_path, mosquitto_broker, make_service,
                                                                       make_transport, keys):
    from edgeship.fleet.agent_config import AgentConfig, write_config

    broker = mosquitto_broker()
    svc = make_service(broker.url, "cam-01", heartbeat_s=1.0).start()
    svc.client.wait_connected(10)
    transport = make_transport(broker.url)
    dev = device("cam-01")
    v1 = transport.push(dev, make_bundle(tmp_path, "tiny", seed=1)).digest
    assert transport.activate(dev, v1).ok
    v2 = transport.push(dev, make_bundle(tmp_path, "tiny", seed=2)).digest
    assert transport.activate(dev, v2).ok
    assert transport.status(dev).current == v2

    # a technician rolls the device back by hand while its service runs (the real CLI, another process)
    write_config(root_of(tmp_path, "cam-01"), AgentConfig(trusted_keys=[keys[1]]))
    done = subprocess.run([sys.executable, "-m", "edgeship", "agent", "rollback", "--root",
                           str(root_of(tmp_path, "cam-01"))], capture_output=True, text=True, timeout=60,
                          env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert _until(lambda: transport.status(dev).current == v1), "the manager never saw the local rollback"
    assert transport.status(dev).previous == v2


def test_last_seen_is_the_last_heartbeat_or_the_clean_stop(tmp_path, mosquitto_broker, make_service, make_transport):
    broker = mosquitto_broker()
    svc = make_service(broker.url, "cam-02", heartbeat_s=1.0).start()
    svc.client.wait_connected(10)
    transport = make_transport(broker.url)
    dev = device("cam-02")
    assert _until(lambda: transport.status(dev).online)
    connected_at = time.time()
    # heartbeats keep "last seen" moving while the device only idles
    assert _until(lambda: (transport.status(dev).last_seen or 0) > connected_at + 1.0)
    stopped_at = time.time()
    svc.ticker.stop()
    svc.stop()
    state = _until(lambda: (lambda s: s if not s.online else None)(transport.status(dev)))
    assert state and not state.online
    assert state.last_seen >= stopped_at - 0.05  # the goodbye, not a minute-old birth
