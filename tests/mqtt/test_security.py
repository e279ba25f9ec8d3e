"""Passwords, ACLs and TLS against a real mosquitto configured with generated files."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from edgeship.errors import TransportError
from edgeship.fleet.mqtt import certs, credentials
from edgeship.fleet.mqtt.client import MqttClient
from edgeship.fleet.mqtt.topics import Topics, device_client_id
from tests.mqtt.conftest import BROKER_SETUPS, broker_enforcing, device
from tests.support.bundles import make_bundle

pytestmark = pytest.mark.integration
CAM_01 = device_client_id("cam-01")  # the only client id the plugin lets cam-01's account use


@pytest.fixture(params=BROKER_SETUPS)
def secured(request, tmp_path, mosquitto_broker):
    files = credentials.write_credentials(tmp_path / "creds", ["cam-01", "cam-02"])
    broker = broker_enforcing(mosquitto_broker, files, request.param)
    secret = lambda user: (files.secrets_dir / f"{user}.password").read_text().strip()  # noqa: E731
    return broker, secret


def test_password_hash_matches_mosquitto_format():
    hashed = credentials.hash_password("secret", iterations=101, salt=bytes.fromhex("c0da33c736c781f94dbcdf3d"))
    assert hashed == ("$7$101$wNozxzbHgflNvN89$RHoxfkwR34Fh8JKG5qCO3CMUKorc6MBVp+ls9BSx0G0fEQ6oxH/exCexn4EXSU99"
                      "CVzBUBDzf0EwwLGOxeGQFA==")


def test_wrong_password_is_refused(secured):
    broker, secret = secured
    client = MqttClient(broker.url, CAM_01, username="cam-01", password="not-" + secret("cam-01"), label="cam-01")
    client.start()
    try:
        with pytest.raises(TransportError, match="refused"):
            client.wait_connected(10)
    finally:
        client.stop(clean=False)
    good = MqttClient(broker.url, CAM_01, username="cam-01", password=secret("cam-01"), label="cam-01").start()
    try:
        good.wait_connected(10)
    finally:
        good.stop()


def test_device_cannot_read_another_devices_topics(secured):
    broker, secret = secured
    topics = Topics("edgeship")
    manager = MqttClient(broker.url, username="manager", password=secret("manager"), label="manager").start()
    manager.wait_connected(10)
    manager.publish(topics.device("cam-02", "desired"), b'{"for": "cam-02"}', retain=True).wait_for_publish(5)

    got: list[str] = []
    own = threading.Event()

    def seen(msg):
        got.append(msg.topic)
        if msg.topic == topics.device("cam-01", "desired"):
            own.set()

    spy = MqttClient(broker.url, CAM_01, username="cam-01", password=secret("cam-01"), label="cam-01")
    spy.subscribe(topics.device("cam-02", "desired"), seen)
    spy.subscribe(topics.device("cam-02", "chunks"), seen)
    spy.subscribe("edgeship/#", seen)
    spy.subscribe(topics.device("cam-01", "desired"), seen)
    spy.start().wait_connected(10)
    try:
        # The other device's topics get traffic first; then the spy's own topic. Messages from one
        # publisher arrive in order, so once its own message is in, anything allowed would be too.
        manager.publish(topics.device("cam-02", "chunks"), b"ESC1" + bytes(40)).wait_for_publish(5)
        manager.publish(topics.device("cam-02", "desired"), b'{"again": 1}', retain=True).wait_for_publish(5)
        manager.publish(topics.device("cam-01", "desired"), b'{"for": "cam-01"}', retain=True).wait_for_publish(5)
        assert own.wait(10)
        assert all(t == topics.device("cam-01", "desired") for t in got), got
    finally:
        spy.stop()
        manager.stop()


def test_end_to_end_with_credentials_and_tls(tmp_path, mosquitto_broker, make_service, make_transport):
    files = credentials.write_credentials(tmp_path / "creds", ["cam-01"])
    cert_files = certs.generate(tmp_path / "certs")
    broker = mosquitto_broker(passwd=files.password_file, acl=files.acl_file,
                              tls=(cert_files.ca_cert, cert_files.server_cert, cert_files.server_key))
    assert broker.url.startswith("mqtts://")
    secret = lambda user: (files.secrets_dir / f"{user}.password").read_text().strip()  # noqa: E731
    svc = make_service(broker.url, "cam-01", username="cam-01", password=secret("cam-01"), ca=str(cert_files.ca_cert))
    svc.start().client.wait_connected(10)
    transport = make_transport(broker.url, username="manager", password=secret("manager"),
                               tls={"ca": str(cert_files.ca_cert)})
    bundle = make_bundle(tmp_path, "tiny", seed=3)
    digest = transport.push(device("cam-01"), bundle).digest
    assert transport.activate(device("cam-01"), digest).ok
    assert transport.status(device("cam-01")).current == digest


def test_tls_refuses_a_broker_not_signed_by_the_pinned_ca(tmp_path, mosquitto_broker):
    real = certs.generate(tmp_path / "real")
    other = certs.generate(tmp_path / "other")
    broker = mosquitto_broker(tls=(real.ca_cert, real.server_cert, real.server_key))
    client = MqttClient(broker.url, ca=str(other.ca_cert), label="cam-01", min_backoff=1, max_backoff=1).start()
    try:
        with pytest.raises(TransportError):
            client.wait_connected(3)
    finally:
        client.stop(clean=False)


def test_cli_writes_credentials_and_certs(tmp_path):
    (tmp_path / "keys").mkdir()
    from edgeship import artifact

    artifact.generate_keypair(tmp_path / "keys" / "signing.key")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "apiVersion: edgeship/v1\nkind: Fleet\nmetadata: {name: lab}\ntrust: {public_keys: [keys/signing.pub]}\n"
        "transports:\n  mqtt: {broker: 'mqtt://127.0.0.1:1883', prefix: plant7}\n"
        "devices:\n  - {id: cam-01, target: host-cpu, transport: mqtt}\n")
    out = tmp_path / "out"
    run = lambda *a: subprocess.run([sys.executable, "-m", "edgeship", *a], capture_output=True, text=True)  # noqa: E731
    res = run("fleet", "credentials", str(fleet), "--out", str(out))
    assert res.returncode == 0, res.stderr
    secret = (out / "secrets" / "cam-01.password").read_text().strip()
    assert secret not in res.stdout + res.stderr
    assert "pattern read plant7/devices/%u/desired" in (out / "acl").read_text()
    assert (out / "passwd").stat().st_mode & 0o077 == 0
    res = run("fleet", "certs", "--out", str(tmp_path / "tls"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "tls" / "server.key").stat().st_mode & 0o077 == 0
    again = run("fleet", "certs", "--out", str(tmp_path / "tls"))
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr and "Traceback" not in again.stderr
