"""Anti-rollback: a release counter per pipeline in the signed bundle.json; the agent refuses an
older release than it has run unless asked for an explicit rollback. Real signed bundles, the real
agent and its CLI."""

from __future__ import annotations

import json

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet.agent_config import write_config
from tests.fleet.fleet_helpers import agent_for
from tests.support.bundles import make_bundle


def test_an_older_validly_signed_release_is_refused(tmp_path):
    agent = agent_for(tmp_path)
    v1, v2 = make_bundle(tmp_path, "kws", seed=1, release=1), make_bundle(tmp_path, "kws", seed=2, release=2)
    d1, d2 = artifact.bundle_digest(v1), artifact.bundle_digest(v2)
    assert agent.activate(v1).ok and agent.activate(v2).ok
    result = agent.activate(v1)  # kept on disk, validly signed, older
    assert not result.ok and result.reason == "downgrade", result
    assert agent.status()["current"] == d2
    old = make_bundle(tmp_path, "kws", seed=0, release=0)  # never on the device
    result = agent.activate(old)
    assert not result.ok and result.reason == "downgrade"
    assert artifact.short(artifact.bundle_digest(old), 64) not in {p.name for p in agent.releases.iterdir()}

    assert agent.rollback().ok  # the explicit rollback goes back one release...
    assert agent.status()["current"] == d1
    assert agent.activate(v2).ok  # ...and forward again
    assert not agent.activate(old).ok  # but never below what the device has run
    assert agent.status()["current"] == d2


def test_release_counters_are_per_pipeline(tmp_path):
    agent = agent_for(tmp_path)
    assert agent.activate(make_bundle(tmp_path, "kws", seed=1, release=50)).ok
    assert agent.activate(make_bundle(tmp_path, "vad", seed=2, release=3)).ok  # another pipeline: its own counter
    result = agent.activate(make_bundle(tmp_path, "kws", seed=3, release=49))
    assert not result.ok and result.reason == "downgrade"


def test_cli_activate_of_an_older_bundle_fails_with_one_line(tmp_path, capsys):
    root = tmp_path / "devices" / "cli"
    write_config(root, agent_for(tmp_path, "cli").config)
    new, old = make_bundle(tmp_path, "kws", seed=2, release=20), make_bundle(tmp_path, "kws", seed=1, release=10)
    assert main(["agent", "activate", str(new), "--root", str(root)]) == 0
    capsys.readouterr()
    assert main(["agent", "activate", str(old), "--root", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[downgrade]" in err[0] and "Traceback" not in err[0]
    state = json.loads((root / "state.json").read_text())
    assert state["release_floor"] == {"kws": 20}
