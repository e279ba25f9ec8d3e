"""Plan and apply against real local devices (real agent, real onnxruntime smoke tests)."""

from __future__ import annotations

import pytest

from edgeship.cli import main
from edgeship.fleet.rollout.journal import Journal
from rollout_kit import (current_of, device_ids, make_bundle, make_failing, releases_of, write_local_fleet,
                         write_rollout)
from edgeship import artifact

pytestmark = pytest.mark.usefixtures("state_store")  # the same tests on SQLite and on PostgreSQL


def _apply(path, capsys, *flags):
    code = main(["apply", str(path), *flags])
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_apply_idempotent_and_drift(tmp_path, capsys):
    ids = device_ids(12)
    fleet = write_local_fleet(tmp_path, ids)
    v1 = make_bundle(tmp_path, "kws", seed=1)
    d1 = artifact.bundle_digest(v1)
    rollout = write_rollout(tmp_path, "kws", fleet, v1, {"canary": {"count": 2}, "waves": [50, 100], "max_unavailable": 3})

    assert main(["plan", str(rollout)]) == 1
    out = capsys.readouterr().out
    assert out.count("push+activate") == 12 and "Plan: 12 to change (0 drifted), 0 unchanged, 12 selected." in out

    code, out, err = _apply(rollout, capsys)
    assert code == 0, err
    assert all(current_of(tmp_path, d) == d1 for d in ids)
    assert "gate canary: passed" in out and "Rollout kws: done" in out
    assert err.count("activate ok") == 12  # one live line per device event

    assert main(["plan", str(rollout)]) == 0  # nothing to change
    assert "Plan: 0 to change (0 drifted), 12 unchanged" in capsys.readouterr().out
    code, out, err = _apply(rollout, capsys)  # idempotent: pushes nothing
    assert code == 0 and "Rollout kws: unchanged; 0 bytes pushed" in out

    # drift: a device switched behind the manager's back shows as drift and apply re-converges it
    v0 = make_bundle(tmp_path, "kws", seed=0)
    from edgeship.fleet.inventory import load_fleet
    from edgeship.fleet.transports import get_transport
    fl = load_fleet(fleet)
    dev = fl.device(ids[5])
    t = get_transport(fl, dev)
    t.push(dev, v0)
    assert t.activate(dev, artifact.bundle_digest(v0)).ok
    assert main(["plan", str(rollout)]) == 1
    out = capsys.readouterr().out
    assert "drift" in out and "1 to change (1 drifted)" in out
    code, out, err = _apply(rollout, capsys)
    assert code == 0 and current_of(tmp_path, ids[5]) == d1
    assert "0 bytes pushed" in out  # the device still held the release: re-activated, nothing sent

    with Journal() as j:
        assert all(n == 1 for n in j.push_counts("kws").values())
    assert main(["rollout", "history", "kws", "--steps"]) == 0
    hist = capsys.readouterr().out
    assert "done" in hist and hist.count("activate") >= 13


def test_canary_gate_trips_rolls_back_and_leaves_the_rest(tmp_path, capsys):
    ids = device_ids(20)
    fleet = write_local_fleet(tmp_path, ids)
    v1, v2 = make_bundle(tmp_path, "kws", seed=1), make_bundle(tmp_path, "kws", seed=2)
    d1, d2 = artifact.bundle_digest(v1), artifact.bundle_digest(v2)
    strategy = {"canary": {"count": 5}, "waves": [50, 100], "max_unavailable": 2,
                "gate": {"min_success_ratio": 1.0}}
    assert main(["apply", str(write_rollout(tmp_path, "v1", fleet, v1, strategy))]) == 0
    capsys.readouterr()
    failing = [ids[1], ids[3]]  # inside the canary (the first 5 ids)
    make_failing(tmp_path, failing)
    r2 = write_rollout(tmp_path, "v2", fleet, v2, strategy)
    code, out, err = _apply(r2, capsys, "--take-over")
    assert code == 1
    assert "gate failed at canary" in err and "success ratio 0.60 < 1.00" in err and "smoke-failed" in err
    assert "rolled back 3 device(s)" in err
    assert all(current_of(tmp_path, d) == d1 for d in ids)  # canary rolled back, failed ones never switched
    hex2 = artifact.short(d2, 64)
    assert all(hex2 not in releases_of(tmp_path, d) for d in ids[5:])  # outside the canary: never pushed
    with Journal() as j:
        touched = {s["device"] for s in j.steps("v2")}
        assert touched == set(ids[:5])
        assert j.rollout("v2").state == "failed"
    assert main(["rollout", "status", "v2"]) == 0
    assert "failed" in capsys.readouterr().out
