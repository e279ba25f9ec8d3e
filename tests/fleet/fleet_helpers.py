"""Helpers shared by the fleet tests: bundle surgery (tamper, re-sign, unsafe members) and agents."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from edgeship import artifact
from edgeship.fleet.agent import Agent
from edgeship.fleet.agent_config import AgentConfig, SmokeConfig
from tests.support.bundles import make_artifact_dir, signing_keys


def agent_for(tmp: Path, name: str = "dev", **config) -> Agent:
    smoke = config.pop("smoke", None) or SmokeConfig()
    cfg = AgentConfig(trusted_keys=[signing_keys(tmp)[1]], smoke=smoke, **config)
    return Agent(tmp / "devices" / name, cfg, device_id=name)


def flip_a_byte(path: Path) -> None:
    """Bit rot in one file (e.g. a file of a kept release on a device)."""
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def tampered_copy(bundle: Path, out: Path, member: str = "model.onnx") -> Path:
    """Same tar, one byte of one member flipped (sizes and SHA256SUMS unchanged)."""
    data = bytearray(Path(bundle).read_bytes())
    with tarfile.open(bundle) as tar:
        info = tar.getmember(member)
        offset = info.offset_data + info.size // 2
    data[offset] ^= 0xFF
    Path(out).write_bytes(bytes(data))
    return Path(out)


def bad_signature_bundle(tmp: Path, name: str = "badsig") -> Path:
    """Files and SHA256SUMS consistent, but the signature is over different SHA256SUMS content."""
    folder = make_artifact_dir(tmp / "work" / name, name, seed=7, key=signing_keys(tmp)[0])
    (folder / "report.json").write_text(json.dumps({"changed": "after signing"}))
    artifact.write_checksums(folder)  # new SUMS, old signature
    return artifact.pack(folder, tmp / "work" / f"{name}.tar")


def unsafe_bundle(tmp: Path, good: Path, member_name: str = "../escaped.txt") -> Path:
    """A copy of a good bundle with one extra member whose path escapes the release dir."""
    out = tmp / "work" / "unsafe.tar"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(good) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
        info = tarfile.TarInfo(member_name)
        payload = b"owned\n"
        info.size = len(payload)
        dst.addfile(info, io.BytesIO(payload))
    return out
