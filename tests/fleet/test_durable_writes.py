"""Unpacking a release: every member is fsynced before the release can be renamed into place,
with writeback started for all members first (one journal commit, not one per file); and a
successful activation writes the device state once (not once more to record the same result)."""

from __future__ import annotations

import os
from pathlib import Path

from edgeship import artifact, durable
from edgeship.fleet.agent import Agent
from tests.fleet.fleet_helpers import agent_for
from tests.support.bundles import make_bundle
from tests.support.require import require_dir


def _record_syncs(monkeypatch) -> list[tuple[str, str]]:
    """(what, real path) for every writeback start and fsync, in order."""
    require_dir("/proc/self/fd", "the recorder maps file descriptors to paths through /proc")
    events: list[tuple[str, str]] = []
    real_fsync, real_start = os.fsync, durable.start_writeback

    def fsync(fd):
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def start(fd):
        events.append(("writeback", os.path.realpath(f"/proc/self/fd/{fd}")))
        return real_start(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(durable, "start_writeback", start)
    return events


def _members(dest: Path) -> set[str]:
    return {os.path.realpath(p) for p in dest.iterdir()}


def test_extract_fsyncs_every_member_after_starting_writeback_of_all(tmp_path, monkeypatch):
    bundle = make_bundle(tmp_path, "kws", seed=1)
    events = _record_syncs(monkeypatch)
    monkeypatch.setattr(durable, "_sync_file_range", durable._writeback_call() or (lambda *a: 0))
    dest = tmp_path / "out"
    artifact.safe_extract(bundle, dest)
    members = _members(dest)
    assert len(members) > 1
    synced = {p for what, p in events if what == "fsync"}
    assert members <= synced, "a member was not fsynced"
    started = [p for what, p in events if what == "writeback"]
    first_fsync = next(i for i, (what, _) in enumerate(events) if what == "fsync")
    assert set(started) == members and all(what == "writeback" for what, _ in events[:first_fsync])
    assert artifact.verify_dir(dest, None, require_signature=False) == artifact.bundle_digest(bundle)


def test_extract_without_sync_file_range_still_fsyncs_every_member(tmp_path, monkeypatch):
    bundle = make_bundle(tmp_path, "kws", seed=1)
    events = _record_syncs(monkeypatch)
    monkeypatch.setattr(durable, "_sync_file_range", None)
    dest = tmp_path / "out"
    artifact.safe_extract(bundle, dest)
    assert _members(dest) <= {p for what, p in events if what == "fsync"}


def _count_state_writes(monkeypatch) -> list[dict]:
    writes: list[dict] = []
    real = Agent._write_state

    def write(self, state):
        writes.append(dict(state))
        return real(self, state)

    monkeypatch.setattr(Agent, "_write_state", write)
    return writes


def test_successful_activation_writes_the_state_once(tmp_path, monkeypatch):
    agent = agent_for(tmp_path)
    good = make_bundle(tmp_path, "kws", seed=1)
    writes = _count_state_writes(monkeypatch)
    result = agent.activate(good)
    assert result.ok, result
    assert len(writes) == 1
    recorded = agent.status()["last_result"]
    assert recorded["ok"] is True and recorded["digest"] == result.digest and recorded["message"] == "activated"


def test_refused_and_repeated_activations_are_still_recorded(tmp_path, monkeypatch):
    agent = agent_for(tmp_path)
    good = make_bundle(tmp_path, "kws", seed=1)
    assert agent.activate(good).ok
    writes = _count_state_writes(monkeypatch)
    again = agent.activate(artifact.bundle_digest(good))
    assert again.ok and again.message == "already current"
    assert len(writes) == 1 and agent.status()["last_result"]["message"] == "already current"
    refused = agent.activate(make_bundle(tmp_path, "kws", seed=2, variant="nan"))  # NaN outputs: smoke fails
    assert not refused.ok
    assert len(writes) == 2 and agent.status()["last_result"]["ok"] is False
    assert agent.status()["current"] == artifact.bundle_digest(good)
