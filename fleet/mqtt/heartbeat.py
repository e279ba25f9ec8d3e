"""The device service's heartbeat and its watch on its own root.

Why: the manager knows an MQTT device only through what the device publishes. A release switched on
the device itself (`edgeship agent rollback` by a technician, a smoke-failure revert) changes the
`current` link without any message, and a status refreshed only at connect makes "last seen" the
connect time. So the service re-reads `current` on every tick (a readlink: cheap) and republishes
`reported` when it differs from what it last reported, and it refreshes its retained `online`
status every `interval_s`: "last seen" is then at most one heartbeat old.
"""

from __future__ import annotations

import time
from typing import Callable

_UNSET = object()


class Heartbeat:
    def __init__(self, interval_s: float, read_current: Callable[[], str | None],
                 clock: Callable[[], float] = time.monotonic):
        self.interval_s = max(0.1, float(interval_s))
        self._read_current = read_current
        self._clock = clock
        self._last_beat = clock()
        self._reported: object = _UNSET

    def due(self) -> bool:
        """True when the retained `online` status should be refreshed now (and counts it as done)."""
        now = self._clock()
        if now - self._last_beat < self.interval_s:
            return False
        self._last_beat = now
        return True

    def beaten(self) -> None:
        """A status was just published for another reason (a connect): the next beat is one interval away."""
        self._last_beat = self._clock()

    def reported(self, current: str | None) -> None:
        """Remember the release the last `reported` document named."""
        self._reported = current

    def changed(self) -> bool:
        """True when the root runs another release than the last `reported` document said."""
        return self._reported is not _UNSET and self._read_current() != self._reported
