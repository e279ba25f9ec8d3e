"""Faults: the broker killed and restarted mid-transfer, a device killed mid-download, an offline device."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from edgeship.fleet.agent_config import AgentConfig, write_config
from edgeship.fleet.mqtt.chunks import ChunkStore
from tests.mqtt.conftest import device, root_of
from tests.support.bundles import make_bundle

pytestmark = pytest.mark.integration


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll for an event (not a timing assertion: the deadline only stops a hung test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_broker_killed_and_restarted_mid_transfer(tmp_path, mosquitto_broker, make_service, make_transport):
    broker = mosquitto_broker()
    ids = ["cam-01", "cam-02", "cam-03"]
    services = [make_service(broker.url, d, window=1) for d in ids]
    for svc in services:
        svc.start().client.wait_connected(10)
    transport = make_transport(broker.url, chunk_kb=32)
    manager = transport.manager
    manager.server.send_delay_s = 0.02  # a slow link, so the kill lands mid-transfer
    bundle = make_bundle(tmp_path, "tiny", seed=11, pad_kb=640)
    recipe = manager.recipe_for(bundle)
    total = len(set(recipe.ids()))
    assert total >= 10
    seqs = {d: manager.publish_desired(d, "activate", recipe.digest, recipe) for d in ids}
    stores = {d: ChunkStore(root_of(tmp_path, d) / "chunks") for d in ids}
    wait_until(lambda: all(len(stores[d].ids()) >= 2 for d in ids), what="every device mid-transfer")

    broker.stop(kill=True)
    verified = {d: stores[d].ids() for d in ids}
    assert any(len(v) < total for v in verified.values())
    broker.start()
    mark = len(manager.server.sent_log)

    for d in ids:
        doc = manager.wait_for_seq(d, seqs[d], timeout=120)
        assert doc["last_result"]["ok"], doc["last_result"]
        assert doc["current"] == recipe.digest
    resent = [(d, c) for d, c in manager.server.sent_log[mark:] if c in verified[d]]
    assert resent == []  # nothing a device had verified before the crash went over the wire again


def _serve(tmp_path, broker_url: str, device_id: str, keys) -> subprocess.Popen:
    root = root_of(tmp_path, device_id)
    if not (root / "agent.yaml").exists():
        write_config(root, AgentConfig(trusted_keys=[keys[1]]))
    log = open(tmp_path / f"{device_id}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "edgeship", "agent", "serve", "--broker", broker_url,
                             "--device-id", device_id, "--root", str(root), "--window", "1", "--max-backoff", "2"],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_device_killed_mid_download_resumes(tmp_path, mosquitto_broker, make_transport, keys):
    broker = mosquitto_broker()
    transport = make_transport(broker.url, chunk_kb=32, offline_grace_s=0.2)
    manager = transport.manager
    manager.server.send_delay_s = 0.05
    bundle = make_bundle(tmp_path, "tiny", seed=12, pad_kb=640)
    recipe = manager.recipe_for(bundle)
    store = ChunkStore(root_of(tmp_path, "cam-01") / "chunks")
    proc = _serve(tmp_path, broker.url, "cam-01", keys)
    try:
        wait_until(lambda: manager.sync() or manager.device_state("cam-01").online, what="device online")
        seq = manager.publish_desired("cam-01", "activate", recipe.digest, recipe)
        wait_until(lambda: len(store.ids()) >= 3, what="download under way")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        verified = store.ids()
        assert 0 < len(verified) < len(set(recipe.ids()))

        # the broker publishes the last will: the manager sees it offline and stops waiting cleanly
        wait_until(lambda: manager.sync() or not manager.device_state("cam-01").online, what="last will")
        result = transport.activate(device("cam-01"), recipe.digest)
        assert not result.ok and result.reason == "unreachable"
        seq = manager._desired["cam-01"]["seq"]

        mark = len(manager.server.sent_log)
        proc = _serve(tmp_path, broker.url, "cam-01", keys)
        wait_until(lambda: manager.sync() or manager.device_state("cam-01").online, what="device back online")
        doc = manager.wait_for_seq("cam-01", seq, timeout=120)
        assert doc["last_result"]["ok"], doc["last_result"]
        again = [c for d, c in manager.server.sent_log[mark:] if c in verified]
        assert again == []
        assert doc["transfer"]["chunks_reused"] >= len(verified)
        assert manager.device_state("cam-01").online
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert proc.returncode == 0
    manager.sync()
    assert not manager.device_state("cam-01").online  # a clean stop says offline too


def test_offline_device_times_out_cleanly(tmp_path, mosquitto_broker, make_transport):
    broker = mosquitto_broker()
    transport = make_transport(broker.url, timeout_s=1.0)
    bundle = make_bundle(tmp_path, "tiny", seed=13)
    digest = transport.manager.recipe_for(bundle).digest
    with ThreadPoolExecutor(1) as pool:  # never-seen device: the wait ends at timeout_s, not never
        result = pool.submit(transport.activate, device("ghost-01"), digest).result(timeout=60)
    assert not result.ok and result.reason == "timeout" and "ghost-01" in result.message


def test_manager_restarted_mid_transfer(tmp_path, mosquitto_broker, make_service, make_transport):
    """A new manager process picks up the retained desired documents and keeps serving their chunks."""
    broker = mosquitto_broker()
    make_service(broker.url, "cam-01", window=1, request_timeout_s=2.0).start().client.wait_connected(10)
    first = make_transport(broker.url, chunk_kb=32)
    first.manager.server.send_delay_s = 0.05
    recipe = first.manager.recipe_for(make_bundle(tmp_path, "tiny", seed=14, pad_kb=640))
    seq = first.manager.publish_desired("cam-01", "activate", recipe.digest, recipe)
    store = ChunkStore(root_of(tmp_path, "cam-01") / "chunks")
    wait_until(lambda: len(store.ids()) >= 2, what="download under way")
    first.close()
    assert len(store.ids()) < len(set(recipe.ids()))

    second = make_transport(broker.url, chunk_kb=32)  # same store_dir, no publish_desired of its own
    second.manager.start()
    second.manager.sync()
    assert not second.manager.server.sent_log  # a manager that only looks does not answer requests
    second.manager.serve()  # a resumed rollout serves: the retained desired tells it what to offer
    doc = second.manager.wait_for_seq("cam-01", seq, timeout=120)
    assert doc["last_result"]["ok"], doc["last_result"]
    assert second.manager.server.sent_log
