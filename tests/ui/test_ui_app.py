"""The dashboard's pages, access token and routes, in-process (Starlette's TestClient) against real
local fleets and real rollouts; and the `edgeship ui` command as a process (token printed, never
logged)."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request

import pytest

from edgeship import artifact
from edgeship.cli import main
from edgeship.errors import UsageError
from tests.rollout.rollout_kit import make_bundle, make_failing, write_rollout
from tests.support.bundles import signing_keys
from tests.support.require import require_module
from tests.ui.ui_kit import fleet_mid_rollout_setup, start_ui, stop

TOKEN = "k" * 20 + "-secret-token-value"


def _client(fleets, token=None, allowed_hosts=None):
    require_module("starlette")
    require_module("httpx2")
    from starlette.testclient import TestClient

    from edgeship.ui.app import create_app
    from edgeship.ui.snapshots import SnapshotStore
    from edgeship.ui.source import StateSource

    store = SnapshotStore(StateSource(fleets))
    return TestClient(create_app(store, token=token, allowed_hosts=allowed_hosts), follow_redirects=False), store


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESHIP_SIGNING_KEY", str(signing_keys(tmp_path)[0]))
    return fleet_mid_rollout_setup(tmp_path, devices=6, soak_s=0)


def test_failed_gate_and_rollback_are_shown(tmp_path, setup):
    fleet, rollout = setup
    assert main(["apply", str(rollout)]) == 0  # v1 everywhere: something to roll back to
    v2_bundle = make_bundle(tmp_path, "kws-next", seed=2)  # another pipeline: no anti-rollback floor to meet
    v2 = write_rollout(tmp_path, "kws-v2", fleet, v2_bundle,
                       {"canary": {"count": 1}, "waves": [50, 100]})
    make_failing(tmp_path, ["edge-002"])  # in wave 1: its smoke test really fails, the gate fails
    assert main(["apply", str(v2), "--take-over"]) == 1
    client, store = _client([fleet])
    with client:
        page = client.get("/rollouts/kws-v2").text
        fleet_page = client.get("/").text
        listing = client.get("/rollouts").text
    store.stop()
    assert re.search(r'class="badge s-failed">failed<', page)
    assert 'data-wave="0" data-status="passed"' in page
    assert 'data-wave="1" data-status="failed"' in page
    assert "Gate FAILED: success ratio" in page and "edge-002 (smoke-failed)" in page
    assert re.search(r"<b>1</b> rolled back", page)  # edge-001 switched, then went back to v1
    wave1 = page.split('data-wave="1"', 1)[1].split("</article>", 1)[0]
    assert "pending" not in wave1  # its two devices: one failed, one rolled back
    assert ">rollback<" in page  # the timeline lists the rollback step
    assert 'data-device="edge-002" data-health="failed"' in fleet_page
    for left_behind in ("edge-001", "edge-003", "edge-004", "edge-005"):  # rolled back, or never reached
        assert f'data-device="{left_behind}" data-health="out-of-sync"' in fleet_page
    assert 'data-rollout="kws-v2" data-state="failed"' in listing
    v2_digest = artifact.bundle_digest(v2_bundle)  # a tar outside the store: named from its bundle.json
    assert f"kws-next@{artifact.short(v2_digest)}</span>" in page


def test_pages_partials_and_not_found(setup):
    fleet, rollout = setup
    assert main(["apply", str(rollout)]) == 0
    client, store = _client([fleet])
    with client:
        full = client.get("/rollouts/kws-v1")
        partial = client.get("/rollouts/kws-v1", headers={"X-Partial": "1"})
        builds = client.get("/builds").text
        missing = client.get("/rollouts/nope")
        css = client.get("/static/style.css")
        report_link = re.search(r'href="(/artifacts/[0-9a-f]{64}/report.html)"', builds).group(1)
        report = client.get(report_link)
        bad = [client.get(p).status_code for p in ("/artifacts/abc/report.html", "/artifacts/..%2F..%2Fetc/report.html",
                                                     "/artifacts/" + "0" * 64 + "/report.html")]
        posted = client.post("/rollouts/kws-v1")
        rows = {query: len(re.findall(r"<tr data-device=", client.get("/" + query).text))
                for query in ("", "?health=healthy", "?health=failed", "?q=ring%3Dcanary", "?q=EDGE-00&health=healthy",
                              "?health=bogus")}
    store.stop()
    assert rows == {"": 6, "?health=healthy": 6, "?health=failed": 0, "?q=ring%3Dcanary": 1,
                    "?q=EDGE-00&health=healthy": 6, "?health=bogus": 6}
    assert full.status_code == 200 and full.text.startswith("<!doctype html>")
    assert "script-src 'self'" in full.headers["content-security-policy"]
    assert partial.status_code == 200 and "<html" not in partial.text and 'class="wave' in partial.text
    assert re.search(r'<td class="detail">\d+\.\d KiB</td>', full.text)  # each push's bytes in the timeline
    assert missing.status_code == 404 and "no rollout named" in missing.text
    assert css.status_code == 200
    assert report.status_code == 200 and "sandbox" in report.headers["content-security-policy"]
    assert bad == [404, 404, 404]
    assert posted.status_code == 405  # read-only: no route takes a write


def test_token_header_cookie_and_sign_in(setup):
    fleet, _ = setup
    client, store = _client([fleet], token=TOKEN)
    with client:
        assert client.get("/").status_code == 401
        assert client.get("/", headers={"Authorization": "Bearer " + "x" * len(TOKEN)}).status_code == 401
        assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        sign_in = client.get(f"/rollouts?token={TOKEN}&x=1")
        assert sign_in.status_code == 303
        assert sign_in.headers["location"] == "/rollouts?x=1"  # the token leaves the URL
        assert "HttpOnly" in sign_in.headers["set-cookie"] and "SameSite=Strict" in sign_in.headers["set-cookie"]
        assert client.get("/rollouts").status_code == 200  # the cookie now
        client.cookies.clear()
        assert client.get("/events").status_code == 401
    store.stop()


def test_loopback_server_refuses_other_host_names(setup):
    from edgeship.ui.server import LOOPBACK_NAMES

    fleet, _ = setup
    client, store = _client([fleet], allowed_hosts=LOOPBACK_NAMES)
    with client:
        assert client.get("/", headers={"Host": "evil.example:8765"}).status_code == 400  # DNS rebinding
        assert client.get("/", headers={"Host": "127.0.0.1:8765"}).status_code == 200
        assert client.get("/", headers={"Host": "[::1]:8765"}).status_code == 200
    store.stop()


def test_token_resolution():
    from edgeship.ui.auth import TOKEN_ENV, resolve_token

    assert resolve_token("127.0.0.1", {}) == (None, False)
    assert resolve_token("::1", {}) == (None, False)
    token, generated = resolve_token("0.0.0.0", {})
    assert generated and len(token) >= 40
    assert resolve_token("0.0.0.0", {TOKEN_ENV: TOKEN}) == (TOKEN, False)
    assert resolve_token("127.0.0.1", {TOKEN_ENV: TOKEN}) == (TOKEN, False)  # asked for: required on loopback too
    with pytest.raises(UsageError, match="too short"):
        resolve_token("0.0.0.0", {TOKEN_ENV: "short"})


def _get(url: str, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_server_beyond_loopback_prints_a_token_and_never_logs_it(tmp_path, setup):
    fleet, _ = setup
    ui, url, line = start_ui(fleet, tmp_path / "ui.log", extra=["--host", "0.0.0.0"])
    token = re.search(r"\?token=(\S+)", line).group(1)
    local = url.replace("0.0.0.0", "127.0.0.1")  # test traffic stays on loopback
    try:
        assert _get(local)[0] == 401
        assert _get(local, {"Authorization": f"Bearer {token}"})[0] == 200
        assert _get(f"{local}rollouts?token={token}")[0] == 401  # redirected without it; urllib keeps no cookie
    finally:
        stop(ui)
        rest = ui.stdout.read()
    assert token not in rest  # printed once, on the line that says where to sign in
    assert token not in (tmp_path / "ui.log").read_text()


def test_server_with_env_token_keeps_it_out_of_its_output(tmp_path, setup):
    fleet, _ = setup
    env = dict(os.environ, EDGESHIP_UI_TOKEN=TOKEN)
    ui, url, line = start_ui(fleet, tmp_path / "ui.log", env=env)
    assert TOKEN not in line
    try:
        assert _get(url)[0] == 401
        status, body = _get(url + "metrics", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and "edgeship_devices" in body
        status, body = _get(f"{url}?token={TOKEN}")  # signs in (cookie) and is redirected; urllib drops the cookie
        assert status == 401
    finally:
        stop(ui)
        rest = ui.stdout.read()
    assert TOKEN not in rest
    assert TOKEN not in (tmp_path / "ui.log").read_text()


def test_command_errors_are_one_line(tmp_path, capsys):
    import socket

    assert main(["ui", "--fleet", str(tmp_path / "nope.yaml")]) == 2
    assert main(["ui", "--port", "70000"]) == 2
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        assert main(["ui", "--port", str(busy.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[0:2] for line in err] == [["edgeship", " error"]] * 3, err
    assert "no such file" in err[0] and "not a port number" in err[1] and "cannot listen on 127.0.0.1" in err[2]


def test_devices_are_asked_at_most_every_status_interval(tmp_path, setup):
    import shutil

    from edgeship.ui.source import StateSource

    fleet, rollout = setup
    assert main(["apply", str(rollout)]) == 0
    patient, eager = StateSource([fleet], status_interval=3600), StateSource([fleet], status_interval=0)
    try:
        def current(source):
            return {d.id: d.current for d in source.snapshot().devices}["edge-000"]

        running = current(patient)
        assert running is not None and current(eager) == running
        shutil.rmtree(tmp_path / "devices" / "edge-000")  # the device now holds nothing
        assert current(patient) == running  # not asked again within the hour
        assert current(eager) is None
    finally:
        patient.close()
        eager.close()


def test_rollout_whose_manifest_is_gone_shows_the_journal(tmp_path, setup):
    fleet, rollout = setup
    assert main(["apply", str(rollout)]) == 0
    rollout.unlink()
    client, store = _client([fleet])
    with client:
        page = client.get("/rollouts/kws-v1").text
    store.stop()
    assert "Waves read from the journal" in page and "rollout kws-v1:" in page
    assert [m for m in re.findall(r'data-wave="(\d+)" data-status="(\w+)"', page)] == \
        [("0", "passed"), ("1", "passed"), ("2", "passed")]
    assert "wave 1 (50%)" in page  # names as the gates recorded them


def test_a_build_over_budget_shows_failed_with_its_reason(tmp_path):
    import yaml

    from edgeship.pipelines.manifest import load_documents
    from edgeship.pipelines.runner import Progress, build
    from tests.buildflow.models import tiny_mlp

    tiny_mlp(tmp_path / "mlp.onnx", batch=1)
    doc = {"apiVersion": "edgeship/v1", "kind": "Pipeline", "metadata": {"name": "too-slow"},
           "model": {"path": "mlp.onnx", "inputs": {"x": [1, 8]}}, "target": "host-cpu",
           "budget": {"latency_ms": {"p95": 0.000001}}, "quantization": {"mode": "none"}}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(doc))
    result = build(load_documents(tmp_path / "pipeline.yaml")[0], progress=Progress(quiet=True))
    assert not result.ok
    client, store = _client([])
    with client:
        page = client.get("/builds").text
    store.stop()
    assert re.search(r'<td class="strong">too-slow</td>\s*<td><span class="badge v-fail">failed</span>', page)
    assert "latency" in page.split("too-slow", 1)[1]  # the budget that failed, in the record's error


def test_a_device_changed_outside_edgeship_is_drifted(tmp_path, setup):
    from edgeship.fleet.inventory import load_fleet
    from edgeship.fleet.transports.local import LocalTransport

    fleet, rollout = setup
    assert main(["apply", str(rollout)]) == 0
    inventory = load_fleet(fleet)
    device, transport = inventory.device("edge-004"), LocalTransport(inventory)
    other = make_bundle(tmp_path, "hand-made", seed=3)
    transport.push(device, other)  # straight to the device: no journal, no rollout
    assert transport.activate(device, artifact.bundle_digest(other)).ok
    client, store = _client([fleet])
    with client:
        page = client.get("/").text
    store.stop()
    assert 'data-device="edge-004" data-health="drifted"' in page
    assert page.count('data-health="healthy"') == 5
