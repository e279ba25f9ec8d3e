"""pause / resume / abort / rollback, on_failure: pause, soak, plan errors, reconcile (folder and git)."""

from __future__ import annotations

import pytest

import subprocess
import threading
import time

import yaml

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet.agent_config import CONFIG_NAME
from edgeship.fleet.rollout.journal import Journal
from rollout_kit import current_of, device_ids, make_bundle, make_failing, write_local_fleet, write_rollout

pytestmark = pytest.mark.usefixtures("state_store")  # the same tests on SQLite and on PostgreSQL


def test_pause_on_gate_then_fix_resume_and_roll_back(tmp_path, capsys):
    ids = device_ids(8)
    fleet = write_local_fleet(tmp_path, ids)
    v1, v2 = make_bundle(tmp_path, "kws", seed=1), make_bundle(tmp_path, "kws", seed=2)
    d1, d2 = artifact.bundle_digest(v1), artifact.bundle_digest(v2)
    base = {"canary": {"count": 2}, "waves": [100], "max_unavailable": 4}
    assert main(["apply", str(write_rollout(tmp_path, "v1", fleet, v1, base))]) == 0
    make_failing(tmp_path, [ids[1]])
    r2 = write_rollout(tmp_path, "v2", fleet, v2, {**base, "on_failure": "pause"})
    capsys.readouterr()
    assert main(["apply", str(r2)]) == 1
    assert "belong to another rollout" in capsys.readouterr().err  # v1 owns the devices
    assert main(["apply", str(r2), "--take-over"]) == 1
    err = capsys.readouterr().err
    assert "rollout v2 paused: gate failed at canary" in err
    assert current_of(tmp_path, ids[0]) == d2 and current_of(tmp_path, ids[1]) == d1  # paused: nothing rolled back
    assert all(current_of(tmp_path, d) == d1 for d in ids[2:])

    assert main(["apply", str(r2)]) == 1  # a paused rollout is not restarted behind the operator's back
    assert "is paused" in capsys.readouterr().err

    (tmp_path / "devices" / ids[1] / CONFIG_NAME).unlink()  # the operator fixes the device
    assert main(["rollout", "resume", "v2"]) == 0
    assert "Rollout v2: done" in capsys.readouterr().out
    assert all(current_of(tmp_path, d) == d2 for d in ids)
    with Journal() as j:
        assert len(j.runs("v2")) == 1
        counts = j.push_counts("v2")  # the device that refused v2 discarded it: the retry sent it again
        assert counts.pop((ids[1], d2)) == 2 and set(counts.values()) == {1}

    assert main(["rollout", "rollback", "v2"]) == 0
    assert "rolled back 8 device(s)" in capsys.readouterr().out
    assert all(current_of(tmp_path, d) == d1 for d in ids)
    assert main(["rollout", "status", "v2", "--json"]) == 0
    assert '"state": "rolled-back"' in capsys.readouterr().out
    assert main(["plan", str(r2)]) == 1  # the journal says v1 now: a change, not drift
    assert "8 to change (0 drifted)" in capsys.readouterr().out


def test_operator_pause_during_soak_then_resume_and_abort(tmp_path, capsys):
    ids = device_ids(6)
    fleet = write_local_fleet(tmp_path, ids)
    v1 = make_bundle(tmp_path, "kws", seed=1)
    r1 = write_rollout(tmp_path, "soaky", fleet, v1, {"canary": {"count": 1}, "waves": [50, 100], "max_unavailable": 2,
                                                      "gate": {"soak_s": 30}})
    codes = []
    worker = threading.Thread(target=lambda: codes.append(main(["apply", str(r1)])))
    worker.start()
    with Journal() as j:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not j.wave_results(1, 0):
            time.sleep(0.05)
        assert j.wave_results(1, 0), "the canary never activated"
    assert main(["rollout", "pause", "soaky"]) == 0
    worker.join(60)
    assert codes == [1]
    out, err = capsys.readouterr()
    assert "paused by an operator" in err
    assert sum(current_of(tmp_path, d) is not None for d in ids) == 1  # only the canary moved

    assert main(["rollout", "abort", "soaky"]) == 0
    assert main(["rollout", "resume", "soaky"]) == 1  # aborted is final for this run
    assert "not paused" in capsys.readouterr().err
    with Journal() as j:
        assert j.rollout("soaky").state == "aborted"


def test_plan_exit_2_on_errors(tmp_path, capsys):
    bad = tmp_path / "r.yaml"
    bad.write_text("apiVersion: edgeship/v1\nkind: Rollout\nmetadata: {name: r}\nfleet: nowhere.yaml\nartifact: {path: x.tar}\n")
    assert main(["plan", str(bad)]) == 2
    assert "r.yaml:4:" in capsys.readouterr().err
    (tmp_path / "garbage.yaml").write_text(": : :\n\t-")
    assert main(["plan", str(tmp_path / "garbage.yaml")]) == 2
    assert main(["rollout", "status", "nobody"]) == 1
    assert "no rollout named 'nobody'" in capsys.readouterr().err


def test_reconcile_folder_applies_changes_and_drift(tmp_path, capsys):
    ids = device_ids(5)
    repo = tmp_path / "gitops"
    repo.mkdir()
    fleet = write_local_fleet(tmp_path, ids, folder=repo)
    v1, v2 = make_bundle(tmp_path, "kws", seed=1), make_bundle(tmp_path, "kws", seed=2)
    d1, d2 = artifact.bundle_digest(v1), artifact.bundle_digest(v2)
    rollout = write_rollout(repo, "kws", fleet.name, v1, {"canary": {"count": 1}, "max_unavailable": 5})
    assert main(["reconcile", str(repo), "--once"]) == 0
    assert "1 applied, 0 unchanged" in capsys.readouterr().err
    assert all(current_of(tmp_path, d) == d1 for d in ids)
    assert main(["reconcile", str(repo), "--once"]) == 0
    assert "0 applied, 1 unchanged" in capsys.readouterr().err

    doc = yaml.safe_load(rollout.read_text())
    doc["artifact"]["path"] = str(v2)
    rollout.write_text(yaml.safe_dump(doc))
    assert main(["reconcile", str(repo), "--once"]) == 0
    assert all(current_of(tmp_path, d) == d2 for d in ids)

    from edgeship.fleet.inventory import load_fleet
    from edgeship.fleet.transports import get_transport
    fl = load_fleet(fleet)
    t = get_transport(fl, fl.device(ids[2]))
    assert t.rollback(fl.device(ids[2])).ok  # someone rolled a device back by hand
    capsys.readouterr()
    assert main(["reconcile", str(repo), "--once"]) == 0
    assert "1 applied" in capsys.readouterr().err and current_of(tmp_path, ids[2]) == d2


def test_reconcile_refuses_two_rollouts_fighting_over_a_device(tmp_path, capsys):
    ids = device_ids(3)
    repo = tmp_path / "gitops"
    repo.mkdir()
    fleet = write_local_fleet(tmp_path, ids, folder=repo)
    v1, v2 = make_bundle(tmp_path, "kws", seed=1), make_bundle(tmp_path, "kws", seed=2)
    write_rollout(repo, "a-first", fleet.name, v1, {"canary": {"count": 0}})
    write_rollout(repo, "b-second", fleet.name, v2, {"canary": {"count": 0}})
    assert main(["reconcile", str(repo), "--once"]) == 1
    err = capsys.readouterr().err
    assert "b-second: device dev-000 is also selected by rollout a-first" in err and "1 applied" in err
    assert all(current_of(tmp_path, d) == artifact.bundle_digest(v1) for d in ids)


def test_reconcile_git_branch(tmp_path, capsys):
    ids = device_ids(3)
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    fleet = write_local_fleet(tmp_path, ids, folder=repo)
    v1 = make_bundle(tmp_path, "kws", seed=1)
    write_rollout(repo, "kws", fleet.name, v1, {"canary": {"count": 1}})
    (repo / "notes.yaml").write_text("just: data\n")  # not a manifest of ours: ignored
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "kws v1"], check=True)
    assert main(["reconcile", str(repo), "--branch", "main", "--once"]) == 0
    err = capsys.readouterr().err
    assert "1 applied" in err
    assert all(current_of(tmp_path, d) == artifact.bundle_digest(v1) for d in ids)
    assert main(["reconcile", str(repo), "--branch", "nope", "--once"]) == 1
    assert "nope" in capsys.readouterr().err


def test_one_apply_per_rollout_at_a_time(tmp_path, capsys, state_store, monkeypatch):
    ids = device_ids(2)
    fleet = write_local_fleet(tmp_path, ids)
    r1 = write_rollout(tmp_path, "solo", fleet, make_bundle(tmp_path, "kws", seed=1))
    monkeypatch.setenv("EDGESHIP_MANAGER_NAME", "other-manager")
    with Journal() as journal, journal.lease("solo"):  # as another manager process holding the rollout would
        monkeypatch.setenv("EDGESHIP_MANAGER_NAME", "this-manager")
        assert main(["apply", str(r1)]) == 1
    err = capsys.readouterr().err
    if state_store == "sqlite":
        assert "another apply of this rollout is running" in err
    else:
        assert "solo: driven by manager other-manager" in err and "taken over" in err
    assert main(["apply", str(r1)]) == 0
