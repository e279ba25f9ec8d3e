"""Target binding: an artifact built for arm-ethos-u85 never reaches a host-cpu device. `plan` says so
per device (exit 2), `apply` sends nothing, and the agent refuses it against its own agent.yaml
`target` even when handed the bundle directly."""

from __future__ import annotations

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet.agent import Agent
from edgeship.fleet.agent_config import config_for_root
from edgeship.fleet.rollout.journal import Journal
from rollout_kit import device_ids, make_bundle, releases_of, signing_keys, write_local_fleet, write_rollout


def test_plan_apply_and_agent_refuse_an_artifact_for_another_target(tmp_path, capsys):
    ids = device_ids(3)
    fleet = write_local_fleet(tmp_path, ids)  # every device: target host-cpu
    ethos = make_bundle(tmp_path, "kws", seed=1, target="arm-ethos-u85", runtime="ethos-u")
    rollout = write_rollout(tmp_path, "kws-u85", fleet, ethos, {"canary": {"percent": 100}})

    assert main(["plan", str(rollout)]) == 2
    out, err = capsys.readouterr()
    refusals = [line for line in err.splitlines() if line.endswith(": refused")]
    assert len(refusals) == 3, err
    for device_id, line in zip(ids, refusals):
        assert line == (f"edgeship: error: {device_id}: artifact kws is built for arm-ethos-u85 (runtime ethos-u), "
                        "device target is host-cpu: refused")
    assert "wrong-target" in out and "3 refused (wrong target)" in out

    assert main(["apply", str(rollout)]) == 1
    err = capsys.readouterr().err
    assert sum(line.endswith(": refused") for line in err.splitlines()) == 3
    assert "nothing was sent" in err
    assert all(not releases_of(tmp_path, d) for d in ids)  # not a byte pushed
    with Journal() as j:
        assert j.steps("kws-u85") == []

    # the agent itself, against its own agent.yaml target
    root = tmp_path / "devices" / "direct"
    assert main(["agent", "init", "--root", str(root), "--trust", str(signing_keys(tmp_path)[1]),
                 "--target", "host-cpu"]) == 0
    capsys.readouterr()
    assert main(["agent", "activate", str(ethos), "--root", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[wrong-target]" in err[0] and "built for arm-ethos-u85" in err[0], err
    agent = Agent(root, config_for_root(root))
    assert agent.status()["current"] is None and agent.status()["releases"] == []
    # the same device takes the host-cpu build
    assert agent.activate(make_bundle(tmp_path, "kws", seed=2)).ok


def test_agent_without_target_is_legacy_and_says_so(tmp_path, capsys):
    root = tmp_path / "devices" / "old"
    assert main(["agent", "init", "--root", str(root), "--trust", str(signing_keys(tmp_path)[1])]) == 0
    assert "no target: artifacts built for any target are accepted" in capsys.readouterr().err
    agent = Agent(root, config_for_root(root))
    ethos = make_bundle(tmp_path, "kws", seed=1, target="arm-ethos-u85")
    assert agent.activate(ethos).ok  # legacy: not checked, as before
    assert artifact.bundle_digest(ethos) == agent.status()["current"]
