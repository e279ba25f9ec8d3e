"""Push and activate one bundle on many devices, with bounded concurrency and a progress bar.

The direct path (`edgeship deploy`) that rollouts build their waves on. Concurrency is a
ThreadPoolExecutor of `parallel` workers, never a thread per host (fabric's ThreadingGroup starts
one per host with no cap, DESIGN pitfalls); every device gets an outcome, failures included.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from edgeship.errors import EdgeshipError
from edgeship.fleet.inventory import Device, Fleet
from edgeship.fleet.transports import get_transport
from edgeship.fleet.types import PushResult, Result


@dataclass
class DeviceOutcome:
    device_id: str
    transport: str
    ok: bool
    stage: str  # where it ended: "push", "activate" or "done"
    reason: str = ""
    message: str = ""
    push: PushResult | None = None
    result: Result | None = None
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)


class Progress:
    """A one-line progress bar on stderr (a line per device when stderr is not a terminal)."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True):
        self.total, self.done, self.failed, self.bytes = total, 0, 0, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.streamed = 0
        self.drawn = 0.0

    def add_bytes(self, n: int) -> None:
        """Bytes uploaded so far (called by transports from worker threads); redraws at most 5x/s."""
        with self.lock:
            self.streamed += n
            if self.tty and time.monotonic() - self.drawn > 0.2:
                self.drawn = time.monotonic()
                self.stream.write("\r" + self._line())
                self.stream.flush()

    def _line(self) -> str:
        width = 24
        filled = int(width * self.done / max(1, self.total))
        bar = "#" * filled + "-" * (width - filled)
        sent = max(self.bytes, self.streamed)
        return (f"[{bar}] {self.done}/{self.total} devices, {self.failed} failed, "
                f"{sent / 1e6:.1f} MB sent, {time.monotonic() - self.start:.1f}s")

    def update(self, outcome: DeviceOutcome) -> None:
        if not self.enabled:
            return
        with self.lock:
            self.done += 1
            self.failed += 0 if outcome.ok else 1
            self.bytes += outcome.push.bytes_sent if outcome.push else 0
            line = self._line()
            if self.tty:
                self.stream.write("\r" + line + ("\n" if self.done == self.total else ""))
            else:
                status = "ok" if outcome.ok else f"FAILED ({outcome.reason})"
                self.stream.write(f"{line}  {outcome.device_id} {status}\n")
            self.stream.flush()


def deploy_one(fleet: Fleet, device: Device, bundle: Path, digest: str, activate: bool = True) -> DeviceOutcome:
    start = time.monotonic()
    outcome = DeviceOutcome(device.id, device.transport, False, "push")
    try:
        transport = get_transport(fleet, device)
        outcome.push = transport.push(device, bundle)
        if not activate:
            outcome.ok, outcome.stage = True, "done"
        else:
            outcome.stage = "activate"
            result = transport.activate(device, digest)
            outcome.result, outcome.figures = result, dict(result.figures or {})
            outcome.ok, outcome.reason, outcome.message = result.ok, result.reason, result.message
            if result.ok:
                outcome.stage = "done"
    except EdgeshipError as err:
        default = "unreachable" if outcome.stage == "push" else "error"
        outcome.reason = getattr(err, "reason", None) or default
        outcome.message = str(err).split(": ", 1)[-1] if str(err).startswith(device.id) else str(err)
    except Exception as err:  # one device's surprise must not sink the others' results
        outcome.reason, outcome.message = "error", f"{type(err).__name__}: {err}"
    outcome.seconds = time.monotonic() - start
    return outcome


def deploy(fleet: Fleet, devices: list[Device], bundle: Path, digest: str, parallel: int = 4,
           progress: Progress | None = None, activate: bool = True,
           on_outcome: Callable[[DeviceOutcome], None] | None = None) -> list[DeviceOutcome]:
    """Push (and activate) `bundle` on every device, `parallel` at a time; outcomes in device order."""
    outcomes: dict[str, DeviceOutcome] = {}
    if progress is not None and progress.enabled:
        for dev in devices:  # transports that can report upload bytes feed the bar
            try:
                transport = get_transport(fleet, dev)
            except EdgeshipError:
                continue  # reported per device by deploy_one
            if hasattr(transport, "on_bytes"):
                transport.on_bytes = progress.add_bytes
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="deploy") as pool:
        futures = {pool.submit(deploy_one, fleet, dev, bundle, digest, activate): dev for dev in devices}
        for future in as_completed(futures):
            outcome = future.result()
            outcomes[outcome.device_id] = outcome
            if progress:
                progress.update(outcome)
            if on_outcome:
                on_outcome(outcome)
    return [outcomes[d.id] for d in devices]
