"""Resource exhaustion before any signature check: sparse members, declared sizes and member counts
are refused from the tar headers, before a byte is unpacked. Bundles made with a real GNU tar."""

from __future__ import annotations

import os
import subprocess
import tarfile

import pytest

from edgeship import artifact
from edgeship.fleet.agent_config import AgentConfig, parse_config
from tests.fleet.fleet_helpers import agent_for
from tests.support.bundles import make_artifact_dir
from tests.support.require import require_binary

GiB = 1 << 30


def unpacked_nothing(agent) -> bool:
    tmp = agent.root / "tmp"
    return not (agent.releases.is_dir() and any(agent.releases.iterdir())) and not (tmp.is_dir() and any(tmp.iterdir()))


def sparse_bundle(tmp_path, size: int):
    """A real artifact whose model.onnx is replaced by a sparse file of `size` bytes, packed by GNU
    tar with --sparse: a few KiB on the wire."""
    tar_bin = require_binary("tar", "/usr/bin/tar")
    folder = make_artifact_dir(tmp_path / "sparse", "kws", seed=1)
    with open(folder / "model.onnx", "wb") as fh:
        fh.truncate(size)
    out = tmp_path / "sparse.tar"
    names = sorted(os.listdir(folder))
    subprocess.run([tar_bin, "--sparse", "--format=posix", "-cf", str(out), "-C", str(folder), *names], check=True)
    return out


def test_a_sparse_member_is_refused_before_anything_is_written(tmp_path):
    bundle = sparse_bundle(tmp_path, 256 << 20)
    assert bundle.stat().st_size < 64 * 1024
    agent = agent_for(tmp_path)
    result = agent.activate(bundle)
    assert not result.ok and result.reason == "unsafe-member" and "sparse" in result.message, result
    assert unpacked_nothing(agent)


def test_a_bundle_declaring_gigabytes_is_refused_by_its_headers(tmp_path):
    bundle = sparse_bundle(tmp_path, 4 * GiB)  # 20 KiB that would unpack to 4 GiB
    agent = agent_for(tmp_path)  # the default max_bundle_mb (2048)
    result = agent.activate(bundle)
    assert not result.ok and result.reason in ("disk-full", "unsafe-member"), result
    assert unpacked_nothing(agent)
    with tarfile.open(bundle) as tar:
        assert tar.getmember("model.onnx").size >= 4 * GiB  # what it claims


def test_a_declared_size_over_the_limit_is_refused_before_unpacking(tmp_path):
    """A plain (not sparse) 3 GiB member, cheap on the host only because the .tar has a hole."""
    folder = make_artifact_dir(tmp_path / "liar", "kws", seed=2)
    out = tmp_path / "liar.tar"
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(folder / artifact.SUMS, artifact.SUMS)
    info = tarfile.TarInfo("model.onnx")
    info.size = 3 * GiB
    data = out.read_bytes()
    end = 512 + -(-(folder / artifact.SUMS).stat().st_size // 512) * 512
    with open(out, "wb") as fh:  # SUMS, then a 3 GiB member whose bytes are a hole in the .tar file itself
        fh.write(data[:end] + info.tobuf(tarfile.GNU_FORMAT))
        fh.truncate(end + 512 + info.size + 1024)
    agent = agent_for(tmp_path)
    result = agent.activate(out)
    assert not result.ok and result.reason == "disk-full" and "max_bundle_mb" in result.message, result
    assert unpacked_nothing(agent)


def test_too_many_members_are_refused_while_reading_headers(tmp_path):
    folder = make_artifact_dir(tmp_path / "many", "kws", seed=3)
    out = tmp_path / "many.tar"
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(folder / artifact.SUMS, artifact.SUMS)
        for i in range(20_000):  # empty members: nothing to hash, only headers to walk
            tar.addfile(tarfile.TarInfo(f"f{i:06d}"))
    agent = agent_for(tmp_path)
    result = agent.activate(out)
    assert not result.ok and result.reason == "too-many-members", result
    assert unpacked_nothing(agent)


def test_duplicate_members_are_refused(tmp_path):
    folder = make_artifact_dir(tmp_path / "dup", "kws", seed=4)
    out = tmp_path / "dup.tar"
    with tarfile.open(out, "w") as tar:
        for name in sorted(os.listdir(folder)):
            tar.add(folder / name, name)
        tar.add(folder / "report.json", "model.onnx")  # a second model.onnx after the signed one
    result = agent_for(tmp_path).activate(out)
    assert not result.ok and result.reason == "unsafe-member"


def test_limits_have_safe_defaults_and_are_configurable(tmp_path):
    default = AgentConfig()
    assert default.max_bundle_mb == 2048 and default.max_members == 256
    cfg = parse_config({"max_bundle_mb": None, "max_members": 12}, tmp_path / "agent.yaml")
    assert cfg.max_bundle_mb == 2048 and cfg.max_members == 12  # null is the default, never "unlimited"
    with pytest.raises(Exception, match="max_members"):
        parse_config({"max_members": 0}, tmp_path / "agent.yaml")
