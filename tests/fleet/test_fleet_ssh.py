"""The SSH transport against real sshd instances on loopback (3 devices), with real faults:
a link cut mid-upload, tampered and badly signed bundles, a failing smoke test, wrong and unknown
host keys, an agent size limit, a remote command that hangs."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import yaml

from edgeship import artifact
from edgeship.cli import main
from edgeship.errors import TransportError
from edgeship.fleet.agent import Agent
from edgeship.fleet.agent_config import AgentConfig, write_config
from edgeship.fleet.inventory import load_fleet
from edgeship.fleet.transports import close_transports, get_transport
from edgeship.fleet.transports.writer import part_name
from tests.fleet.fleet_helpers import bad_signature_bundle, tampered_copy
from tests.support.bundles import make_bundle, signing_keys
from tests.support.sshd import DroppingProxy, sshd_farm  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


@pytest.fixture
def farm(sshd_farm):  # noqa: F811
    """The module's sshd farm with every device root emptied (each test starts from blank devices)."""
    for dev in sshd_farm.devices:
        # A remote command the previous test timed out on may still be writing here: retry, bounded.
        for _ in range(50):
            shutil.rmtree(dev.root, ignore_errors=True)
            if not dev.root.exists():
                break
            time.sleep(0.1)
        dev.root.mkdir(exist_ok=True)
    return sshd_farm


@pytest.fixture
def fleet(farm, tmp_path):
    f = load_fleet(farm.write_fleet(tmp_path / "fleet.yaml", trust=[signing_keys(tmp_path)[1]]))
    yield f
    close_transports(f)


def _transport(fleet):
    return get_transport(fleet, fleet.devices[0])


def test_deploy_to_three_ssh_devices(farm, fleet, tmp_path, capsys):
    bundle = make_bundle(tmp_path, "kws", seed=1)
    digest = artifact.bundle_digest(bundle)
    assert main(["deploy", str(bundle), "--fleet", str(fleet.source), "--parallel", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok ") == 3, out
    for dev in farm.devices:
        assert Agent(dev.root).status()["current"] == digest  # the remote agent really switched
        assert (dev.root / "agent.yaml").is_file()  # provisioned on first contact with the fleet's trust
    # again: nothing to send, already current
    assert main(["deploy", str(bundle), "--fleet", str(fleet.source), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(r["push"]["skipped"] and r["message"] == "already current" for r in rows)


def test_status_and_rollback_over_ssh(fleet, tmp_path):
    device, transport = fleet.devices[1], _transport(fleet)
    first, second = make_bundle(tmp_path, "kws", seed=2), make_bundle(tmp_path, "kws", seed=3)
    for b in (first, second):
        transport.push(device, b)
        assert transport.activate(device, artifact.bundle_digest(b)).ok
    state = transport.status(device)
    assert state.online and state.current == artifact.bundle_digest(second)
    assert state.previous == artifact.bundle_digest(first) and state.disk_bytes > 0
    back = transport.rollback(device)
    assert back.ok and back.device_id == device.id
    assert transport.status(device).current == artifact.bundle_digest(first)


def test_connection_killed_mid_upload_resumes_and_checks_digest(farm, tmp_path):
    bundle = make_bundle(tmp_path, "big", seed=4, pad_kb=3072)
    size = bundle.stat().st_size
    target = farm.devices[2]
    proxy = DroppingProxy(target.port, drop_after=size // 2)
    try:
        known = tmp_path / "known_hosts_proxy"
        known.write_text(target.host_key_line().replace(f":{target.port} ", f":{proxy.port} "))
        doc = farm.fleet_document(trust=[signing_keys(tmp_path)[1]], known_hosts=str(known))
        doc["devices"] = [dict(doc["devices"][2], address=f"127.0.0.1:{proxy.port}")]
        path = tmp_path / "fleet-proxy.yaml"
        path.write_text(yaml.safe_dump(doc))
        fleet = load_fleet(path)
        device, transport = fleet.devices[0], _transport(fleet)
        pushed = transport.push(device, bundle)
        assert proxy.dropped == 1 and pushed.attempts >= 2
        assert 0 < pushed.resumed_from < size  # the second attempt appended, it did not start over
        assert pushed.bytes_sent < 2 * size
        staged = target.root / "incoming" / f"{artifact.bundle_digest(bundle).split(':')[1]}.tar"
        assert artifact.sha256_file(staged) == artifact.sha256_file(bundle)
        assert transport.activate(device, artifact.bundle_digest(bundle)).ok
        close_transports(fleet)
    finally:
        proxy.close()


def test_partial_upload_left_on_device_is_resumed(fleet, farm, tmp_path):
    bundle = make_bundle(tmp_path, "kws", seed=5, pad_kb=512)
    data = bundle.read_bytes()
    hexd = artifact.bundle_digest(bundle).split(":")[1]
    incoming = farm.devices[0].root / "incoming"
    incoming.mkdir(parents=True)
    (incoming / part_name(hexd, _transport(fleet).writer)).write_bytes(data[:100_000])  # this manager's own part
    pushed = _transport(fleet).push(fleet.devices[0], bundle)
    assert pushed.resumed_from == 100_000 and pushed.bytes_sent == len(data) - 100_000


def test_corrupt_partial_upload_is_detected_and_resent(fleet, farm, tmp_path):
    bundle = make_bundle(tmp_path, "kws", seed=6, pad_kb=256)
    data = bytearray(bundle.read_bytes())
    data[10] ^= 0xFF
    hexd = artifact.bundle_digest(bundle).split(":")[1]
    incoming = farm.devices[0].root / "incoming"
    incoming.mkdir(parents=True)
    (incoming / part_name(hexd, _transport(fleet).writer)).write_bytes(bytes(data[:50_000]))
    pushed = _transport(fleet).push(fleet.devices[0], bundle)
    assert pushed.attempts == 2  # first attempt's remote sha256 did not match: deleted and re-sent
    assert artifact.sha256_file(incoming / f"{hexd}.tar") == artifact.sha256_file(bundle)


@pytest.mark.parametrize("kind", ["tampered", "bad-signature"])
def test_tampered_and_badly_signed_bundles_are_rejected_remotely(fleet, farm, tmp_path, kind):
    device, transport = fleet.devices[0], _transport(fleet)
    good = make_bundle(tmp_path, "kws", seed=7)
    transport.push(device, good)
    assert transport.activate(device, artifact.bundle_digest(good)).ok
    bad = tampered_copy(make_bundle(tmp_path, "kws", seed=8), tmp_path / "evil.tar") if kind == "tampered" \
        else bad_signature_bundle(tmp_path)
    transport.push(device, bad)  # the manager-side check is bypassed on purpose: the device must refuse
    result = transport.activate(device, artifact.bundle_digest(bad))
    assert not result.ok and result.reason == kind and result.device_id == device.id
    assert transport.status(device).current == artifact.bundle_digest(good)


def test_failing_smoke_test_does_not_switch(fleet, tmp_path):
    device, transport = fleet.devices[1], _transport(fleet)
    good, bad = make_bundle(tmp_path, "kws", seed=9), make_bundle(tmp_path, "kws", seed=10, variant="nan")
    for b in (good, bad):
        transport.push(device, b)
    assert transport.activate(device, artifact.bundle_digest(good)).ok
    result = transport.activate(device, artifact.bundle_digest(bad))
    assert not result.ok and result.reason == "smoke-failed" and "non-finite" in result.message
    assert transport.status(device).current == artifact.bundle_digest(good)


def test_agent_size_limit_reports_disk_full(fleet, farm, tmp_path):
    device, transport = fleet.devices[2], _transport(fleet)
    write_config(farm.devices[2].root, AgentConfig(trusted_keys=[signing_keys(tmp_path)[1]], max_bundle_mb=0.01))
    bundle = make_bundle(tmp_path, "kws", seed=11, pad_kb=64)
    transport.push(device, bundle)
    result = transport.activate(device, artifact.bundle_digest(bundle))
    assert not result.ok and result.reason == "disk-full"
    assert transport.status(device).current is None


def test_wrong_host_key_is_refused_and_never_added(farm, tmp_path):
    victim = farm.devices[0]
    other = farm.devices[1]
    known = tmp_path / "known_hosts_wrong"
    known.write_text(other.host_key_line().replace(f":{other.port} ", f":{victim.port} "))
    before = known.read_text()
    fleet = load_fleet(farm.write_fleet(tmp_path / "f.yaml", trust=[signing_keys(tmp_path)[1]], known_hosts=str(known)))
    device = fleet.device(victim.id)
    with pytest.raises(TransportError) as info:
        get_transport(fleet, device).push(device, make_bundle(tmp_path, "kws", seed=12))
    assert "does not match" in str(info.value) and victim.id in str(info.value)
    assert known.read_text() == before
    assert not (victim.root / "incoming").exists()


def test_unknown_host_is_refused_by_deploy(farm, tmp_path, capsys):
    known = tmp_path / "known_hosts_partial"
    known.write_text(farm.devices[0].host_key_line())  # devices 1 and 2 unknown
    fleet_path = farm.write_fleet(tmp_path / "f.yaml", trust=[signing_keys(tmp_path)[1]], known_hosts=str(known))
    bundle = make_bundle(tmp_path, "kws", seed=13)
    assert main(["deploy", str(bundle), "--fleet", str(fleet_path), "--json", "--no-progress"]) == 1
    rows = {r["device_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[farm.devices[0].id]["ok"]
    for dev in farm.devices[1:]:
        assert rows[dev.id]["reason"] == "host-key" and "not in" in rows[dev.id]["message"]
    assert known.read_text() == farm.devices[0].host_key_line()


def test_settings_merge_fleet_then_device_options(farm, tmp_path):
    fleet = load_fleet(farm.write_fleet(tmp_path / "f.yaml", trust=[signing_keys(tmp_path)[1]], command_timeout_s=30, retries=2))
    device = fleet.devices[1]
    device.options["command_timeout_s"] = 5
    settings = get_transport(fleet, device).settings(device)
    assert settings["command_timeout_s"] == 5 and settings["retries"] == 2
    assert settings["host"] == "127.0.0.1" and settings["port"] == farm.devices[1].port
    assert settings["root"] == str(farm.devices[1].root)


def test_remote_command_timeout(farm, tmp_path):
    """A device busy past its command timeout (its agent lock held): the call is cut, not hung."""
    import fcntl

    fleet = load_fleet(farm.write_fleet(tmp_path / "f.yaml", trust=[signing_keys(tmp_path)[1]], command_timeout_s=1))
    device = fleet.devices[0]
    root = farm.devices[0].root
    with open(root / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(TransportError) as info:
            result = get_transport(fleet, device).activate(device, "sha256:" + "0" * 64)
            pytest.fail(f"no timeout: {result}")
    assert "timed out" in str(info.value) and info.value.reason == "timeout"
    close_transports(fleet)


def test_unreachable_device_is_reported_not_raised(farm, tmp_path, capsys):
    from tests.support.sshd import free_port

    doc = farm.fleet_document(trust=[signing_keys(tmp_path)[1]], retries=2, connect_timeout_s=2)
    doc["devices"] = [dict(doc["devices"][0], id="gone", address=f"127.0.0.1:{free_port()}")]
    path = tmp_path / "gone.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["deploy", str(make_bundle(tmp_path, "kws", seed=14)), "--fleet", str(path), "--json", "--no-progress"]) == 1
    row = json.loads(capsys.readouterr().out)[0]
    assert row["reason"] == "unreachable" and "after 2 attempts" in row["message"]
    fleet = load_fleet(path)
    state = get_transport(fleet, fleet.devices[0]).status(fleet.devices[0])
    assert not state.online and state.last_result["reason"] == "unreachable"
    close_transports(fleet)


def test_two_managers_pushing_to_one_device_do_not_share_an_upload(farm, tmp_path, monkeypatch):
    """Manager B (another state folder) uploads the whole bundle while manager A is half way through
    its own upload of it: both finish, and the staged bundle is whole."""
    from edgeship.fleet.transports.ssh import SshTransport

    fleet_path = farm.write_fleet(tmp_path / "fleet.yaml", trust=[signing_keys(tmp_path)[1]])
    monkeypatch.setenv("EDGESHIP_HOME", str(tmp_path / "manager-a"))
    a = SshTransport(load_fleet(fleet_path))
    monkeypatch.setenv("EDGESHIP_HOME", str(tmp_path / "manager-b"))
    b = SshTransport(load_fleet(fleet_path))
    device = a.fleet.devices[0]
    bundle = make_bundle(tmp_path, "kws", seed=40, pad_kb=2048)
    hexd = artifact.bundle_digest(bundle).split(":")[1]
    incoming = farm.devices[0].root / "incoming"
    seen = []

    def b_pushes_now(_n):
        if not seen:
            a_parts = {p.name: p.stat().st_size for p in incoming.glob("*.part")}
            seen.append(b.push(b.fleet.devices[0], bundle))
            seen.append((a_parts, {p.name: p.stat().st_size for p in incoming.glob("*.part")}))

    a.on_bytes = b_pushes_now
    try:
        pushed = a.push(device, bundle)
        b_result, (a_parts_before, parts_after_b) = seen
        assert not b_result.skipped and pushed.bytes_sent > 0 and pushed.attempts == 1
        # B neither resumed from, renamed nor deleted A's upload in progress
        assert a_parts_before and all(parts_after_b.get(name, -1) >= size for name, size in a_parts_before.items())
        assert artifact.sha256_file(incoming / f"{hexd}.tar") == artifact.sha256_file(bundle)
        assert not list(incoming.glob("*.part"))
        assert a.activate(device, artifact.bundle_digest(bundle)).ok
    finally:
        a.close()
        b.close()
