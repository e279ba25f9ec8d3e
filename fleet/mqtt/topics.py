"""The topic layout. Every topic of a device sits under `<prefix>/devices/<id>/`, so one ACL
pattern line per topic (`%u` = the device id as username) confines a device to its own topics.

    <prefix>/devices/<id>/desired    manager -> device, retained, QoS 1: the release it should hold/run
    <prefix>/devices/<id>/reported   device -> manager, retained: what it runs, last result, figures
    <prefix>/devices/<id>/status     device -> manager, retained: birth "online" / last will "offline"
    <prefix>/devices/<id>/events     device -> manager: progress and errors, not retained
    <prefix>/devices/<id>/req        device -> manager: chunk requests
    <prefix>/devices/<id>/chunks     manager -> device: chunk data answering the requests
    <prefix>/devices/<id>/trust      manager -> device, retained: a trust chain for this device only
    <prefix>/trust                   manager -> devices, retained: the fleet's trust chain (fleet/trust.py;
                                     self-authenticating, so any device may read it)
    <prefix>/manager/status          manager -> devices, retained: "online" on every (re)connect, so
                                     devices re-ask for chunks whose requests a restart may have lost
    <prefix>/chunks/<sha256 hex>     manager -> every device, retained (fan-out): one chunk, published
                                     once per release whatever the fleet size; devices read, never write
"""

from __future__ import annotations

import re

KINDS = ("desired", "reported", "status", "events", "req", "chunks", "trust")
DEVICE_READS = ("desired", "chunks", "trust")
DEVICE_WRITES = ("reported", "status", "events", "req")

_DEVICE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_CHUNK_ID = re.compile(r"^[0-9a-f]{64}$")
_PREFIX = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def valid_device_id(device_id: str) -> bool:
    return bool(_DEVICE_ID.match(device_id or ""))


def device_client_id(device_id: str) -> str:
    """The MQTT client id a device's service connects with; the broker binds each device account to it
    (fleet/mqtt/dynsec.py), so no other account's connection can take over the device's session."""
    return f"edgeship-device-{device_id}"


def valid_prefix(prefix: str) -> bool:
    return bool(_PREFIX.match(prefix or ""))


class Topics:
    """Topic names under one prefix."""

    def __init__(self, prefix: str = "edgeship"):
        if not valid_prefix(prefix):
            raise ValueError(f"invalid MQTT topic prefix {prefix!r} (letters, digits, . _ - and / only)")
        self.prefix = prefix

    def device(self, device_id: str, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown topic kind {kind!r}")
        if not valid_device_id(device_id):
            raise ValueError(f"invalid device id {device_id!r} for an MQTT topic")
        return f"{self.prefix}/devices/{device_id}/{kind}"

    def manager_status(self) -> str:
        return f"{self.prefix}/manager/status"

    def fleet_trust(self) -> str:
        return f"{self.prefix}/trust"

    def chunk(self, chunk_id: str) -> str:
        """The shared, content-addressed topic of one chunk (fan-out transfer)."""
        if not _CHUNK_ID.match(chunk_id or ""):
            raise ValueError(f"invalid chunk id {chunk_id!r}")
        return f"{self.prefix}/chunks/{chunk_id}"

    def all_chunks(self) -> str:
        return f"{self.prefix}/chunks/+"

    def all_devices(self, kind: str) -> str:
        """Wildcard subscription over every device's topic of one kind."""
        if kind not in KINDS:
            raise ValueError(f"unknown topic kind {kind!r}")
        return f"{self.prefix}/devices/+/{kind}"

    def parse(self, topic: str) -> tuple[str, str] | None:
        """`<prefix>/devices/<id>/<kind>` -> (id, kind); None for anything else."""
        head = f"{self.prefix}/devices/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head):].split("/")
        if len(rest) != 2 or rest[1] not in KINDS or not valid_device_id(rest[0]):
            return None
        return rest[0], rest[1]
