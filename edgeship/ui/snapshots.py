"""One snapshot of edgeship's state, shared by every page, live-update stream and /metrics scrape.

Why: reading the fleet asks every device (over SSH or MQTT for real fleets), so it happens at most
once per `interval`, in one background thread, never once per browser tab. The version goes up
when something a viewer would notice changed (`Snapshot.signature`); the live-update stream
watches it.
"""

from __future__ import annotations

import threading
import time

from edgeship.ui.source import StateSource
from edgeship.ui.views import Snapshot


class SnapshotStore:
    def __init__(self, source: StateSource, interval: float = 2.0):
        self.source = source
        self.interval = max(0.2, float(interval))
        self.version = 0
        self._snapshot: Snapshot | None = None
        self._signature = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def current(self) -> Snapshot:
        """The latest snapshot (read now if none was taken yet)."""
        snap = self._snapshot
        return snap if snap is not None else self.refresh()

    def refresh(self) -> Snapshot:
        with self._lock:
            snap = self.source.snapshot()
            signature = snap.signature()
            self._snapshot = snap
            if signature != self._signature:
                self._signature = signature
                self.version += 1
        return snap

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="edgeship-ui-refresh", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.source.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.refresh()
            except Exception as err:  # a bad read must not end live updates; shown on the next good one
                if self._snapshot is not None:
                    self._snapshot.errors.append(f"refresh failed: {type(err).__name__}: {err}")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
