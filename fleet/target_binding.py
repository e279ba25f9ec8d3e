"""Target binding: an artifact runs only on the chip it was built for.

The package stage writes `target` (the target profile) and `runtime` into bundle.json, which is
inside the signature. The manager (`plan`, `apply`) refuses to send an artifact to a device whose
Fleet `target` differs, and the agent refuses to activate it against its own agent.yaml `target`:
either check alone stops a wrong-chip installation.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeship.errors import AgentError


def built_for(meta: dict) -> str:
    """`target (runtime runtime)` as said in messages."""
    target = meta.get("target") or "no target"
    runtime = meta.get("runtime")
    return f"{target} (runtime {runtime})" if runtime else str(target)


def mismatch(meta: dict, device_target: str | None) -> str | None:
    """Why an artifact with bundle.json `meta` must not go to a device of `device_target`; None when
    it may (or when the device names no target: nothing to check)."""
    if not device_target:
        return None
    target = meta.get("target") if isinstance(meta, dict) else None
    if target == device_target:
        return None
    name = meta.get("name", "?") if isinstance(meta, dict) else "?"
    if not target:
        return f"artifact {name} names no target (built before target binding), device target is {device_target}"
    return f"artifact {name} is built for {built_for(meta)}, device target is {device_target}"


def check_release(folder: Path, device_target: str | None) -> None:
    """Raise AgentError('wrong-target') when a verified release is not built for this device."""
    if not device_target:
        return
    try:
        meta = json.loads((Path(folder) / "bundle.json").read_text())
    except (OSError, ValueError) as err:
        raise AgentError(f"bundle.json unreadable: {err}", "tampered") from None
    why = mismatch(meta if isinstance(meta, dict) else {}, device_target)
    if why:
        raise AgentError(f"wrong target: {why}: refused", "wrong-target")


def refused_devices(meta: dict, devices: list) -> dict[str, str]:
    """device id -> one line, for every device whose Fleet `target` the artifact is not built for."""
    out = {}
    for device in devices:
        why = mismatch(meta, getattr(device, "target", None))
        if why:
            out[device.id] = why
    return out


__all__ = ["mismatch", "check_release", "refused_devices", "built_for"]
