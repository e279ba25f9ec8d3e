"""The local transport and `edgeship deploy` over a fleet of device folders (real agent in-process)."""

from __future__ import annotations

import json

import yaml

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet.agent_config import AgentConfig, SmokeConfig, write_config
from edgeship.fleet.inventory import load_fleet
from edgeship.fleet.transports import get_transport, transport_class
from edgeship.fleet.transports.local import LocalTransport
from tests.fleet.fleet_helpers import tampered_copy
from tests.support.bundles import make_bundle, signing_keys


def write_fleet(tmp_path, ids=("cam-01", "cam-02", "cam-03")):
    _, pub = signing_keys(tmp_path)
    doc = {"apiVersion": "edgeship/v1", "kind": "Fleet", "metadata": {"name": "lab"},
           "trust": {"public_keys": [str(pub)]},
           "devices": [{"id": d, "transport": "local", "address": f"devices/{d}",
                        "labels": {"site": "lab", "ring": "canary" if i == 0 else "main"}} for i, d in enumerate(ids)]}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_registry_resolves_local_and_shares_instances(tmp_path):
    fleet = load_fleet(write_fleet(tmp_path))
    assert transport_class("local") is LocalTransport
    a, b = (get_transport(fleet, d) for d in fleet.devices[:2])
    assert a is b


def test_push_is_idempotent_and_activate_runs_the_agent(tmp_path):
    fleet = load_fleet(write_fleet(tmp_path))
    device = fleet.devices[0]
    transport = get_transport(fleet, device)
    bundle = make_bundle(tmp_path, "kws", seed=1)
    digest = artifact.bundle_digest(bundle)
    first = transport.push(device, bundle)
    assert not first.skipped and first.bytes_sent == bundle.stat().st_size
    assert transport.push(device, bundle).skipped  # already in incoming/
    result = transport.activate(device, digest)
    assert result.ok and result.device_id == "cam-01"
    assert transport.push(device, bundle).skipped  # now unpacked in releases/
    state = transport.status(device)
    assert state.online and state.current == digest and state.disk_bytes > 0
    second = make_bundle(tmp_path, "kws", seed=2)
    transport.push(device, second)
    assert transport.activate(device, artifact.bundle_digest(second)).ok
    back = transport.rollback(device)
    assert back.ok and transport.status(device).current == digest


def test_status_of_a_never_deployed_device_is_empty_not_offline(tmp_path):
    """A local device is a folder the manager creates on first push: before that it is empty."""
    fleet = load_fleet(write_fleet(tmp_path, ids=("ghost",)))
    (tmp_path / "devices").mkdir(exist_ok=True)
    state = get_transport(fleet, fleet.devices[0]).status(fleet.devices[0])
    assert state.online and state.current is None


def test_deploy_command_prints_table_and_exit_codes(tmp_path, capsys):
    fleet_path = write_fleet(tmp_path)
    bundle = make_bundle(tmp_path, "kws", seed=3)
    assert main(["deploy", str(bundle), "--fleet", str(fleet_path), "--parallel", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count(" ok ") == 3 and "DEVICE" in captured.out
    assert "] 3/3 devices, 0 failed" in captured.err  # the progress bar (one line per device off a tty)
    # one device whose smoke test cannot pass: deploy fails, the others' release stays running
    root = tmp_path / "devices" / "cam-02"
    write_config(root, AgentConfig(trusted_keys=[signing_keys(tmp_path)[1]], smoke=SmokeConfig(max_latency_ms=0.000001)))
    second = make_bundle(tmp_path, "kws", seed=4)
    assert main(["deploy", str(second), "--fleet", str(fleet_path), "--json"]) == 1
    captured = capsys.readouterr()
    rows = {r["device_id"]: r for r in json.loads(captured.out)}
    assert rows["cam-02"]["reason"] == "smoke-failed" and rows["cam-01"]["ok"] and rows["cam-03"]["ok"]
    assert "1 of 3 device(s) failed: cam-02 (smoke-failed)" in captured.err
    fleet = load_fleet(fleet_path)
    assert get_transport(fleet, fleet.device("cam-02")).status(fleet.device("cam-02")).current == artifact.bundle_digest(bundle)


def test_deploy_select_and_refusals(tmp_path, capsys):
    fleet_path = write_fleet(tmp_path)
    bundle = make_bundle(tmp_path, "kws", seed=5)
    assert main(["deploy", str(bundle), "--fleet", str(fleet_path), "--select", "ring=canary", "--json", "--no-progress"]) == 0
    assert [r["device_id"] for r in json.loads(capsys.readouterr().out)] == ["cam-01"]
    assert main(["deploy", str(bundle), "--fleet", str(fleet_path), "--select", "ring=nope"]) == 2
    assert "no device" in capsys.readouterr().err
    evil = tampered_copy(bundle, tmp_path / "evil.tar")
    assert main(["deploy", str(evil), "--fleet", str(fleet_path)]) == 1
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err and err.count("\n") == 1
    assert main(["deploy", str(tmp_path / "missing.tar"), "--fleet", str(fleet_path)]) == 2


def test_deploy_accepts_an_artifact_folder(tmp_path, capsys):
    fleet_path = write_fleet(tmp_path, ids=("cam-09",))
    bundle = make_bundle(tmp_path, "kws", seed=6)
    folder = bundle.with_suffix("")  # make_bundle leaves the folder beside the tar
    assert folder.is_dir()
    assert main(["deploy", str(folder), "--fleet", str(fleet_path), "--no-progress"]) == 0
    assert artifact.short(artifact.bundle_digest(bundle)) in capsys.readouterr().out


def test_two_managers_pushing_to_one_device_do_not_share_an_upload(tmp_path, monkeypatch):
    """Manager B (another state folder) copies the whole bundle while manager A is half way through
    its own copy: both finish and the staged bundle is whole."""
    import shutil

    from edgeship.fleet.transports import local

    fleet_path = write_fleet(tmp_path, ids=("cam-01",))
    monkeypatch.setenv("EDGESHIP_HOME", str(tmp_path / "manager-a"))
    a = LocalTransport(load_fleet(fleet_path))
    monkeypatch.setenv("EDGESHIP_HOME", str(tmp_path / "manager-b"))
    b = LocalTransport(load_fleet(fleet_path))
    bundle = make_bundle(tmp_path, "kws", seed=40, pad_kb=1024)
    copy = shutil.copyfileobj
    pushed_by_b = []

    def a_copies_half_then_b_pushes(src, dst, length=0):
        if pushed_by_b:  # B's own copy
            return copy(src, dst, length)
        half = bundle.stat().st_size // 2
        dst.write(src.read(half))
        dst.flush()
        pushed_by_b.append("running")
        pushed_by_b[0] = b.push(b.fleet.devices[0], bundle)
        return copy(src, dst, length)

    monkeypatch.setattr(local.shutil, "copyfileobj", a_copies_half_then_b_pushes)
    pushed = a.push(a.fleet.devices[0], bundle)
    assert not pushed.skipped and not pushed_by_b[0].skipped
    staged = tmp_path / "devices" / "cam-01" / "incoming" / f"{artifact.bundle_digest(bundle).split(':')[1]}.tar"
    assert artifact.sha256_file(staged) == artifact.sha256_file(bundle)
    assert a.activate(a.fleet.devices[0], artifact.bundle_digest(bundle)).ok
