"""Fixtures for the MQTT tests: a real mosquitto, in-process device services with real agents."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeship.fleet.agent import Agent
from edgeship.fleet.agent_config import AgentConfig
from edgeship.fleet.mqtt.service import DeviceService, Ticker
from edgeship.fleet.mqtt.transport import MqttTransport
from tests.support.bundles import signing_keys
from tests.support.mosquitto import mosquitto_broker  # noqa: F401  (fixture)


class Device:
    """What a Transport needs of a device (id); the inventory's Device has the same attribute."""

    def __init__(self, device_id: str):
        self.id = device_id


@pytest.fixture
def keys(tmp_path, monkeypatch):
    """The fleet's key pair: bundles are signed with it, devices trust it, and (as an operator does
    with EDGESHIP_SIGNING_KEY) the manager signs desired state with it."""
    priv, pub = signing_keys(tmp_path)
    monkeypatch.setenv("EDGESHIP_SIGNING_KEY", str(priv))
    return priv, pub


@pytest.fixture
def make_service(tmp_path, keys):
    started = []

    def make(broker_url: str, device_id: str, **options) -> DeviceService:
        root = tmp_path / "devices" / device_id
        keep = options.pop("keep_releases", 3)
        agent = Agent(root, AgentConfig(trusted_keys=[keys[1]], keep_releases=keep), device_id=device_id)
        agent.ensure_layout()
        options.setdefault("min_backoff", 0.2)
        options.setdefault("max_backoff", 2.0)
        svc = DeviceService(device_id, root, broker_url, agent=agent, **options)
        svc.ticker = Ticker([svc], interval=0.5)
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.ticker.stop()
        try:
            svc.stop()
        except Exception:
            pass


@pytest.fixture
def make_transport(tmp_path, keys):
    made = []

    def make(broker_url: str, **settings) -> MqttTransport:
        settings.setdefault("store_dir", str(tmp_path / "manager"))
        settings.setdefault("signing_key", str(keys[0]))  # desired state is signed with the artifacts' key
        settings.setdefault("timeout_s", 120)
        t = MqttTransport(None, broker=broker_url, **settings)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


BROKER_SETUPS = ("dynsec", "classic")


def broker_enforcing(mosquitto_broker, files, setup: str, **options):
    """A broker enforcing the accounts `fleet credentials` wrote: through the dynamic-security plugin
    (`broker.conf`, what an operator of mosquitto uses) or the classic password file + ACL (other brokers)."""
    if setup == "dynsec":
        return mosquitto_broker(broker_conf=files.broker_conf, **options)
    return mosquitto_broker(passwd=files.password_file, acl=files.acl_file, **options)


def device(device_id: str) -> Device:
    return Device(device_id)


def root_of(tmp_path: Path, device_id: str) -> Path:
    return tmp_path / "devices" / device_id


def write_mqtt_fleet(path: Path, name: str, broker_url: str, trusted_pub: Path, device_ids, **mqtt) -> Path:
    """A Fleet manifest of MQTT devices behind `broker_url`, trusting `trusted_pub`; `mqtt` adds
    transport settings (timeout_s, chunk_kb, store_dir, ...)."""
    import yaml

    path.write_text(yaml.safe_dump({
        "apiVersion": "edgeship/v1", "kind": "Fleet", "metadata": {"name": name},
        "trust": {"public_keys": [str(trusted_pub)]},
        "transports": {"mqtt": {"broker": broker_url, **mqtt}},
        "devices": [{"id": d, "target": "host-cpu", "transport": "mqtt"} for d in device_ids]}))
    return path
