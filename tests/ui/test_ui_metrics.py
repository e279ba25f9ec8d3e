"""/metrics: the Prometheus text a scrape gets, parsed with prometheus_client's own parser, against a
real local fleet after a real `edgeship apply`: devices by state and release, rollout progress,
gate results, transfer bytes and smoke latency per release add up to what the journal holds."""

from __future__ import annotations

import pytest

from edgeship.cli import main
from edgeship.fleet.rollout.journal import Journal
from tests.support.bundles import signing_keys
from tests.support.require import require_module
from tests.ui.ui_kit import TARGETS, fleet_mid_rollout_setup


def _client(fleet, token=None):
    require_module("starlette")
    require_module("httpx2")
    from starlette.testclient import TestClient

    from edgeship.ui.app import create_app
    from edgeship.ui.snapshots import SnapshotStore
    from edgeship.ui.source import StateSource

    store = SnapshotStore(StateSource([fleet]))
    return TestClient(create_app(store, token=token)), store


def _samples(text: str) -> dict[str, list]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, []).extend(family.samples)
    return out


@pytest.fixture()
def applied_fleet(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESHIP_SIGNING_KEY", str(signing_keys(tmp_path)[0]))
    fleet, rollout = fleet_mid_rollout_setup(tmp_path, devices=6, soak_s=0)
    assert main(["apply", str(rollout)]) == 0
    return fleet


def test_metrics_parse_and_add_up(applied_fleet):
    client, store = _client(applied_fleet)
    with client:
        resp = client.get("/metrics")
    snap = store.current()
    store.stop()
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    samples = _samples(resp.text)
    with Journal() as journal:
        row = journal.rollout("kws-v1")
        pushed = journal.bytes_pushed(row.run_id)
    release = snap.release_name(row.artifact_digest)  # the pipeline's name beside the short digest
    assert release.startswith("kws") and row.artifact_digest.split(":")[1][:12] in release

    devices = samples["edgeship_devices"]
    assert sum(s.value for s in devices) == 6
    assert [(s.labels["fleet"], s.labels["state"], s.labels["release"], s.value) for s in devices] == \
        [("lab", "healthy", release, 6.0)]
    progress = {s.labels["rollout"]: s.value for s in samples["edgeship_rollout_progress_ratio"]}
    assert progress == {"kws-v1": 1.0}
    state = {s.labels["state"]: s.value for s in samples["edgeship_rollout_state"]}
    assert state["done"] == 1.0 and sum(state.values()) == 1.0
    outcomes = {s.labels["outcome"]: s.value for s in samples["edgeship_rollout_devices"]}
    assert outcomes == {"activated": 6.0, "failed": 0.0, "rolled_back": 0.0, "pending": 0.0}
    gates = {s.labels["wave"]: s.value for s in samples["edgeship_gate_passed"]}
    assert gates == {"canary": 1.0, "wave 1 (50%)": 1.0, "wave 2 (100%)": 1.0}
    assert all(s.value == 1.0 for s in samples["edgeship_gate_success_ratio"])
    transfer = {s.name: s.value for s in samples["edgeship_transfer_bytes"]}
    assert transfer["edgeship_transfer_bytes_total"] == pushed > 0
    smoke = {(s.name, s.labels.get("le")): s.value for s in samples["edgeship_smoke_latency_ms"]
             if s.labels["release"] == release}
    assert smoke[("edgeship_smoke_latency_ms_count", None)] == 6
    assert smoke[("edgeship_smoke_latency_ms_bucket", "+Inf")] == 6
    assert smoke[("edgeship_smoke_latency_ms_sum", None)] > 0
    budgets = {s.labels["target"]: s.value for s in samples["edgeship_build_budget_passed"]}
    assert budgets == {target: 1.0 for target in TARGETS}


def test_metrics_need_the_token_when_one_is_set(applied_fleet):
    token = "t" * 40
    client, store = _client(applied_fleet, token=token)
    with client:
        assert client.get("/metrics").status_code == 401
        resp = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    store.stop()
    assert resp.status_code == 200 and "edgeship_devices" in resp.text
