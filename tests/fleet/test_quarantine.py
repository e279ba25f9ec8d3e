"""A kept (not current) release that fails verification is quarantined: never activated, no longer
counted as held, so the next push fetches it again; gc frees it. Real agent, local transport, and
the rollout engine through `edgeship apply`."""

from __future__ import annotations

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet.inventory import load_fleet
from edgeship.fleet.transports import close_transports, get_transport
from tests.fleet.fleet_helpers import agent_for, flip_a_byte
from tests.fleet.test_fleet_local import write_fleet
from tests.support.bundles import make_bundle
from tests.rollout.rollout_kit import write_rollout


def test_a_damaged_kept_release_is_quarantined_and_fetched_again(tmp_path):
    fleet = load_fleet(write_fleet(tmp_path, ids=("cam-01",)))
    dev = fleet.devices[0]
    transport = get_transport(fleet, dev)
    v1, v2 = make_bundle(tmp_path, "kws", seed=1), make_bundle(tmp_path, "kws", seed=2)
    d1, d2 = artifact.bundle_digest(v1), artifact.bundle_digest(v2)
    for bundle, digest in ((v1, d1), (v2, d2)):
        transport.push(dev, bundle)
        assert transport.activate(dev, digest).ok
    agent = transport.agent(dev)
    flip_a_byte(agent.releases / artifact.short(d1, 64) / "model.onnx")  # bit rot in the kept v1

    assert transport.push(dev, v1).skipped  # looks present...
    result = transport.activate(dev, d1)
    assert not result.ok and result.reason == "tampered" and "quarantined" in result.message
    assert transport.status(dev).current == d2
    assert d1 not in transport.status(dev).releases  # ...and no longer counted as held
    again = transport.push(dev, v1)
    assert not again.skipped and again.bytes_sent == v1.stat().st_size  # re-fetched
    assert transport.activate(dev, d1).ok
    assert agent.gc()["removed"] and not any(agent.quarantine.iterdir())


def test_gc_frees_a_damaged_kept_release(tmp_path):
    agent = agent_for(tmp_path)
    bundles = [make_bundle(tmp_path, "kws", seed=s) for s in (1, 2)]
    for bundle in bundles:
        assert agent.activate(bundle).ok
    kept = artifact.short(artifact.bundle_digest(bundles[0]), 64)
    flip_a_byte(agent.releases / kept / "samples.npz")
    report = agent.gc()
    assert any(r.startswith(f"quarantine/{kept}") for r in report["removed"]) and report["freed_bytes"] > 0
    assert not (agent.releases / kept).exists()
    assert agent.status()["current"] == artifact.bundle_digest(bundles[1])
    assert agent.status()["previous"] is None
    assert not agent.rollback().ok  # nothing damaged is ever switched to


def test_apply_again_after_a_damaged_release_converges(tmp_path, capsys):
    """One rollout moved v1 -> v2 -> v1; v1's kept copy rotted in between: the first try quarantines
    it and fails, the retry pushes it again and converges."""
    fleet_path = write_fleet(tmp_path, ids=("cam-01",))
    v1, v2 = make_bundle(tmp_path, "kws", seed=1), make_bundle(tmp_path, "kws", seed=2)
    strategy = {"waves": [100], "max_unavailable": 1, "on_failure": "pause"}

    def rollout_of(bundle):
        return write_rollout(tmp_path, "kws", fleet_path, bundle, strategy, filename="rollout.yaml")

    assert main(["apply", str(rollout_of(v1))]) == 0
    assert main(["apply", str(rollout_of(v2))]) == 0
    fleet = load_fleet(fleet_path)
    agent = get_transport(fleet, fleet.devices[0]).agent(fleet.devices[0])
    close_transports(fleet)
    flip_a_byte(agent.releases / artifact.short(artifact.bundle_digest(v1), 64) / "model.onnx")
    capsys.readouterr()
    assert main(["apply", str(rollout_of(v1))]) == 1  # the damaged copy is found and quarantined: this try fails
    assert "tampered" in capsys.readouterr().err
    assert main(["rollout", "resume", "kws"]) == 0  # the retry pushes it again
    assert agent.status()["current"] == artifact.bundle_digest(v1)
