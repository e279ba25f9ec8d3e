"""The fleet's root of trust: a signed, versioned trust document that delegates to signing keys.

In the spirit of TUF's root and targets roles, kept small. A device is provisioned with root public
key(s) and a threshold (agent.yaml `trust_root`). The root signs a trust document:

    {"signed": {"type": "edgeship-trust", "version": 3, "expires": "2027-11-30T00:00:00Z",
                "root":          {"keys": {<key id>: <base64 raw ed25519>}, "threshold": 2},
                "artifacts":     {"keys": {...}, "threshold": 1},    # who may sign bundles
                "desired_state": {"keys": {...}, "threshold": 1},    # who may sign MQTT intents
                "revoked": [<key id>, ...]},                         # refused with `revoked-key`
     "signatures": [{"algorithm": "ed25519", "key_id", "signature"}, ...]}

The signatures cover a context string and the canonical JSON of `signed`. A device accepts a newer
document (a higher version) only when it is signed by the threshold of the root it trusts now *and*
by the threshold of the root the new document names: rotating the root takes the old and the new
root keys together, and a leaked signing key cannot promote itself. The document authenticates
itself, so any transport may carry it (a file pushed next to a bundle, a retained MQTT message).

Documents travel as a chain (a JSON list, oldest first): a device that missed a root rotation
walks the chain from the version it has, each step checked against the root before it.

Expiry is a date in the document: a device whose newest document has expired refuses new
activations (`trust-expired`) and keeps running its current release, so a frozen device notices.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path

from edgeship import artifact
from edgeship.errors import ArtifactError

CONTEXT = b"edgeship-trust-v1\n"  # never the bytes of a SHA256SUMS nor of an intent
DOC_TYPE = "edgeship-trust"
ROLES = ("root", "artifacts", "desired_state")
SIGNED_WHAT = "trust document"


class TrustError(ArtifactError):
    """A trust document is malformed, not signed by the roots it needs, or not newer."""

    def __init__(self, message: str, reason: str = "bad-trust"):
        super().__init__(message, reason)


def canonical(data) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def signed_bytes(signed: dict) -> bytes:
    return CONTEXT + canonical(signed)


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def format_time(when: _dt.datetime) -> str:
    return when.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> _dt.datetime:
    try:
        return _dt.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        raise TrustError(f"expires must be a UTC time like 2027-01-31T00:00:00Z, got {text!r}") from None


@dataclass(frozen=True)
class Role:
    """Keys (id -> base64 raw public key) of one role and how many of them must sign."""

    keys: dict
    threshold: int = 1

    @classmethod
    def from_json(cls, data, name: str) -> "Role":
        if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
            raise TrustError(f"trust document: {name}.keys must be a mapping of key id to public key")
        threshold = data.get("threshold", 1)
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
            raise TrustError(f"trust document: {name}.threshold must be an integer >= 1")
        keys = {}
        for kid, raw in data["keys"].items():
            try:
                public = artifact.public_key_from_raw(str(raw))
            except ArtifactError:
                raise TrustError(f"trust document: {name}.keys: {kid} is not a base64 ed25519 public key") from None
            if artifact.key_id(public) != kid:
                raise TrustError(f"trust document: {name}.keys: key id {kid} does not match its key")
            keys[kid] = str(raw)
        if threshold > len(keys):
            raise TrustError(f"trust document: {name}.threshold {threshold} is more than its {len(keys)} key(s)")
        return cls(keys, threshold)

    @classmethod
    def from_public_files(cls, paths: list[Path], threshold: int = 1) -> "Role":
        loaded = [artifact.load_public_key(Path(p)) for p in paths]
        return cls({artifact.key_id(k): artifact.raw_public_key(k) for k in loaded}, threshold)

    def to_json(self) -> dict:
        return {"keys": dict(sorted(self.keys.items())), "threshold": self.threshold}

    def ring(self, revoked: frozenset = frozenset()) -> artifact.KeyRing:
        return artifact.KeyRing({kid: artifact.public_key_from_raw(raw) for kid, raw in self.keys.items()},
                                self.threshold, frozenset(revoked))


@dataclass(frozen=True)
class TrustDocument:
    signed: dict
    signatures: tuple

    @classmethod
    def from_json(cls, data) -> "TrustDocument":
        if not isinstance(data, dict) or not isinstance(data.get("signed"), dict):
            raise TrustError("not a trust document (no `signed` mapping)")
        signed = data["signed"]
        if signed.get("type") != DOC_TYPE:
            raise TrustError(f"not a trust document (type {signed.get('type')!r})")
        version = signed.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise TrustError("trust document: version must be an integer >= 1")
        parse_time(signed.get("expires", ""))
        for name in ("root", "artifacts"):
            Role.from_json(signed.get(name), name)
        if signed.get("desired_state") is not None:
            Role.from_json(signed["desired_state"], "desired_state")
        revoked = signed.get("revoked", [])
        if not isinstance(revoked, list) or not all(isinstance(k, str) for k in revoked):
            raise TrustError("trust document: revoked must be a list of key ids")
        signatures = data.get("signatures", [])
        if not isinstance(signatures, list):
            raise TrustError("trust document: signatures must be a list")
        return cls(signed, tuple(signatures))

    def to_json(self) -> dict:
        return {"signed": self.signed, "signatures": list(self.signatures)}

    # --- fields ---------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return int(self.signed["version"])

    @property
    def expires(self) -> str:
        return str(self.signed["expires"])

    def role(self, name: str) -> Role:
        data = self.signed.get(name)
        if data is None and name == "desired_state":
            data = self.signed["artifacts"]  # one key signs both, as before roles existed
        return Role.from_json(data, name)

    @property
    def revoked(self) -> frozenset:
        return frozenset(self.signed.get("revoked", []))

    def ring(self, name: str) -> artifact.KeyRing:
        return self.role(name).ring(self.revoked)

    def expired(self, now: _dt.datetime | None = None) -> bool:
        return (now or utc_now()) >= parse_time(self.expires)

    # --- signatures -----------------------------------------------------------------------------

    def signers(self, role: Role) -> list[str]:
        """Ids of the keys of `role` with a valid signature on this document (none if under threshold)."""
        doc = json.dumps({"signatures": list(self.signatures)}).encode() if self.signatures else None
        try:
            return role.ring().verify(signed_bytes(self.signed), doc, SIGNED_WHAT)
        except ArtifactError:
            return []

    def signed_by_threshold(self, role: Role) -> bool:
        return bool(self.signers(role))

    def with_signature(self, private_key: Path) -> "TrustDocument":
        new = artifact.sign_bytes(signed_bytes(self.signed), private_key)
        kept = [s for s in self.signatures if isinstance(s, dict) and s.get("key_id") != new["key_id"]]
        return TrustDocument(self.signed, tuple(kept + [new]))


def check_successor(trusted_root: Role, current_version: int, new: TrustDocument) -> None:
    """Raise TrustError unless `new` may replace a document of `current_version` whose root is
    `trusted_root`: newer, signed by the trusted root's threshold and by its own root's threshold."""
    if new.version <= current_version:
        raise TrustError(f"trust document version {new.version} is not newer than version {current_version}",
                         "trust-rollback")
    if not new.signed_by_threshold(trusted_root):
        raise TrustError(f"trust document version {new.version} is not signed by {trusted_root.threshold} of the "
                         f"{len(trusted_root.keys)} root key(s) this device trusts", "untrusted-root")
    own = new.role("root")
    if own != trusted_root and not new.signed_by_threshold(own):
        raise TrustError(f"trust document version {new.version} rotates the root but is not signed by "
                         f"{own.threshold} of its new root key(s)", "untrusted-root")


def walk_chain(trusted_root: Role, current: TrustDocument | None, chain: list[TrustDocument]) -> TrustDocument | None:
    """The newest document reachable from `current` (or the provisioned root) through `chain`,
    each step checked against the root before it; None when nothing in the chain is newer.
    A document that fails its check stops the walk with TrustError (nothing after it counts)."""
    root, version, newest = (current.role("root"), current.version, None) if current else (trusted_root, 0, None)
    for doc in sorted(chain, key=lambda d: d.version):
        if doc.version <= version:
            continue
        check_successor(root, version, doc)
        root, version, newest = doc.role("root"), doc.version, doc
    return newest


def parse_chain(data) -> list[TrustDocument]:
    """A chain file's JSON (a list of documents, or one document) -> documents."""
    items = data if isinstance(data, list) else [data]
    if not items:
        raise TrustError("empty trust chain")
    return [TrustDocument.from_json(item) for item in items]


def load_chain(path: Path) -> list[TrustDocument]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise TrustError(f"{path}: cannot read trust chain: {err}") from None
    try:
        return parse_chain(data)
    except TrustError as err:
        raise TrustError(f"{path}: {err}", err.reason) from None


def chain_bytes(chain: list[TrustDocument]) -> bytes:
    return canonical([d.to_json() for d in sorted(chain, key=lambda d: d.version)])


__all__ = ["TrustDocument", "Role", "TrustError", "check_successor", "walk_chain", "parse_chain", "load_chain",
           "chain_bytes", "signed_bytes", "format_time", "parse_time", "utc_now", "CONTEXT"]
