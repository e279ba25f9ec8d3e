"""The manager's waiters: a device's report wakes the threads waiting for that device only (an
engine wave has ~100 threads waiting, each on its own device; every report used to wake them all)."""

from __future__ import annotations

import json
import threading

import pytest

from edgeship.errors import TransportError
from edgeship.fleet.mqtt.client import Incoming
from edgeship.fleet.mqtt.transport import MqttManager


@pytest.fixture
def manager(tmp_path):
    mgr = MqttManager("mqtt://127.0.0.1:1", store_dir=tmp_path / "mqtt", timeout_s=30)  # never started: no broker needed
    yield mgr
    mgr.client.stop()


def _report(mgr: MqttManager, device: str, seq: int) -> None:
    doc = {"device_id": device, "seq": seq, "current": None, "ts": 1.0}
    mgr._on_reported(Incoming(mgr.topics.device(device, "reported"), json.dumps(doc).encode(), False))


def _status(mgr: MqttManager, device: str, state: str) -> None:
    mgr._on_status(Incoming(mgr.topics.device(device, "status"), json.dumps({"state": state, "ts": 1.0}).encode(), False))


def _count_notifies(mgr: MqttManager, device: str) -> list[int]:
    with mgr._cond:
        cond = mgr._device_cond(device)
    calls = [0]
    real = cond.notify_all

    def counted():
        calls[0] += 1
        real()

    cond.notify_all = counted
    return calls


def test_a_report_wakes_only_the_waiters_of_its_device(manager):
    a, b = _count_notifies(manager, "dev-a"), _count_notifies(manager, "dev-b")
    for seq in range(1, 21):
        _report(manager, "dev-b", seq)
    _status(manager, "dev-b", "online")
    assert a == [0] and b == [21]
    _report(manager, "dev-a", 1)
    _status(manager, "dev-a", "online")
    assert a == [2] and b == [21]


def test_wait_for_seq_returns_on_its_own_devices_report(manager):
    out: list = []
    waiter = threading.Thread(target=lambda: out.append(manager.wait_for_seq("dev-a", 2, timeout=30)), daemon=True)
    waiter.start()
    _report(manager, "dev-b", 5)  # another device's report: not an answer
    _report(manager, "dev-a", 1)  # an older seq: not yet
    _report(manager, "dev-a", 2)
    waiter.join(30)
    assert not waiter.is_alive() and out and out[0]["seq"] == 2


def test_wait_for_seq_still_sees_its_device_go_offline(manager):
    manager.offline_grace_s = 0.0
    errors: list = []

    def wait():
        try:
            manager.wait_for_seq("dev-a", 3, timeout=30)
        except TransportError as err:
            errors.append(err)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    _status(manager, "dev-a", "offline")
    waiter.join(30)
    assert not waiter.is_alive() and errors and "offline" in str(errors[0])
