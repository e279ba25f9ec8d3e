"""The manager's view of the fleet's trust chain (`trust.document` in the Fleet manifest): what the
transports deliver to devices, and which keys the fleet trusts or has revoked, for plan's warnings.

Transports deliver the chain alongside every push (local and SSH as `incoming/trust-chain.json`,
MQTT as the retained `<prefix>/trust` message), and `edgeship keys trust push` delivers it on its own
through the optional transport method `deliver_trust(device, data) -> Result`.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization

from edgeship import artifact
from edgeship.errors import ArtifactError, EdgeshipError, UsageError
from edgeship.fleet.trust import TrustDocument, chain_bytes, load_chain
from edgeship.fleet.types import Result


def fleet_chain(fleet) -> list[TrustDocument]:
    """The fleet's chain (read once per Fleet object); [] when the fleet names none."""
    path = getattr(fleet, "trust_document", None)
    if not path:
        return []
    cached = fleet.__dict__.get("_trust_chain")
    if cached is None:
        cached = fleet.__dict__["_trust_chain"] = load_chain(Path(path))
    return cached


def fleet_chain_bytes(fleet) -> bytes | None:
    chain = fleet_chain(fleet)
    return chain_bytes(chain) if chain else None


def fleet_document(fleet) -> TrustDocument | None:
    chain = fleet_chain(fleet)
    return max(chain, key=lambda d: d.version) if chain else None


def first_root_pems(fleet) -> tuple[list[bytes], int] | None:
    """The root public keys (PEM) and threshold of the chain's first document: what a device gets on
    first contact (it then walks the chain from there, so later root rotations reach it too)."""
    chain = fleet_chain(fleet)
    if not chain:
        return None
    root = min(chain, key=lambda d: d.version).role("root")
    pems = [artifact.public_key_from_raw(raw).public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
            for _, raw in sorted(root.keys.items())]
    return pems, root.threshold


def trusted_artifact_ids(fleet) -> set[str]:
    """Key ids the fleet's devices accept for artifacts: the newest trust document's, else the key files'."""
    doc = fleet_document(fleet)
    if doc is not None:
        return set(doc.role("artifacts").keys)
    ids = set()
    for path in getattr(fleet, "trusted_keys", []) or []:
        try:
            ids.add(artifact.key_id(artifact.load_public_key(Path(path))))
        except ArtifactError:
            continue
    return ids


def revoked_ids(fleet) -> frozenset:
    doc = fleet_document(fleet)
    return doc.revoked if doc is not None else frozenset()


def deliver(fleet, devices: list, transports) -> list[Result]:
    """Deliver the fleet's chain to each device (no bundle); one Result per device."""
    data = fleet_chain_bytes(fleet)
    if data is None:
        raise UsageError(f"fleet {fleet.name}: no trust.document in {fleet.source}: nothing to deliver")
    results = []
    for device in devices:
        try:
            transport = transports.for_device(device)
            method = getattr(transport, "deliver_trust", None)
            if method is None:
                results.append(Result(False, device.id, "", "unsupported",
                                      f"transport {device.transport} cannot deliver trust documents"))
                continue
            results.append(method(device, data))
        except EdgeshipError as err:
            results.append(Result(False, device.id, "", getattr(err, "reason", "unreachable") or "unreachable", str(err)))
    return results


__all__ = ["fleet_chain", "fleet_chain_bytes", "first_root_pems", "fleet_document", "trusted_artifact_ids", "revoked_ids", "deliver"]
