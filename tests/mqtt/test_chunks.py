"""Content-defined chunking, the chunk store, topics and protocol documents (no broker needed)."""

from __future__ import annotations

import hashlib
import os
import random

import pytest
from hypothesis import given, settings, strategies as st

from edgeship.fleet.mqtt import protocol
from edgeship.fleet.mqtt.chunks import (ChunkParams, ChunkStore, Recipe, chunk_bundle, cut_points, decode_frame,
                                        encode_frame, split)
from edgeship.fleet.mqtt.topics import Topics

SMALL = ChunkParams(4096)


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def test_chunks_cover_the_data_within_size_limits():
    data = blob(300_000)
    ends = cut_points(data, SMALL)
    assert ends[-1] == len(data) and ends == sorted(ends)
    sizes = [b - a for a, b in zip([0] + ends, ends)]
    assert all(s <= SMALL.max for s in sizes)
    assert all(s >= SMALL.min for s in sizes[:-1])
    assert 0.5 * SMALL.avg < sum(sizes) / len(sizes) < 2 * SMALL.avg


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 199_999), st.binary(min_size=1, max_size=64))
def test_an_edit_changes_only_nearby_chunks(offset, inserted):
    data = blob(200_000, seed=1)
    edited = data[:offset] + inserted + data[offset:]
    before = {c for c, _ in split(data, SMALL)}
    after = split(edited, SMALL)
    fresh = sum(len(p) for c, p in after if c not in before)
    assert fresh <= 3 * SMALL.max  # the chunk holding the edit and its neighbours, not the rest


def test_cutting_is_deterministic_and_windowing_is_invisible():
    data = blob(9 << 20, seed=2)[: (8 << 20) + 12345]  # crosses the 8 MiB hashing window
    assert cut_points(data) == cut_points(bytes(data))
    assert cut_points(b"") == []


def test_params_validation_and_json():
    with pytest.raises(ValueError):
        ChunkParams(100)
    assert ChunkParams.from_json(ChunkParams(65536).to_json()) == ChunkParams(65536)
    with pytest.raises(ValueError):
        ChunkParams.from_json({"algorithm": "rabin", "avg": 65536})


def test_store_verifies_and_assembles(tmp_path):
    data = blob(50_000, seed=3)
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(data)
    store = ChunkStore(tmp_path / "store")
    recipe = chunk_bundle(bundle, "sha256:" + "a" * 64, SMALL, store)
    assert Recipe.from_json(recipe.to_json()) == recipe
    assert store.missing(recipe) == []
    first = recipe.ids()[0]
    assert not store.put(first, b"not the chunk")  # wrong content for the id is refused
    store.path(first).write_bytes(b"bit rot")  # damaged on disk: dropped on read, reported missing
    assert store.get(first) is None and store.missing(recipe) == [first]
    assert not store.assemble(recipe, tmp_path / "out.tar")
    store.put(first, data[: recipe.chunks[0][1]])
    assert store.assemble(recipe, tmp_path / "out.tar")
    assert hashlib.sha256((tmp_path / "out.tar").read_bytes()).hexdigest() == recipe.sha256
    assert store.retain({first}) == len(set(recipe.ids())) - 1


def test_recipe_rejects_inconsistent_documents():
    good = {"digest": "sha256:" + "a" * 64, "sha256": "b" * 64, "size": 3, "chunking": SMALL.to_json(),
            "chunks": [["c" * 64, 3]]}
    Recipe.from_json(good)
    for bad in ({**good, "size": 4}, {**good, "chunks": [["short", 3]]}, {k: v for k, v in good.items() if k != "sha256"}):
        with pytest.raises(ValueError):
            Recipe.from_json(bad)


def test_frames():
    cid = hashlib.sha256(b"x").hexdigest()
    assert decode_frame(encode_frame(cid, b"x")) == (cid, b"x")
    for bad in (b"", b"XXXX" + bytes(40), os.urandom(10)):
        with pytest.raises(ValueError):
            decode_frame(bad)


def test_topics():
    t = Topics("plant7/edge")
    assert t.device("cam-01", "desired") == "plant7/edge/devices/cam-01/desired"
    assert t.parse("plant7/edge/devices/cam-01/req") == ("cam-01", "req")
    assert t.parse("plant7/edge/devices/cam-01/req/x") is None
    assert t.parse("other/devices/cam-01/req") is None
    for bad in ("Cam", "a/b", "+", "#", ""):
        with pytest.raises(ValueError):
            t.device(bad, "desired")
    with pytest.raises(ValueError):
        Topics("bad/#")


def test_desired_documents_are_checked():
    ok = {"seq": 1, "action": "stage", "digest": "sha256:" + "a" * 64, "url": "https://h/x.tar"}
    assert protocol.check_desired(dict(ok))
    assert protocol.check_desired({"seq": 2, "action": "rollback"})
    for bad, why in (({**ok, "seq": "1"}, "seq"), ({**ok, "action": "nuke"}, "action"),
                     ({**ok, "digest": "md5:x"}, "digest"), ({**ok, "url": "file:///etc/passwd"}, "url"),
                     ({k: v for k, v in ok.items() if k != "url"}, "recipe")):
        with pytest.raises(protocol.ProtocolError, match=why):
            protocol.check_desired(bad)
    with pytest.raises(protocol.ProtocolError):
        protocol.loads(b"[1, 2]")


def test_example_decoder_v2_shares_most_chunks_with_v1():
    """examples/llm: v2 retrains only the output head; at 16 KiB chunks most bytes are shared."""
    from pathlib import Path

    import subprocess
    import sys

    example = Path(__file__).resolve().parents[2] / "examples" / "llm"
    models = example / "models"
    v1, v2 = models / "tiny-decoder.onnx", models / "tiny-decoder-v2.onnx"
    for variant, path in (("v1", v1), ("v2", v2)):
        if not path.exists():  # generated files: make them (deterministic, no downloads)
            subprocess.run([sys.executable, str(example / "make_model.py"), "--variant", variant],
                           cwd=example, check=True, capture_output=True, timeout=300)
    params = ChunkParams(16 * 1024)
    held = {c for c, _ in split(v1.read_bytes(), params)}
    new = split(v2.read_bytes(), params)
    fresh = sum(len(p) for c, p in new if c not in held)
    assert fresh / sum(len(p) for _, p in new) < 0.25
