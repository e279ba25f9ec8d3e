"""Plain data shared by the agent, the transports and the rollout manager.

Kept free of behaviour so every transport (local, ssh, mqtt) can return the same shapes and a
rollout never needs to know which one it talks to. All of them round-trip through JSON
(`to_dict` / `from_dict`): the SSH transport reads them from the remote agent's stdout and the
MQTT transport from reported-state messages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


def _from_dict(cls, data: dict | None):
    data = data or {}
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class PushResult:
    """What a push did: bytes actually sent (0 when skipped), and whether the device already had it."""

    bytes_sent: int = 0
    skipped: bool = False
    device_id: str = ""
    digest: str = ""
    resumed_from: int = 0  # bytes already on the device when an interrupted upload was resumed
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "PushResult":
        return _from_dict(cls, data)


@dataclass
class Result:
    """Outcome of an agent operation (activate, rollback) on one device.

    `reason` is machine-readable when `ok` is false: tampered, bad-signature, unsigned, untrusted-key,
    unsafe-member, missing-file, extra-file, not-a-bundle, oversize, smoke-failed, disk-full,
    no-previous, not-found, unreachable, timeout, error, downgrade, wrong-device, not-running
    (the device does not report the target digest running), revoked-key, threshold (fewer artifact
    signatures than the trust document asks), trust-expired, wrong-target, and for trust chains
    untrusted-root, no-trust-root, bad-trust. `figures` carries numbers (smoke latency etc.).
    """

    ok: bool
    device_id: str = ""
    digest: str = ""
    reason: str = ""
    message: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Result":
        data = dict(data or {})
        data.setdefault("ok", False)
        return _from_dict(cls, data)


@dataclass
class DeviceState:
    """What a device reports: its running release, the one it would roll back to, its last result."""

    device_id: str
    online: bool = False
    current: str | None = None  # "sha256:<hex>" or None
    previous: str | None = None
    last_result: dict[str, Any] | None = None  # Result.to_dict()
    last_seen: float | None = None  # unix time
    disk_bytes: int | None = None  # bytes used under the device root
    releases: list[str] = field(default_factory=list)
    device: dict[str, Any] | None = None  # device_info: agent and runtime versions, free disk and memory
    trust: dict[str, Any] | None = None  # the device's trust document: {mode, version, expires, expired}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "DeviceState":
        data = dict(data or {})
        data.setdefault("device_id", "")
        return _from_dict(cls, data)


__all__ = ["PushResult", "Result", "DeviceState"]
