"""Transports: how the manager reaches a device. One small interface, one class per kind.

    push(device, bundle: Path) -> PushResult     idempotent (skips what the device has), resumable
    activate(device, digest)   -> Result         runs the device agent on the device
    status(device)             -> DeviceState
    rollback(device)           -> Result
    withdraw(device)           -> None           optional: cancel a desired state still pending on the
                                                 device (MQTT's retained `desired`); rollouts call it
                                                 when they stop, transports that keep none omit it

A class registers under the name used in Fleet manifests (`transport: ssh`) with
`@register("ssh")`. `get_transport(fleet, device)` builds one instance per fleet and kind
(`cls(fleet)`) and reuses it, so a transport may hold connections or a broker client; instances
must accept calls for different devices from several threads at once. The built-in kinds are
imported on first use, so a fleet of local devices never imports fabric or paho.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Callable, Protocol

from edgeship.errors import TransportError
from edgeship.fleet.types import DeviceState, PushResult, Result

if TYPE_CHECKING:
    from pathlib import Path

    from edgeship.fleet.inventory import Device, Fleet


class Transport(Protocol):
    def push(self, device: "Device", bundle: "Path") -> PushResult: ...
    def activate(self, device: "Device", digest: str) -> Result: ...
    def status(self, device: "Device") -> DeviceState: ...
    def rollback(self, device: "Device") -> Result: ...


_REGISTRY: dict[str, type] = {}
_BUILTIN = {
    "local": "edgeship.fleet.transports.local",
    "ssh": "edgeship.fleet.transports.ssh",
    "mqtt": "edgeship.fleet.transports.mqtt",
}
_LOCK = threading.Lock()


def register(name: str) -> Callable[[type], type]:
    def decorate(cls: type) -> type:
        _REGISTRY[name] = cls
        cls.kind = name
        return cls

    return decorate


def transport_class(name: str) -> type:
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(set(_REGISTRY) | set(_BUILTIN)))
        raise TransportError("-", f"unknown transport {name!r} (known: {known})") from None


def get_transport(fleet: "Fleet", device: "Device") -> Transport:
    """The transport instance for this device's kind, shared by every device of the fleet."""
    with _LOCK:
        cache = fleet.__dict__.setdefault("_transport_instances", {})
        if device.transport not in cache:
            try:
                cls = transport_class(device.transport)
            except TransportError as err:
                raise TransportError(device.id, str(err).split(": ", 1)[-1]) from None
            cache[device.transport] = cls(fleet)
        return cache[device.transport]


def close_transports(fleet: "Fleet") -> None:
    """Close connections held by the fleet's transports (those that have a `close()`)."""
    with _LOCK:
        cache = fleet.__dict__.pop("_transport_instances", {})
    for instance in cache.values():
        close = getattr(instance, "close", None)
        if close:
            close()


__all__ = ["Transport", "register", "get_transport", "transport_class", "close_transports", "PushResult", "Result", "DeviceState"]
