"""Signed desired-state intents: what a manager asks of a device over MQTT, and whether the device
believes it.

An intent is the `desired` document (see mqtt/protocol.py) plus `device`, the one device it is for,
and `sig`: an ed25519 signature by the fleet's signing key (the key that signs artifacts) over a
fixed context string and the canonical JSON of every other field. Whoever can publish on the topic
(a compromised broker, a leaked manager password) can neither forge an intent, point one at another
device, nor change its action, digest, url, size or seq.

Ordering is a per-device counter, never a clock: the manager publishes one more than the highest
seq it knows for the device (the device's own report, the retained intent, its own last publish) and
the device acts only on a seq above the last one it handled. A manager whose clock jumps, or two
managers with different clocks, cannot make a device ignore later intents; a huge seq can only come
from the signing key, and even then the next intent is simply one above it (up to MAX_SEQ).
"""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.exceptions import InvalidSignature

from edgeship import artifact
from edgeship.errors import AgentError, ArtifactError
from edgeship.fleet.mqtt import protocol

CONTEXT = b"edgeship-desired-state-v1\n"  # never the bytes of a SHA256SUMS: one key, two meanings kept apart
MAX_SEQ = protocol.MAX_SEQ
SIGNED_WHAT = "desired state"


def signed_bytes(doc: dict) -> bytes:
    """The bytes the signature covers: the context and the canonical JSON of all but `sig`."""
    return CONTEXT + protocol.dumps({k: v for k, v in doc.items() if k != "sig"})


def sign(doc: dict, private_key: Path) -> dict:
    """The intent with its `sig` (the document must already name its `device`)."""
    if not doc.get("device"):
        raise ValueError("an intent names the device it is for")
    body = {k: v for k, v in doc.items() if k != "sig"}
    return {**body, "sig": artifact.sign_bytes(signed_bytes(body), private_key)}


def verify(doc: dict, device_id: str, trusted_keys: list[Path] | artifact.KeyRing,
           require_signature: bool = True) -> None:
    """Raise AgentError (reason unsigned | bad-signature | untrusted-key | revoked-key | wrong-device)
    unless the intent is for this device and signed by a trusted key (key files, or the desired-state
    keys of the device's trust document as a KeyRing)."""
    named = doc.get("device")
    if named != device_id and (require_signature or named is not None):
        raise AgentError(f"desired state is for device {doc.get('device')!r}, not {device_id!r}", "wrong-device")
    if not require_signature:
        return
    sig = doc.get("sig")
    try:
        ring = trusted_keys if isinstance(trusted_keys, artifact.KeyRing) else artifact.KeyRing.from_files(list(trusted_keys))
        ring.verify(signed_bytes(doc), protocol.dumps(sig) if isinstance(sig, dict) else None, what=SIGNED_WHAT)
    except ArtifactError as err:
        raise AgentError(str(err), err.reason) from None


def signed_by(doc: dict, public_key) -> bool:
    """True when `doc` carries a valid signature by this (loaded) public key: a manager counts only
    its own fleet's retained intents when it picks the next seq, never a forged huge one."""
    sig = doc.get("sig")
    try:
        public_key.verify(base64.b64decode(sig["signature"], validate=True), signed_bytes(doc))
        return True
    except (InvalidSignature, KeyError, TypeError, ValueError):
        return False


def next_seq(*known: int | None) -> int:
    """One above every seq known for the device (its report, the retained intent, our last one)."""
    highest = max([k for k in known if isinstance(k, int) and not isinstance(k, bool)] + [0])
    if highest >= MAX_SEQ:
        raise ValueError(f"desired seq {highest} is at the maximum; reset the device's mqtt-state.json")
    return highest + 1
