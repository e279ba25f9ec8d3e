"""The artifact format: checksums, signatures, deterministic tar, and extraction that refuses
every way a bundle could write outside its folder."""

import io
import json
import tarfile
from pathlib import Path

import pytest

from edgeship import artifact
from edgeship.errors import ArtifactError


@pytest.fixture()
def keys(tmp_path):
    return artifact.generate_keypair(tmp_path / "keys" / "signing.key")


@pytest.fixture()
def folder(tmp_path, keys):
    d = tmp_path / "art"
    d.mkdir()
    (d / "model.onnx").write_bytes(b"\x08\x07model-bytes")
    (d / "bundle.json").write_text(json.dumps({"format": 1, "name": "t"}))
    artifact.write_checksums(d)
    artifact.sign(d, keys[0])
    return d


def test_verify_dir_and_bundle_agree_on_digest(folder, keys, tmp_path):
    digest = artifact.verify_dir(folder, [keys[1]])
    bundle = artifact.pack(folder, tmp_path / "b.tar")
    assert artifact.verify_bundle(bundle, [keys[1]]) == digest
    assert artifact.bundle_digest(bundle) == digest == artifact.bundle_digest(folder)
    assert digest.startswith("sha256:") and len(digest) == 71


def test_pack_is_deterministic(folder, tmp_path):
    a = artifact.pack(folder, tmp_path / "a.tar").read_bytes()
    b = artifact.pack(folder, tmp_path / "b.tar").read_bytes()
    assert a == b


def test_tampered_file_is_rejected(folder, keys):
    (folder / "model.onnx").write_bytes(b"evil")
    with pytest.raises(ArtifactError) as err:
        artifact.verify_dir(folder, [keys[1]])
    assert err.value.reason == "tampered" and "model.onnx" in str(err.value)


def test_extra_file_is_rejected(folder, keys):
    (folder / "payload.sh").write_text("rm -rf /")
    with pytest.raises(ArtifactError) as err:
        artifact.verify_dir(folder, [keys[1]])
    assert err.value.reason == "extra-file"


def test_resigned_sums_with_other_key_is_untrusted(folder, keys, tmp_path):
    (folder / "model.onnx").write_bytes(b"evil")
    artifact.write_checksums(folder)
    other, _ = artifact.generate_keypair(tmp_path / "attacker.key")
    artifact.sign(folder, other)
    with pytest.raises(ArtifactError) as err:
        artifact.verify_dir(folder, [keys[1]])
    assert err.value.reason == "untrusted-key"


def test_edited_sums_breaks_signature(folder, keys):
    (folder / "model.onnx").write_bytes(b"evil")
    artifact.write_checksums(folder)  # attacker rewrites the sums but cannot re-sign with our key
    with pytest.raises(ArtifactError) as err:
        artifact.verify_dir(folder, [keys[1]])
    assert err.value.reason == "bad-signature"


def test_unsigned_is_rejected(folder, keys):
    (folder / artifact.SIGNATURE).unlink()
    with pytest.raises(ArtifactError) as err:
        artifact.verify_dir(folder, [keys[1]])
    assert err.value.reason == "unsigned"


def test_no_trusted_keys_trusts_nothing(folder):
    with pytest.raises(ArtifactError) as err:
        artifact.verify_dir(folder, [])
    assert err.value.reason == "untrusted-key"


def _evil_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w") as tar:
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


@pytest.mark.parametrize(
    "name,kind",
    [
        ("/etc/passwd", tarfile.REGTYPE),
        ("../escape", tarfile.REGTYPE),
        ("sub/../../escape", tarfile.REGTYPE),
        ("nested/file", tarfile.REGTYPE),
        ("link", tarfile.SYMTYPE),
        ("hard", tarfile.LNKTYPE),
        ("dev", tarfile.CHRTYPE),
        ("fifo", tarfile.FIFOTYPE),
        ("dir", tarfile.DIRTYPE),
    ],
)
def test_safe_extract_refuses_unsafe_members(tmp_path, name, kind):
    member = tarfile.TarInfo(name)
    member.type = kind
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        member.linkname = "/etc/passwd"
    bundle = _evil_tar(tmp_path / "evil.tar", member)
    dest = tmp_path / "out"
    with pytest.raises(ArtifactError) as err:
        artifact.safe_extract(bundle, dest)
    assert err.value.reason == "unsafe-member"
    assert not dest.exists(), "nothing may be written when a bundle is refused"
    assert not (tmp_path / "escape").exists()


def test_safe_extract_enforces_size_limits(folder, tmp_path):
    bundle = artifact.pack(folder, tmp_path / "b.tar")
    with pytest.raises(ArtifactError) as err:
        artifact.safe_extract(bundle, tmp_path / "o1", max_member_bytes=4)
    assert err.value.reason == "oversize"
    with pytest.raises(ArtifactError) as err:
        artifact.safe_extract(bundle, tmp_path / "o2", max_total_bytes=10)
    assert err.value.reason == "oversize"
    artifact.safe_extract(bundle, tmp_path / "o3")
    assert sorted(p.name for p in (tmp_path / "o3").iterdir()) == sorted(p.name for p in folder.iterdir())


def test_truncated_bundle_is_corrupt_not_a_traceback(folder, tmp_path, keys):
    bundle = artifact.pack(folder, tmp_path / "b.tar")
    data = bundle.read_bytes()
    bundle.write_bytes(data[: len(data) // 3])
    with pytest.raises(ArtifactError):
        artifact.verify_bundle(bundle, [keys[1]])


def test_private_key_is_private_and_never_overwritten(tmp_path):
    priv, pub = artifact.generate_keypair(tmp_path / "k.key")
    assert priv.stat().st_mode & 0o077 == 0
    with pytest.raises(ArtifactError):
        artifact.generate_keypair(tmp_path / "k.key")
