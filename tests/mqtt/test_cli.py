"""`edgeship fleet status` and `edgeship agent serve` as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edgeship import artifact
from edgeship.fleet.mqtt import credentials
from tests.mqtt.conftest import device
from tests.support.bundles import make_bundle

pytestmark = pytest.mark.integration


def run(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "edgeship", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def write_fleet(tmp_path, broker_url: str) -> os.PathLike:
    (tmp_path / "keys").mkdir(exist_ok=True)
    if not (tmp_path / "keys" / "fleet.pub").exists():
        artifact.generate_keypair(tmp_path / "keys" / "fleet.key", tmp_path / "keys" / "fleet.pub")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "apiVersion: edgeship/v1\nkind: Fleet\nmetadata: {name: lab}\ntrust: {public_keys: [keys/fleet.pub]}\n"
        f"transports:\n  mqtt: {{broker: '{broker_url}', username: manager, password: '${{EDGESHIP_MQTT_PASSWORD}}'}}\n"
        "devices:\n  - {id: cam-01, target: host-cpu, transport: mqtt}\n"
        "  - {id: cam-02, target: host-cpu, transport: mqtt}\n")
    return fleet


def test_fleet_status_table(tmp_path, mosquitto_broker, make_service, make_transport):
    files = credentials.write_credentials(tmp_path / "creds", ["cam-01", "cam-02"])
    broker = mosquitto_broker(passwd=files.password_file, acl=files.acl_file)
    secret = lambda user: (files.secrets_dir / f"{user}.password").read_text().strip()  # noqa: E731
    make_service(broker.url, "cam-01", username="cam-01", password=secret("cam-01")).start().client.wait_connected(10)
    transport = make_transport(broker.url, username="manager", password=secret("manager"))
    digest = transport.push(device("cam-01"), make_bundle(tmp_path, "tiny", seed=21)).digest
    assert transport.activate(device("cam-01"), digest).ok

    fleet = write_fleet(tmp_path, broker.url)
    res = run("fleet", "status", str(fleet), env={"EDGESHIP_MQTT_PASSWORD": secret("manager")})
    assert res.returncode == 0, res.stderr
    lines = {line.split()[0]: line for line in res.stdout.splitlines()[1:]}
    assert "online" in lines["cam-01"] and artifact.short(digest) in lines["cam-01"] and "ago" in lines["cam-01"]
    assert "offline" in lines["cam-02"] and "never" in lines["cam-02"]
    assert secret("manager") not in res.stdout + res.stderr

    res = run("fleet", "status", str(fleet), env={"EDGESHIP_MQTT_PASSWORD": "wrong"})
    assert "refused" in res.stdout and "Traceback" not in res.stdout + res.stderr


def test_agent_serve_with_a_wrong_password_exits_with_one_line(tmp_path, mosquitto_broker):
    files = credentials.write_credentials(tmp_path / "creds", ["cam-01"])
    broker = mosquitto_broker(passwd=files.password_file, acl=files.acl_file)
    (tmp_path / "pw").write_text("wrong\n")
    res = run("agent", "serve", "--broker", broker.url, "--device-id", "cam-01", "--root", str(tmp_path / "root"),
              "--password-file", str(tmp_path / "pw"))
    assert res.returncode == 1
    assert "refused" in res.stdout and "Traceback" not in res.stdout + res.stderr


def test_agent_serve_bad_arguments(tmp_path):
    res = run("agent", "serve", "--broker", "http://x", "--device-id", "cam-01", "--root", str(tmp_path))
    assert res.returncode == 2 and "broker URL" in res.stderr and "Traceback" not in res.stderr
    res = run("agent", "serve", "--broker", "mqtt://127.0.0.1:1", "--device-id", "Bad/Id", "--root", str(tmp_path))
    assert res.returncode == 2 and "--device-id" in res.stderr


def test_deploy_through_a_fleet_manifest(tmp_path, mosquitto_broker, make_service, keys):
    """The rollout path: load_fleet -> get_transport("mqtt") -> push + activate on every device."""
    from edgeship.fleet.deploy import deploy
    from edgeship.fleet.inventory import load_fleet
    from edgeship.fleet.transports import close_transports

    files = credentials.write_credentials(tmp_path / "creds", ["cam-01", "cam-02"])
    broker = mosquitto_broker(passwd=files.password_file, acl=files.acl_file)
    for dev in ("cam-01", "cam-02"):
        secret = (files.secrets_dir / f"{dev}.password").read_text().strip()
        make_service(broker.url, dev, username=dev, password=secret).start().client.wait_connected(10)
    fleet_path = write_fleet(tmp_path, broker.url)
    text = fleet_path.read_text().replace("password: '${EDGESHIP_MQTT_PASSWORD}'",
                                          "password_file: creds/secrets/manager.password, store_dir: manager-store")
    fleet_path.write_text(text)
    fleet = load_fleet(fleet_path)
    bundle = make_bundle(tmp_path, "tiny", seed=31)
    try:
        outcomes = deploy(fleet, fleet.devices, bundle, artifact.bundle_digest(bundle), parallel=2)
    finally:
        close_transports(fleet)
    assert [o.ok for o in outcomes] == [True, True], [(o.reason, o.message) for o in outcomes]
    assert all(o.push.bytes_sent > 0 for o in outcomes)
    assert (tmp_path / "manager-store" / "chunks").is_dir()


def test_apply_a_rollout_to_mqtt_devices(tmp_path, mosquitto_broker, make_service, keys):
    """`edgeship apply` (canary, then a wave) against devices that are reachable only through the broker."""
    files = credentials.write_credentials(tmp_path / "creds", ["cam-01", "cam-02"])
    broker = mosquitto_broker(passwd=files.password_file, acl=files.acl_file)
    for dev in ("cam-01", "cam-02"):
        secret = (files.secrets_dir / f"{dev}.password").read_text().strip()
        make_service(broker.url, dev, username=dev, password=secret).start().client.wait_connected(10)
    write_fleet(tmp_path, broker.url)
    bundle = make_bundle(tmp_path, "tiny", seed=61)
    rollout = tmp_path / "rollout.yaml"
    rollout.write_text(
        "apiVersion: edgeship/v1\nkind: Rollout\nmetadata: {name: tiny-mqtt}\nfleet: fleet.yaml\n"
        f"artifact: {{path: {bundle}}}\n"
        "strategy: {canary: {count: 1}, waves: [100], max_unavailable: 1, on_failure: rollback}\n")
    env = {"EDGESHIP_MQTT_PASSWORD": (files.secrets_dir / "manager.password").read_text().strip()}
    res = run("apply", str(rollout), env=env, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    res = run("fleet", "status", str(tmp_path / "fleet.yaml"), env=env)
    digest = artifact.short(artifact.bundle_digest(bundle))
    rows = [line for line in res.stdout.splitlines()[1:] if not line.startswith("releases: ")]  # the count line
    assert rows and all("online" in line and digest in line for line in rows), res.stdout
