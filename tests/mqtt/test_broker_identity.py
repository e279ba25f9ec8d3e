"""Broker-side identity: each device account bound to its own client id (no takeover), secrets kept 0600
on re-runs. Against a real mosquitto configured with the files `edgeship fleet credentials` writes
(dynamic-security plugin)."""

from __future__ import annotations

import os
import threading

import pytest

from edgeship.errors import TransportError
from edgeship.fleet.mqtt import credentials, protocol
from edgeship.fleet.mqtt.client import MqttClient
from edgeship.fleet.mqtt.topics import Topics
from tests.mqtt.test_cli import run, write_fleet

pytestmark = pytest.mark.integration


def test_a_device_cannot_knock_another_offline_with_its_client_id(tmp_path, mosquitto_broker, make_service):
    files = credentials.write_credentials(tmp_path / "creds", ["cam-01", "cam-02"])
    broker = mosquitto_broker(broker_conf=files.broker_conf)
    secret = lambda user: (files.secrets_dir / f"{user}.password").read_text().strip()  # noqa: E731
    topics = Topics("edgeship")

    statuses: list[str] = []
    sync = threading.Event()
    watcher = MqttClient(broker.url, username="manager", password=secret("manager"), label="watcher")
    watcher.subscribe(topics.device("cam-02", "status"),
                      lambda msg: statuses.append(protocol.loads(msg.payload).get("state")) if msg.payload else None)
    watcher.subscribe("edgeship/manager/sync-test", lambda msg: sync.set())
    watcher.start().wait_connected(10)

    victim = make_service(broker.url, "cam-02", username="cam-02", password=secret("cam-02")).start()
    victim.client.wait_connected(10)
    try:
        # device A, with its own valid password, claims B's client id, or any id but its own (a manager's
        # random one included): the broker refuses the CONNECT, so B's session and will are never touched
        for client_id in ("edgeship-device-cam-02", "cam-02", "edgeship-manager-0123456789"):
            attacker = MqttClient(broker.url, client_id=client_id, username="cam-01",
                                  password=secret("cam-01"), label="attacker")
            with pytest.raises(TransportError, match="Not authorized"):
                attacker.start().wait_connected(10)
            attacker.stop(clean=False)
        own = MqttClient(broker.url, client_id="edgeship-device-cam-01", username="cam-01",
                         password=secret("cam-01"), label="cam-01")
        own.start().wait_connected(10)  # the same account under its own id is let in
        own.stop()
        watcher.publish("edgeship/manager/sync-test", b"x").wait_for_publish(5)
        assert sync.wait(10)
        assert victim.client.connects == 1 and victim.client.connected.is_set()
        assert "offline" not in statuses, statuses
    finally:
        watcher.stop()


def test_credentials_rerun_makes_existing_secrets_0600(tmp_path):
    fleet = write_fleet(tmp_path, "mqtt://127.0.0.1:1883")
    out = tmp_path / "out"
    assert run("fleet", "credentials", str(fleet), "--out", str(out)).returncode == 0
    secret = out / "secrets" / "cam-01.password"
    before = secret.read_text()
    os.chmod(secret, 0o644)  # e.g. restored from a backup or copied with cp
    res = run("fleet", "credentials", str(fleet), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert secret.stat().st_mode & 0o777 == 0o600
    assert secret.read_text() == before  # kept, not rotated
    conf = (out / "broker.conf").read_text()
    assert f"plugin_opt_config_file {(out / 'dynamic-security.json').resolve()}" in conf and "broker.conf" in res.stdout
    assert "use_username_as_clientid" not in conf  # global: it would give every manager process one client id
    for name in ("dynamic-security.json", "passwd", "acl", "broker.conf"):
        assert (out / name).stat().st_mode & 0o777 == 0o600, name
    printed = res.stdout + res.stderr
    assert not any(s.read_text().strip() in printed for s in (out / "secrets").iterdir())


def test_credentials_say_when_the_plugin_is_not_on_this_machine(tmp_path, monkeypatch, capsys):
    from edgeship.cli import main
    from edgeship.fleet.mqtt import dynsec

    monkeypatch.setattr(dynsec, "PLUGIN_DIRS", ())  # e.g. the credentials are made away from the broker
    fleet = write_fleet(tmp_path, "mqtt://127.0.0.1:1883")
    assert main(["fleet", "credentials", str(fleet), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "warning: mosquitto_dynamic_security.so not found" in out
    assert f"plugin /usr/lib/{dynsec.PLUGIN_NAME}" in (tmp_path / "out" / "broker.conf").read_text()
