"""Typed events of long operations (a build, an apply, a reconcile pass).

The build runner and the rollout engine report what happens as these dataclasses, not as text:
a callback given to `edgeship.api` receives them as they happen (like pyinfra's state callbacks),
`-o ndjson` writes each one as a JSON line, and the human progress lines on stderr are derived from
them (`Event.text()`), so the words and the data never drift apart.

Every event has `type` (its class name: the key a consumer dispatches on) and `to_dict()`, whose
form is versioned with the rest of the machine-readable output (`apiVersion: edgeship/v1`,
schema `edgeship/schemas/event.schema.json`). Callbacks may be called from worker threads (an
apply converges devices in parallel): keep them short and thread-safe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar

from edgeship import artifact

API_VERSION = "edgeship/v1"


def _short(digest: str | None) -> str:
    return artifact.short(digest) if digest else "?"


@dataclass
class Event:
    """Base of every event. `ts` is the wall-clock time it happened (seconds since the epoch)."""

    type: ClassVar[str] = "Event"
    ts: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        """The event as a versioned JSON object: apiVersion, kind "Event", type, then its fields."""
        data: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "Event", "type": self.type}
        for f in fields(self):
            data[f.name] = getattr(self, f.name)
        return data

    def text(self) -> str | None:
        """The human progress line for this event, or None when it prints nothing."""
        return None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.type = cls.__name__
        EVENT_TYPES[cls.__name__] = cls


EVENT_TYPES: dict[str, type[Event]] = {}
EventCallback = Callable[[Event], None]


# --- build ---------------------------------------------------------------------------------------

@dataclass
class BuildStarted(Event):
    pipeline: str
    stages: list[str]
    target: str | None = None


@dataclass
class StageStarted(Event):
    pipeline: str
    stage: str
    index: int   # 1-based position in the build
    total: int


@dataclass
class StageFinished(Event):
    pipeline: str
    stage: str
    index: int
    total: int
    status: str  # ran | cached | failed
    seconds: float
    key: str = ""
    reason: str = ""  # why it failed

    def line(self, width: int) -> str:
        head = f"[{self.index}/{self.total}] {self.stage:<{width}}"
        if self.status == "failed":
            return f"{head}  FAILED   {self.seconds:7.2f} s"
        return f"{head}  {self.status:<9}{self.seconds:7.2f} s  {self.key[:12]}"

    def text(self) -> str | None:
        return self.line(len(self.stage))


@dataclass
class BuildFinished(Event):
    pipeline: str
    ok: bool
    seconds: float
    digest: str | None = None
    error: str | None = None


# --- rollouts ------------------------------------------------------------------------------------

@dataclass
class RolloutStarted(Event):
    rollout: str
    run: int            # the journal's run id (unique across rollouts)
    run_number: int | None  # this rollout's n-th run
    digest: str
    devices: int
    waves: int
    parallel: int
    resumed: bool = False

    def text(self) -> str | None:
        if self.resumed:
            return f"{self.rollout}: resuming run {self.run_number} ({_short(self.digest)})"
        return (f"{self.rollout}: run {self.run_number}: {_short(self.digest)} to {self.devices} device(s) in "
                f"{self.waves} wave(s), {self.parallel} at a time")


@dataclass
class DevicePushed(Event):
    rollout: str
    wave: str
    device: str
    bytes: int
    skipped: bool = False  # the device held the bundle already

    def text(self) -> str | None:
        what = "skipped (already there)" if self.skipped else human_bytes(self.bytes)
        return f"{self.rollout} [{self.wave}] {self.device} push {what}"


@dataclass
class DeviceActivated(Event):
    rollout: str
    wave: str
    device: str
    digest: str
    p95_ms: float | None = None
    recovered: bool = False  # switched just before a manager restart; the record was finished after it

    def text(self) -> str | None:
        if self.recovered:
            return f"{self.rollout} [{self.wave}] {self.device} activate ok (recovered after restart)"
        smoke = f" (smoke p95 {self.p95_ms:.3g} ms)" if self.p95_ms is not None else ""
        return f"{self.rollout} [{self.wave}] {self.device} activate ok{smoke}"


@dataclass
class DeviceFailed(Event):
    """A device did not reach (or leave) a release. `action`: activate | rollback, or None when it
    failed before its activation could start (status, push). `raised`: the transport raised (the
    message says it all) rather than the agent answering with a reason."""

    rollout: str
    wave: str | None
    device: str
    action: str | None
    reason: str
    message: str
    raised: bool = False

    def text(self) -> str | None:
        where = f"{self.rollout} [{self.wave}] {self.device}" if self.wave else f"{self.rollout} {self.device}"
        what = f"{self.action} FAILED" if self.action else "FAILED"
        why = self.message if self.raised else f"{self.reason}: {self.message}"
        return f"{where} {what}: {why}"


@dataclass
class DeviceRolledBack(Event):
    rollout: str
    wave: str | None
    device: str
    to: str | None  # the release it runs again

    def text(self) -> str | None:
        if self.wave is None:
            return f"{self.rollout} {self.device} rolled back"
        return f"{self.rollout} [{self.wave}] {self.device} rolled back to {_short(self.to)}"


@dataclass
class WaveSoaking(Event):
    rollout: str
    wave: str
    seconds: float

    def text(self) -> str | None:
        return f"{self.rollout}: soaking {self.wave} for {self.seconds:g}s"


@dataclass
class GatePassed(Event):
    rollout: str
    wave: str
    reason: str
    figures: dict = field(default_factory=dict)

    def text(self) -> str | None:
        return f"{self.rollout}: gate {self.wave}: passed: {self.reason}"


@dataclass
class GateFailed(Event):
    rollout: str
    wave: str
    reason: str
    figures: dict = field(default_factory=dict)

    def text(self) -> str | None:
        return f"{self.rollout}: gate {self.wave}: FAILED: {self.reason}"


@dataclass
class WaveRolledBack(Event):
    rollout: str
    wave: str
    devices: int

    def text(self) -> str | None:
        return f"{self.rollout}: rolled back {self.devices} device(s) of {self.wave}"


@dataclass
class RolloutPaused(Event):
    rollout: str
    reason: str

    def text(self) -> str | None:
        return f"{self.rollout}: pausing ({self.reason})"


@dataclass
class RolloutFinished(Event):
    rollout: str
    run: int | None
    state: str  # done | unchanged | failed | paused | aborted | rolled-back
    reason: str = ""


@dataclass
class Notice(Event):
    """A line worth telling that is no state change of its own (a takeover, a withdrawn desired
    state, a reconcile pass summary)."""

    message: str
    rollout: str | None = None

    def text(self) -> str | None:
        return self.message


def from_dict(data: dict) -> Event:
    """An event back from its `to_dict()` form (for consumers of NDJSON streams)."""
    cls = EVENT_TYPES.get(str(data.get("type")))
    if cls is None:
        raise ValueError(f"unknown event type {data.get('type')!r}")
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


__all__ = ["API_VERSION", "Event", "EventCallback", "EVENT_TYPES", "from_dict", "BuildStarted", "StageStarted",
           "StageFinished", "BuildFinished", "RolloutStarted", "DevicePushed", "DeviceActivated", "DeviceFailed",
           "DeviceRolledBack", "WaveSoaking", "GatePassed", "GateFailed", "WaveRolledBack", "RolloutPaused",
           "RolloutFinished", "Notice"]
