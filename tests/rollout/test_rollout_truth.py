"""A rollout's status follows its devices, and GitOps goes red while a rollout is not converged
(real local devices: the real agent and onnxruntime smoke tests)."""

from __future__ import annotations

import json

import yaml

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet.agent import Agent
from edgeship.fleet.agent_config import CONFIG_NAME, AgentConfig
from rollout_kit import current_of, device_ids, make_bundle, make_failing, signing_keys, write_local_fleet, write_rollout

STRATEGY = {"canary": {"count": 2}, "waves": [100], "max_unavailable": 2}


def _status(name, capsys) -> dict:
    capsys.readouterr()
    assert main(["rollout", "status", name, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_is_derived_from_the_fleet_not_only_the_last_run(tmp_path, capsys):
    ids = device_ids(3)
    fleet = write_local_fleet(tmp_path, ids)
    v1, v2 = make_bundle(tmp_path, "kws", seed=1), make_bundle(tmp_path, "kws", seed=2)
    d2 = artifact.bundle_digest(v2)
    assert main(["apply", str(write_rollout(tmp_path, "kws", fleet, v1, STRATEGY))]) == 0
    make_failing(tmp_path, [ids[1]])
    rollout = write_rollout(tmp_path, "kws", fleet, v2, STRATEGY)
    assert main(["apply", str(rollout)]) == 1
    status = _status("kws", capsys)
    assert (status["state"], status["sync"], status["health"]) == ("failed", "OutOfSync", "Degraded")
    assert sorted(status["live"]["elsewhere"]) == ids

    # the operator fixes the device and brings every device to v2 by hand, outside any run
    (tmp_path / "devices" / ids[1] / CONFIG_NAME).unlink()
    _, pub = signing_keys(tmp_path)
    for d in ids:
        assert Agent(tmp_path / "devices" / d, AgentConfig(trusted_keys=[pub]), device_id=d).activate(v2).ok
    status = _status("kws", capsys)
    assert (status["sync"], status["health"]) == ("Synced", "Healthy")  # the fleet, not the stale record
    assert main(["rollout", "status", "kws"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Rollout kws: Synced, Healthy: 3/3 device(s) on") and "last run" in out

    assert main(["apply", str(rollout)]) == 0  # nothing to change: recorded as a run that found the fleet converged
    assert "unchanged" in capsys.readouterr().out
    status = _status("kws", capsys)
    assert status["state"] == "done" and "already converged" in status["reason"]
    assert all(current_of(tmp_path, d) == d2 for d in ids)


def test_reconcile_once_is_red_while_a_rollout_is_not_converged(tmp_path, capsys):
    ids = device_ids(3)
    repo = tmp_path / "gitops"
    repo.mkdir()
    fleet = write_local_fleet(tmp_path, ids, folder=repo)
    v1, v2 = make_bundle(tmp_path, "kws", seed=1), make_bundle(tmp_path, "kws", seed=2)
    d1 = artifact.bundle_digest(v1)
    rollout = write_rollout(repo, "kws", fleet.name, v1, STRATEGY)
    assert main(["reconcile", str(repo), "--once"]) == 0
    make_failing(tmp_path, [ids[0]])
    doc = yaml.safe_load(rollout.read_text())
    doc["artifact"]["path"] = str(v2)
    rollout.write_text(yaml.safe_dump(doc))
    assert main(["reconcile", str(repo), "--once"]) == 1  # the change failed its gate
    capsys.readouterr()
    assert main(["reconcile", str(repo), "--once"]) == 1  # not retried, and still not deployed: still red
    assert "1 stopped (not converged)" in capsys.readouterr().err

    doc["artifact"]["path"] = str(v1)  # git revert
    rollout.write_text(yaml.safe_dump(doc))
    assert main(["reconcile", str(repo), "--once"]) == 0
    assert "1 unchanged" in capsys.readouterr().err
    status = _status("kws", capsys)
    assert (status["state"], status["sync"], status["health"]) == ("done", "Synced", "Healthy")
    assert all(current_of(tmp_path, d) == d1 for d in ids)
