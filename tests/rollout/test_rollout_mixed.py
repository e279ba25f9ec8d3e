"""A mixed fleet of 110 devices, half local folders and half MQTT device services on a real
mosquitto, where a chosen fraction fails its smoke test for real: the canary gate trips, the
canary's switched devices roll back, devices outside the canary are never touched."""

from __future__ import annotations

import pytest
import yaml

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet.agent import Agent
from edgeship.fleet.agent_config import CONFIG_NAME, AgentConfig, config_for_root
from edgeship.fleet.mqtt.client import SharedLoop, Worker
from edgeship.fleet.mqtt.service import DeviceService, Ticker
from edgeship.fleet.rollout.journal import Journal
from rollout_kit import (current_of, device_ids, make_bundle, make_failing, releases_of, signing_keys,
                         write_local_fleet, write_rollout)
from tests.support.mosquitto import mosquitto_broker  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

N = 110
CANARY = 10
FAILING = ["dev-001", "dev-002", "dev-005", "dev-006", "dev-040", "dev-041"]  # 4 in the canary, 2 far outside


class MqttDevices:
    """In-process MQTT device services sharing one network loop and one worker (not a thread each)."""

    def __init__(self, tmp, broker_url, ids):
        self.tmp, self.url = tmp, broker_url
        self.loop, self.worker = SharedLoop(), Worker()
        self.services = {d: self._start(d) for d in ids}
        self.ticker = Ticker(list(self.services.values()), interval=0.5)
        for svc in self.services.values():
            svc.client.wait_connected(20)

    def _start(self, device_id):
        root = self.tmp / "devices" / device_id
        agent = Agent(root, config_for_root(root), device_id=device_id)
        agent.ensure_layout()
        return DeviceService(device_id, root, self.url, agent=agent, loop=self.loop, worker=self.worker,
                             min_backoff=0.2, max_backoff=2.0).start()

    def restart(self, device_id):
        """Restart one service so it reads its (new) agent.yaml, as a real device would on reboot."""
        self.services[device_id].stop()
        svc = self._start(device_id)
        svc.client.wait_connected(20)
        self.ticker.services = [s for s in self.ticker.services if s.device_id != device_id] + [svc]
        self.services[device_id] = svc

    def close(self):
        self.ticker.stop()
        for svc in self.services.values():
            try:
                svc.stop()
            except Exception:
                pass
        self.loop.stop()
        self.worker.stop()


def test_mixed_fleet_canary_gate(tmp_path, mosquitto_broker, capsys, monkeypatch):
    broker = mosquitto_broker()
    monkeypatch.setenv("EDGESHIP_SIGNING_KEY", str(signing_keys(tmp_path)[0]))  # the manager signs desired state
    ids = device_ids(N)
    local_ids = [d for i, d in enumerate(ids) if i % 2 == 0]
    mqtt_ids = [d for i, d in enumerate(ids) if i % 2 == 1]
    mqtt_devices = [{"id": d, "target": "host-cpu", "transport": "mqtt", "labels": {"site": "lab"}} for d in mqtt_ids]
    fleet = write_local_fleet(tmp_path, local_ids, extra_devices=mqtt_devices,
                              transports={"mqtt": {"broker": broker.url}})
    # the MQTT devices' agents trust the test key through their own agent.yaml, as real devices do
    from edgeship.fleet.agent_config import AgentConfig, CONFIG_NAME
    _, pub = signing_keys(tmp_path)
    for d in mqtt_ids:
        root = tmp_path / "devices" / d
        root.mkdir(parents=True, exist_ok=True)
        (root / CONFIG_NAME).write_text(yaml.safe_dump(AgentConfig(trusted_keys=[pub]).to_yaml_dict(relative_to=root)))
    services = MqttDevices(tmp_path, broker.url, mqtt_ids)
    try:
        v1, v2 = make_bundle(tmp_path, "kws", seed=1), make_bundle(tmp_path, "kws", seed=2)
        d1, d2 = artifact.bundle_digest(v1), artifact.bundle_digest(v2)
        strategy = {"canary": {"count": CANARY}, "waves": [50, 100], "max_unavailable": 16,
                    "gate": {"min_success_ratio": 0.9}}
        r1 = write_rollout(tmp_path, "v1", fleet, v1, strategy)
        assert main(["apply", str(r1)]) == 0, capsys.readouterr().err
        capsys.readouterr()
        assert all(current_of(tmp_path, d) == d1 for d in ids)
        assert main(["apply", str(r1)]) == 0  # idempotent over both transports
        assert "Rollout v1: unchanged; 0 bytes pushed" in capsys.readouterr().out

        make_failing(tmp_path, FAILING)
        for d in FAILING:
            if d in services.services:
                services.restart(d)
        r2 = write_rollout(tmp_path, "v2", fleet, v2, strategy)
        assert main(["apply", str(r2), "--take-over"]) == 1
        out, err = capsys.readouterr()
        assert "gate failed at canary" in err and "success ratio 0.60 < 0.90" in err
        assert "rolled back 6 device(s)" in err
        assert all(current_of(tmp_path, d) == d1 for d in ids)  # canary back on v1, the rest never moved
        hex2 = artifact.short(d2, 64)
        outside = ids[CANARY:]
        assert all(hex2 not in releases_of(tmp_path, d) for d in outside)
        with Journal() as j:
            assert {s["device"] for s in j.steps("v2")} == set(ids[:CANARY])
            failed = {s["device"] for s in j.steps("v2") if s["action"] == "activate" and s["phase"] == "end" and not s["ok"]}
            assert failed == {"dev-001", "dev-002", "dev-005", "dev-006"}
        assert main(["plan", str(r2)]) == 1  # still wants v2 everywhere: the rollout failed, nothing drifted
        assert "drifted" in capsys.readouterr().out
    finally:
        services.close()
