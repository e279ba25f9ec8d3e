"""The artifact format, shared by the build (which writes it) and the device agent (which trusts it).

An artifact is a flat folder (and the same files in an uncompressed `.tar` bundle):

    model.onnx            the model the device runs
    samples.npz           sample inputs for the device smoke test (keys = input names, shape (N, *dims))
    bundle.json           what the device needs to run it: name, target, inputs, outputs, budget
    edgeship.lock.json    digests of every build input, tool versions, stage keys
    report.json, report.html
    SHA256SUMS            "<sha256 hex>  <name>" per file above, sorted by name
    SHA256SUMS.sig        JSON {"algorithm": "ed25519", "key_id", "signature" (base64)} over SHA256SUMS

The artifact's digest is `sha256:<hex of SHA256SUMS>`: it names the content of every file, so the
store is content-addressed and a device can ask "do I already have this?" without unpacking.
"""

from __future__ import annotations

import base64
import hashlib

import json
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgeship import durable
from edgeship.errors import ArtifactError

SUMS = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.sig"
_UNHASHED = {SUMS, SIGNATURE}
_CHUNK = 1 << 20
# An artifact is a handful of flat files; a bundle with more members is refused while its headers are
# read, before anything is hashed or written (100,000 empty members must not cost minutes).
DEFAULT_MAX_MEMBERS = 256


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _payload_files(folder: Path) -> list[str]:
    names = []
    for entry in sorted(os.listdir(folder)):
        full = folder / entry
        if entry in _UNHASHED:
            continue
        if full.is_symlink() or not full.is_file():
            raise ArtifactError(f"{full}: artifacts hold only regular files at the top level", "unsafe-member")
        names.append(entry)
    return names


def write_checksums(folder: Path) -> str:
    """Write SHA256SUMS for every payload file; return the artifact digest."""
    folder = Path(folder)
    lines = "".join(f"{sha256_file(folder / n)}  {n}\n" for n in _payload_files(folder))
    (folder / SUMS).write_text(lines)
    return digest_of_sums(lines.encode())


def digest_of_sums(sums: bytes) -> str:
    return "sha256:" + hashlib.sha256(sums).hexdigest()


def short(digest: str, n: int = 12) -> str:
    """`sha256:abcdef...` -> `abcdef...` cut to n hex chars, for folder and file names."""
    return digest.split(":", 1)[-1][:n]


# --- keys -------------------------------------------------------------------------------------

def generate_keypair(private_path: Path, public_path: Path | None = None) -> tuple[Path, Path]:
    """Write a new ed25519 key pair (PEM). The private key file is created 0600, never overwritten."""
    private_path = Path(private_path)
    public_path = Path(public_path) if public_path else private_path.with_suffix(".pub")
    if private_path.exists():
        raise ArtifactError(f"{private_path}: a key already exists; refusing to overwrite it", "key-exists")
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise ArtifactError(f"{path}: cannot load signing key: {err}", "bad-key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ArtifactError(f"{path}: signing key must be ed25519", "bad-key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as err:
        raise ArtifactError(f"{path}: cannot load public key: {err}", "bad-key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ArtifactError(f"{path}: public key must be ed25519", "bad-key")
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_bytes(data: bytes, private_key_path: Path) -> dict:
    """An ed25519 signature document {"algorithm", "key_id", "signature" (base64)} over `data`."""
    key = load_private_key(private_key_path)
    return {"algorithm": "ed25519", "key_id": key_id(key.public_key()),
            "signature": base64.b64encode(key.sign(data)).decode()}


def sign(folder: Path, private_key_path: Path) -> str:
    """Sign the folder's SHA256SUMS (written first if absent). Returns the key id."""
    folder = Path(folder)
    if not (folder / SUMS).exists():
        write_checksums(folder)
    doc = sign_bytes((folder / SUMS).read_bytes(), private_key_path)
    (folder / SIGNATURE).write_text(json.dumps(doc, indent=2) + "\n")
    return doc["key_id"]


def raw_public_key(public_key: Ed25519PublicKey) -> str:
    """The 32 raw bytes of a public key, base64: how trust documents carry keys (no PEM files needed)."""
    return base64.b64encode(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def public_key_from_raw(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError):
        raise ArtifactError("not a base64 ed25519 public key", "bad-key") from None


def _signature_entries(signature_doc: bytes, what: str) -> list[tuple[str, bytes]]:
    """(claimed key id, signature) of each signature in a signature document: one
    {"algorithm", "key_id", "signature"}, or {"signatures": [those]} when several keys co-signed."""
    try:
        doc = json.loads(signature_doc)
        docs = doc["signatures"] if isinstance(doc, dict) and "signatures" in doc else [doc]
        if not isinstance(docs, list) or not docs:
            raise ValueError
        return [(str(d.get("key_id", "")), base64.b64decode(d["signature"], validate=True)) for d in docs]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ArtifactError(f"the signature of {what} is not a valid signature document", "bad-signature") from None


@dataclass(frozen=True)
class KeyRing:
    """The keys a verifier accepts, how many of them must sign (threshold), and the ids of keys
    revoked on purpose (so a refusal can say `revoked-key` rather than `untrusted-key`)."""

    keys: dict = field(default_factory=dict)  # key id -> Ed25519PublicKey
    threshold: int = 1
    revoked: frozenset = frozenset()

    @classmethod
    def from_files(cls, paths: list[Path]) -> "KeyRing":
        loaded = [load_public_key(p) for p in paths]
        return cls({key_id(k): k for k in loaded})

    def verify(self, data: bytes, signature_doc: bytes | None, what: str = SUMS) -> list[str]:
        """The ids of the trusted keys whose signature over `data` is valid, at least `threshold` of
        them; raise ArtifactError (unsigned | bad-signature | untrusted-key | revoked-key | threshold)."""
        if signature_doc is None:
            message = "artifact is unsigned (no SHA256SUMS.sig)" if what == SUMS else f"{what} is unsigned"
            raise ArtifactError(message, "unsigned")
        entries = _signature_entries(signature_doc, what)
        if not self.keys:
            raise ArtifactError("no trusted public keys configured: refusing to trust any signature", "untrusted-key")
        valid: list[str] = []
        for _claimed, signature in entries:
            for kid, key in self.keys.items():
                try:
                    key.verify(signature, data)
                except InvalidSignature:
                    continue
                if kid not in valid:
                    valid.append(kid)
                break
        if len(valid) >= max(1, self.threshold):
            return valid
        if valid:
            raise ArtifactError(f"{what} is signed by {len(valid)} of the {self.threshold} trusted keys required "
                                f"(threshold)", "threshold")
        claimed = [c for c, _ in entries]
        revoked = [c for c in claimed if c in self.revoked]
        if revoked:
            raise ArtifactError(f"signed by revoked key {revoked[0]}", "revoked-key")
        known = [c for c in claimed if c in self.keys]
        if known:
            raise ArtifactError(f"bad signature: {what} does not match the signature of key {known[0]}", "bad-signature")
        raise ArtifactError(f"signed by untrusted key {claimed[0] or '?'}", "untrusted-key")


def verify_signature(sums: bytes, signature_doc: bytes | None, trusted_keys: list[Path], what: str = SUMS) -> str:
    """Check the signature over `sums` (SHA256SUMS, or another signed document named by `what`)
    against the trusted public keys; return the signer's key id."""
    if signature_doc is not None and not trusted_keys:
        _signature_entries(signature_doc, what)  # a malformed document says so before "no keys"
    return KeyRing.from_files(list(trusted_keys)).verify(sums, signature_doc, what)[0]


def add_signature(folder: Path, private_key_path: Path) -> list[str]:
    """Co-sign an artifact folder (a threshold of artifact keys): append this key's signature over
    SHA256SUMS to SHA256SUMS.sig. The digest does not change. Returns the key ids that signed."""
    folder = Path(folder)
    if not (folder / SIGNATURE).exists():
        return [sign(folder, private_key_path)]
    current = json.loads((folder / SIGNATURE).read_text())
    docs = current["signatures"] if isinstance(current, dict) and "signatures" in current else [current]
    new = sign_bytes((folder / SUMS).read_bytes(), private_key_path)
    docs = [d for d in docs if d.get("key_id") != new["key_id"]] + [new]
    (folder / SIGNATURE).write_text(json.dumps({"signatures": docs}, indent=2) + "\n")
    return [d["key_id"] for d in docs]


def signer_ids(signature_doc: bytes | None) -> list[str]:
    """The key ids a signature document claims (not verified): what `plan` looks up in the trust document."""
    if signature_doc is None:
        return []
    try:
        return [kid for kid, _ in _signature_entries(signature_doc, SIGNATURE) if kid]
    except ArtifactError:
        return []


def _check_sums(sums_text: str, digest_of: dict[str, str]) -> None:
    listed: dict[str, str] = {}
    for n, line in enumerate(sums_text.splitlines(), 1):
        hexd, sep, name = line.partition("  ")
        if not sep or len(hexd) != 64 or not name or "/" in name:
            raise ArtifactError(f"SHA256SUMS line {n} is malformed", "tampered")
        listed[name] = hexd
    for name, hexd in listed.items():
        if name not in digest_of:
            raise ArtifactError(f"{name}: listed in SHA256SUMS but missing", "missing-file")
        if digest_of[name] != hexd:
            raise ArtifactError(f"{name}: sha256 mismatch (tampered or corrupt)", "tampered")
    extra = sorted(set(digest_of) - set(listed))
    if extra:
        raise ArtifactError(f"{extra[0]}: file not listed in SHA256SUMS", "extra-file")


def verify_dir(folder: Path, trusted_keys: list[Path] | None, require_signature: bool = True,
               keyring: KeyRing | None = None) -> str:
    """Verify every file's sha256 and the signature (by `keyring` when given: a trust document's
    keys and threshold, else the trusted key files). Return the digest; raise ArtifactError otherwise."""
    folder = Path(folder)
    sums_path = folder / SUMS
    if not sums_path.is_file():
        raise ArtifactError(f"{folder}: not an artifact (no SHA256SUMS)", "not-a-bundle")
    sums = sums_path.read_bytes()
    _check_sums(sums.decode("utf-8", "replace"), {n: sha256_file(folder / n) for n in _payload_files(folder)})
    if require_signature:
        sig_path = folder / SIGNATURE
        _verify_with(sums, sig_path.read_bytes() if sig_path.exists() else None, trusted_keys, keyring)
    return digest_of_sums(sums)


# --- bundles (tar) ----------------------------------------------------------------------------

def pack(folder: Path, out: Path) -> Path:
    """Write the artifact folder as a deterministic, uncompressed tar (same bytes for same content)."""
    folder, out = Path(folder), Path(out)
    names = _payload_files(folder) + [n for n in (SUMS, SIGNATURE) if (folder / n).exists()]
    tmp = out.with_name(out.name + ".part")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = (folder / name).stat().st_size
            info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, 0, "", ""
            with open(folder / name, "rb") as fh:
                tar.addfile(info, fh)
    os.replace(tmp, out)
    return out


def _check_member(member: tarfile.TarInfo, max_member_bytes: int | None) -> None:
    name = member.name
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise ArtifactError(f"{name}: absolute path in bundle", "unsafe-member")
    if ".." in Path(name).parts or "/" in name.strip("/") or name in ("", "."):
        raise ArtifactError(f"{name}: path escapes or nests in the bundle", "unsafe-member")
    if member.issym() or member.islnk():
        raise ArtifactError(f"{name}: links are not allowed in a bundle", "unsafe-member")
    if not member.isfile():
        raise ArtifactError(f"{name}: only regular files are allowed in a bundle", "unsafe-member")
    if member.issparse() or any(key.startswith("GNU.sparse") for key in member.pax_headers):
        raise ArtifactError(f"{name}: sparse members are not allowed in a bundle (a few KiB could unpack to GiB)",
                            "unsafe-member")
    if max_member_bytes is not None and member.size > max_member_bytes:
        raise ArtifactError(f"{name}: {member.size} bytes exceeds the limit of {max_member_bytes}", "oversize")


def _members(tar: tarfile.TarFile, max_members: int | None):
    """The members of an open tar, header by header, refusing past `max_members` (no full scan first)."""
    limit = DEFAULT_MAX_MEMBERS if max_members is None else max_members
    seen: set[str] = set()
    for count, member in enumerate(tar, 1):
        if count > limit:
            raise ArtifactError(f"bundle has more than {limit} members (max_members)", "too-many-members")
        if member.name in seen:  # which copy counts would depend on the reader: refuse both
            raise ArtifactError(f"{member.name}: appears twice in the bundle", "unsafe-member")
        seen.add(member.name)
        yield member


def scan(bundle: Path, max_members: int | None = None, max_member_bytes: int | None = None) -> list[tarfile.TarInfo]:
    """Every member header of a bundle, each checked (paths, links, sparse, size), nothing read or
    written: what a device looks at before it spends a byte of disk on a bundle."""
    try:
        with tarfile.open(bundle, "r:") as tar:
            members = []
            for member in _members(tar, max_members):
                _check_member(member, max_member_bytes)
                members.append(member)
            return members
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ArtifactError(f"{bundle}: corrupt bundle: {err}", "tampered") from None


def declared_size(bundle: Path, max_members: int | None = None) -> int:
    """Bytes the bundle says it unpacks to (the sum of its member sizes), from the headers alone."""
    return sum(m.size for m in scan(bundle, max_members))


def read_member(bundle: Path, name: str, max_members: int | None = None) -> bytes | None:
    """One small member of a bundle (e.g. SHA256SUMS), without extracting anything."""
    try:
        with tarfile.open(bundle, "r:") as tar:
            for member in _members(tar, max_members):
                if member.name == name:
                    _check_member(member, 16 << 20)
                    fh = tar.extractfile(member)
                    return fh.read() if fh else None
            return None
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ArtifactError(f"{bundle}: not a readable bundle: {err}", "not-a-bundle") from None


def bundle_digest(bundle: Path, max_members: int | None = None) -> str:
    """The digest of a bundle (tar) or artifact folder, read from its SHA256SUMS."""
    bundle = Path(bundle)
    if bundle.is_dir():
        sums = (bundle / SUMS).read_bytes() if (bundle / SUMS).exists() else None
    else:
        sums = read_member(bundle, SUMS, max_members)
    if sums is None:
        raise ArtifactError(f"{bundle}: not an artifact (no SHA256SUMS)", "not-a-bundle")
    return digest_of_sums(sums)


def safe_extract(bundle: Path, dest: Path, max_member_bytes: int | None = None, max_total_bytes: int | None = None,
                 max_members: int | None = None) -> None:
    """Extract a bundle into `dest` after checking every member: no absolute paths, no `..`, no links,
    no devices, sparse members or nested folders, no member, count or total over the limits. Nothing
    is written on refusal."""
    dest = Path(dest)
    try:
        with tarfile.open(bundle, "r:") as tar:
            members = []
            total = 0
            for member in _members(tar, max_members):
                _check_member(member, max_member_bytes)
                members.append(member)
                total += member.size
            if max_total_bytes is not None and total > max_total_bytes:
                raise ArtifactError(f"bundle unpacks to {total} bytes, over the limit of {max_total_bytes}", "oversize")
            dest.mkdir(parents=True, exist_ok=True)
            written = []
            for member in members:
                src = tar.extractfile(member)
                assert src is not None
                target = dest / member.name
                with open(target, "wb") as out:
                    while block := src.read(_CHUNK):
                        out.write(block)
                os.chmod(target, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
                written.append(target)
            durable.fsync_all(written)  # every member on disk before return, in one journal commit
    except (tarfile.TarError, EOFError) as err:
        raise ArtifactError(f"{bundle}: corrupt bundle: {err}", "tampered") from None


def _verify_with(sums: bytes, signature_doc: bytes | None, trusted_keys, keyring: KeyRing | None) -> None:
    if keyring is not None:
        keyring.verify(sums, signature_doc)
    else:
        verify_signature(sums, signature_doc, list(trusted_keys or []))


def verify_bundle(bundle: Path, trusted_keys: list[Path] | None, require_signature: bool = True,
                  keyring: KeyRing | None = None) -> str:
    """Verify a tar bundle in place (hash every member, check the signature). Return its digest."""
    bundle = Path(bundle)
    digests: dict[str, str] = {}
    sums = sig = None
    try:
        with tarfile.open(bundle, "r:") as tar:
            for member in _members(tar, None):
                _check_member(member, None)
                fh = tar.extractfile(member)
                assert fh is not None
                if member.name == SUMS:
                    sums = fh.read()
                elif member.name == SIGNATURE:
                    sig = fh.read()
                else:
                    h = hashlib.sha256()
                    while block := fh.read(_CHUNK):
                        h.update(block)
                    digests[member.name] = h.hexdigest()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ArtifactError(f"{bundle}: corrupt bundle: {err}", "tampered") from None
    if sums is None:
        raise ArtifactError(f"{bundle}: not an artifact (no SHA256SUMS)", "not-a-bundle")
    _check_sums(sums.decode("utf-8", "replace"), digests)
    if require_signature:
        _verify_with(sums, sig, trusted_keys, keyring)
    return digest_of_sums(sums)


def read_json_member(bundle: Path, name: str) -> dict:
    data = read_member(bundle, name) if Path(bundle).is_file() else (Path(bundle) / name).read_bytes()
    if data is None:
        raise ArtifactError(f"{bundle}: no {name} in bundle", "missing-file")
    return json.loads(data)


__all__ = [
    "SUMS", "SIGNATURE", "sha256_file", "write_checksums", "digest_of_sums", "short", "generate_keypair",
    "load_private_key", "load_public_key", "key_id", "sign_bytes", "sign", "verify_signature", "verify_dir", "pack",
    "read_member", "scan", "declared_size", "bundle_digest", "safe_extract", "DEFAULT_MAX_MEMBERS", "verify_bundle",
    "read_json_member", "KeyRing", "raw_public_key", "public_key_from_raw", "add_signature", "signer_ids",
]
