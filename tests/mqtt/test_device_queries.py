"""The device service decides "already done?" and "which chunks to keep?" from the current link,
the release folders and incoming/ alone: the agent's full status (a walk of the whole device root)
is read once per report, not three more times per desired state."""

from __future__ import annotations

import hashlib

import pytest

from edgeship import artifact
from edgeship.fleet.mqtt.chunks import ChunkParams, chunk_bundle, save_recipe
from edgeship.fleet.mqtt.service import DeviceService
from tests.fleet.fleet_helpers import agent_for
from tests.support.bundles import make_bundle


@pytest.fixture
def service(tmp_path):
    agent = agent_for(tmp_path)
    agent.ensure_layout()
    svc = DeviceService("dev", agent.root, "mqtt://127.0.0.1:1", agent=agent)  # never started: no broker needed
    yield svc
    svc.client.stop()


def _no_full_status(monkeypatch, agent) -> None:
    def refuse():
        raise AssertionError("the full status was read")
    monkeypatch.setattr(agent, "status", refuse)


def test_already_done_reads_the_link_and_the_folders(tmp_path, service, monkeypatch):
    v1, v2 = make_bundle(tmp_path, "kws", seed=1), make_bundle(tmp_path, "kws", seed=2)
    d1, d2 = artifact.bundle_digest(v1), artifact.bundle_digest(v2)
    assert service.agent.activate(v1).ok
    _no_full_status(monkeypatch, service.agent)
    assert service._already_done({"action": "activate", "digest": d1})
    assert service._already_done({"action": "stage", "digest": d1})
    assert not service._already_done({"action": "activate", "digest": d2})
    assert not service._already_done({"action": "stage", "digest": d2})


def test_chunk_gc_keeps_the_chunks_of_kept_releases_only(tmp_path, service, monkeypatch):
    v1 = make_bundle(tmp_path, "kws", seed=1)
    digest = artifact.bundle_digest(v1)
    recipe = chunk_bundle(v1, digest, ChunkParams(4096), service.store)
    save_recipe(service.recipes_dir, recipe)
    stray = b"a chunk of a release that is gone"
    stray_id = hashlib.sha256(stray).hexdigest()
    assert service.store.put(stray_id, stray)
    assert service.agent.activate(v1).ok
    _no_full_status(monkeypatch, service.agent)
    service._gc_chunks()
    assert service.store.ids() == set(recipe.ids())
    assert service.agent.kept_digests() == {digest}
