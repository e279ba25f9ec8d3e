"""Find the bundle a rollout ships: a built folder or .tar, a digest in the artifact store, or a
Pipeline built on demand (the build is passed in by the command layer, so fleet never imports the
build internals). Folders are packed once into the store as `<hex>.tar`: transports push tars.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgeship import artifact
from edgeship.errors import ArtifactError, RolloutError
from edgeship.fleet.rollout.spec import RolloutSpec
from edgeship.paths import default_signing_key, state_dir


@dataclass(frozen=True)
class Shipment:
    bundle: Path           # the .tar the transports push
    digest: str            # sha256:... of SHA256SUMS
    meta: dict             # bundle.json
    size: int

    @property
    def budget_p95_ms(self) -> float | None:
        p95 = ((self.meta.get("budget") or {}).get("latency_ms") or {}).get("p95")
        return float(p95) if isinstance(p95, (int, float)) else None


def store_dir() -> Path:
    path = state_dir() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve(spec: RolloutSpec, build: Callable[[Path], Path] | None = None) -> Shipment:
    """The shipment for a rollout. `build(pipeline_manifest) -> artifact path` builds `pipeline:` refs."""
    ref = spec.artifact
    if ref.path is not None:
        return from_path(ref.path)
    if ref.digest is not None:
        return from_store(ref.digest)
    if build is None:
        raise RolloutError(f"{spec.name}: artifact.pipeline needs a build, and none is available here")
    return from_path(build(ref.pipeline))


def from_path(path: Path) -> Shipment:
    path = Path(path)
    if not path.exists():
        raise RolloutError(f"{path}: artifact not found (build it first, or point artifact.path at a folder or .tar)")
    if path.is_dir():
        digest = artifact.bundle_digest(path)
        tar = store_dir() / f"{artifact.short(digest, 64)}.tar"
        if not tar.exists() or artifact.bundle_digest(tar) != digest:
            artifact.pack(path, tar)
        path = tar
    return _shipment(path)


def from_store(digest: str) -> Shipment:
    hexd = artifact.short(digest, 64)
    tar, folder = store_dir() / f"{hexd}.tar", store_dir() / hexd
    if tar.is_file():
        return _shipment(tar)
    if folder.is_dir():
        return from_path(folder)
    raise RolloutError(f"{digest}: not in the artifact store ({store_dir()}); build it or use artifact.path")


def _shipment(tar: Path) -> Shipment:
    try:
        digest = artifact.bundle_digest(tar)
        meta = artifact.read_json_member(tar, "bundle.json")
    except (ArtifactError, ValueError) as err:
        raise RolloutError(f"{tar}: not a usable artifact: {err}") from None
    return Shipment(tar, digest, meta, tar.stat().st_size)


# --- trust: does the fleet trust the key that signed the shipment? -------------------------------

def signer_ids_of(bundle: Path) -> list[str]:
    """The key ids written in a bundle's (or folder's) signature (not verified here: devices verify)."""
    try:
        data = (Path(bundle) / artifact.SIGNATURE).read_bytes() if Path(bundle).is_dir() \
            else artifact.read_member(bundle, artifact.SIGNATURE)
    except (ArtifactError, OSError):
        return []
    return artifact.signer_ids(data)


def signer_key_id(shipment: Shipment) -> str | None:
    """The (first) key id written in the bundle's signature."""
    ids = signer_ids_of(shipment.bundle)
    return ids[0] if ids else None


def stored_signers(digest: str) -> list[str]:
    """Signers of an artifact in the local store (what a device runs, when it was built or shipped
    from here); [] when the store does not hold it."""
    hexd = artifact.short(digest, 64)
    for candidate in (store_dir() / f"{hexd}.tar", store_dir() / hexd):
        if candidate.exists():
            return signer_ids_of(candidate)
    return []


def _public_key_id(path: Path) -> str | None:
    try:
        return artifact.key_id(artifact.load_public_key(path))
    except ArtifactError:
        return None


def untrusted_signer(shipment: Shipment, fleet) -> str | None:
    """None when the fleet trusts the shipment's signer; else one line saying which key signed it and
    how to make the fleet trust it (devices refuse it with `untrusted-key` otherwise)."""
    from edgeship.fleet.trust_delivery import revoked_ids, trusted_artifact_ids

    signers = signer_ids_of(shipment.bundle)
    trusted = trusted_artifact_ids(fleet)
    if any(k in trusted for k in signers):
        return None
    revoked = [k for k in signers if k in revoked_ids(fleet)]
    if revoked:
        return (f"the artifact is signed by revoked key {revoked[0]} (fleet '{fleet.name}' trust document); devices "
                f"will refuse it with revoked-key. Fix: rebuild and sign with a key the trust document lists")
    kid = signers[0] if signers else None
    signer = f"key {kid}" if kid else "no key (unsigned)"
    have = ", ".join(sorted(trusted)) or "none"
    local = default_signing_key().with_suffix(".pub")
    pub = f" ({local})" if kid and local.is_file() and _public_key_id(local) == kid else ""
    return (f"the artifact is signed by {signer}{pub}, which fleet '{fleet.name}' does not trust (trusted: {have}); "
            f"devices will refuse it with untrusted-key. Fix: add that public key{pub} to the Fleet's "
            f"trust.public_keys (and to trusted_keys in agent.yaml of devices set up before), or rebuild with "
            f"--key / EDGESHIP_SIGNING_KEY naming a key the fleet trusts")
