"""Several manager processes on one fleet's broker at once (reconcile replicas, `apply`, `fleet status`,
`rollout status`, the dashboard), all with the fleet's manager account, against a real mosquitto
configured with the files `edgeship fleet credentials` writes: none may knock another offline.

The broker logs `Client <id> already connected, closing old connection.` for every takeover: its log is
the witness (no timing involved)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from edgeship import artifact
from edgeship.fleet.mqtt import credentials
from tests.mqtt.conftest import device, root_of, write_mqtt_fleet
from tests.mqtt.test_cli import run
from tests.mqtt.test_faults import wait_until
from tests.support.bundles import make_bundle

pytestmark = pytest.mark.integration

TAKEOVER = "already connected, closing old connection"


def _secret(files, user: str) -> str:
    return (files.secrets_dir / f"{user}.password").read_text().strip()


def _log(broker) -> str:
    log = broker.workdir / "mosquitto.log"
    return log.read_text(errors="replace") if log.exists() else ""


def test_two_managers_and_a_status_call_stay_connected(tmp_path, mosquitto_broker, make_service, make_transport, keys):
    files = credentials.write_credentials(tmp_path / "creds", ["cam-01"])
    broker = mosquitto_broker(broker_conf=files.broker_conf)
    make_service(broker.url, "cam-01", username="cam-01", password=_secret(files, "cam-01")).start() \
        .client.wait_connected(10)
    first = make_transport(broker.url, username="manager", password=_secret(files, "manager"))
    first.status(device("cam-01"))  # connected and synced
    second = make_transport(broker.url, username="manager", password=_secret(files, "manager"),
                            store_dir=str(tmp_path / "manager-2"))
    second.status(device("cam-01"))
    fleet = write_mqtt_fleet(tmp_path / "fleet.yaml", "lab", broker.url, keys[1], ["cam-01"],
                             username="manager", password_file=str(files.secrets_dir / "manager.password"))
    res = run("fleet", "status", str(fleet))  # a third manager process while both are connected
    assert res.returncode == 0, res.stdout + res.stderr
    assert "online" in res.stdout.splitlines()[1], res.stdout
    for manager in (first, second):  # a round trip through the broker after the CLI came and went
        manager.manager.sync()
    assert TAKEOVER not in _log(broker), _log(broker)
    assert first.manager.client.connects == 1 and second.manager.client.connects == 1


def test_two_reconcile_replicas_and_status_calls_converge(tmp_path, mosquitto_broker, make_service, keys):
    """Two `edgeship reconcile` replicas (sharing the journal and its leases) drive a rollout to MQTT devices
    while `fleet status` and `rollout status` run: the rollout converges and no manager connection is taken over."""
    ids = ["cam-01", "cam-02", "cam-03"]
    files = credentials.write_credentials(tmp_path / "creds", ids)
    broker = mosquitto_broker(broker_conf=files.broker_conf)
    for dev in ids:
        make_service(broker.url, dev, username=dev, password=_secret(files, dev)).start().client.wait_connected(10)
    repo = tmp_path / "gitops"
    repo.mkdir()
    fleet = write_mqtt_fleet(repo / "fleet.yaml", "lab", broker.url, keys[1], ids, username="manager",
                             password_file=str(files.secrets_dir / "manager.password"), timeout_s=120)
    bundle = make_bundle(tmp_path, "tiny", seed=71)
    digest = artifact.bundle_digest(bundle)
    (repo / "rollout.yaml").write_text(
        "apiVersion: edgeship/v1\nkind: Rollout\nmetadata: {name: tiny-ha}\nfleet: fleet.yaml\n"
        f"artifact: {{path: {bundle}}}\nstrategy: {{canary: {{count: 1}}, waves: [100], max_unavailable: 1}}\n")

    replicas = []
    try:
        for name in ("replica-a", "replica-b"):
            env = dict(os.environ, EDGESHIP_MANAGER_NAME=name)  # one EDGESHIP_HOME: a shared journal and leases
            log = open(tmp_path / f"{name}.log", "w")
            replicas.append(subprocess.Popen(
                [sys.executable, "-m", "edgeship", "reconcile", str(repo), "--interval", "1"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        wait_until(lambda: _log(broker).count("u'manager'") >= 2, 60, "both replicas to connect")
        for _ in range(2):  # status calls while the replicas work
            res = run("fleet", "status", str(fleet), timeout=60)
            assert res.returncode == 0, res.stdout + res.stderr
            res = run("rollout", "status", "tiny-ha", timeout=60)
            assert res.returncode == 0, res.stdout + res.stderr
        wait_until(lambda: all(_current(tmp_path, d) == digest for d in ids), 180, "every device on the release")
        res = run("fleet", "status", str(fleet), timeout=60)
        assert res.returncode == 0 and res.stdout.count("online") == len(ids), res.stdout + res.stderr
    finally:
        for proc in replicas:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
    assert TAKEOVER not in _log(broker), "\n".join(line for line in _log(broker).splitlines() if TAKEOVER in line)


def _current(tmp_path, device_id: str) -> str | None:
    from edgeship.fleet.agent import Agent
    from edgeship.fleet.agent_config import AgentConfig

    return Agent(root_of(tmp_path, device_id), AgentConfig()).status()["current"]
