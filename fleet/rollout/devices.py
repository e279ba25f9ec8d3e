"""The devices a rollout targets and the transports that reach them.

Kept apart from the engine so tests of the pure logic can hand in their own fleet and transports,
and so a rollout never knows which transport kind it talks to.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from edgeship.errors import EdgeshipError, RolloutError

STATUS_PARALLEL = 16


def load_fleet_and_select(spec) -> tuple[Any, list]:
    """Load the rollout's Fleet manifest and pick the devices its selector matches."""
    from edgeship.fleet.inventory import load_fleet

    fleet = load_fleet(spec.fleet_path)
    devices = fleet.select(spec.selector or {})
    if not devices:
        raise RolloutError(f"{spec.name}: the selector matches no device in fleet {fleet.name} ({spec.fleet_path})")
    return fleet, list(devices)


class Transports:
    """One transport per kind per fleet, created on first use and closed at the end."""

    def __init__(self, fleet, factory: Callable | None = None):
        self.fleet = fleet
        self._factory = factory
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    def for_device(self, device):
        with self._lock:
            key = device.transport
            if key not in self._cache:
                factory = self._factory
                if factory is None:
                    from edgeship.fleet.transports import get_transport as factory
                self._cache[key] = factory(self.fleet, device)
            return self._cache[key]

    def close(self) -> None:
        if self._factory is None:  # the registry caches instances on the fleet: close them there
            from edgeship.fleet.transports import close_transports

            self._cache.clear()
            close_transports(self.fleet)
            return
        for transport in self._cache.values():
            close = getattr(transport, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # closing is best effort; the rollout's outcome is already recorded
                    pass
        self._cache.clear()


def failure_reason(err: BaseException, default: str = "unreachable") -> str:
    """The machine-readable reason a transport error carries (`host-key`, `timeout`, ...), so a
    refused host key is never relabelled `unreachable` in the journal, the gate or the history."""
    reason = getattr(err, "reason", None)
    return reason if isinstance(reason, str) and reason else default


def fetch_statuses(devices: list, transports: Transports, parallel: int = STATUS_PARALLEL) -> dict[str, Any]:
    """device id -> DeviceState, or the EdgeshipError that stopped us reading it (an unreachable device)."""

    def one(device):
        try:
            return device.id, transports.for_device(device).status(device)
        except EdgeshipError as err:
            return device.id, err
        except OSError as err:
            return device.id, RolloutError(f"{device.id}: {err}")

    if not devices:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(devices)))) as pool:
        return dict(pool.map(one, devices))


def withdraw_pending(devices: list, transports: Transports, log: Callable[[str], None]) -> list[str]:
    """Cancel the desired state a stopped rollout left pending on these devices (transports that
    keep one, like MQTT's retained `desired`, have `withdraw(device)`; the others hold nothing).
    Like cancelling a job: a device that comes back late must not act on it. Returns the ids done."""
    done = []
    for device in devices:
        try:
            transport = transports.for_device(device)
            withdraw = getattr(transport, "withdraw", None)
            if withdraw is None:
                continue
            withdraw(device)
            done.append(device.id)
        except EdgeshipError as err:
            log(f"{device.id}: could not withdraw its pending desired state: {err}")
    return done
