"""Typed results of `edgeship.api` calls: plain dataclasses, each with `to_dict()`.

The same dictionaries are what `-o json` prints, wrapped in a versioned document (`document()`:
`apiVersion: edgeship/v1` and a `kind`), validated against the JSON Schemas in
`edgeship/schemas/` (one per kind). Add fields freely; never rename or remove one within v1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from edgeship.events import API_VERSION


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_dict() if hasattr(value, "to_dict") else dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _Result:
    """to_dict(): every public field, recursively; properties named in `_derived` too."""

    _derived: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if not f.name.startswith("_")}
        for name in self._derived:
            data[name] = _plain(getattr(self, name))
        return data


def document(kind: str, **payload: Any) -> dict[str, Any]:
    """A versioned output document: what every `-o json` prints."""
    return {"apiVersion": API_VERSION, "kind": kind, **_plain(payload)}


# --- build ---------------------------------------------------------------------------------------

@dataclass
class StageOutcome(_Result):
    name: str
    status: str  # ran | cached | failed
    seconds: float
    key: str = ""
    reason: str = ""


@dataclass
class BuildOutcome(_Result):
    """One Pipeline's build. On failure `error` says why; `budget` holds the exceeded budgets."""

    pipeline: str
    ok: bool
    seconds: float
    digest: str | None = None
    artifact_dir: str | None = None   # in the artifact store
    artifact_tar: str | None = None
    key_id: str | None = None
    stages: list[StageOutcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    exit_code: int = 0
    budget: list[dict] = field(default_factory=list)    # metric, budget, measured, by
    diagnostics: list[str] = field(default_factory=list)
    exported_dir: str | None = None   # where `output_dir` received a copy
    exported_tar: str | None = None
    summary: str = field(default="", repr=False)        # the human table (not in to_dict)
    _exception: Exception | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data.pop("summary", None)
        return data

    def raise_for_error(self) -> None:
        """Raise the build's typed error (BudgetExceeded, BuildError, ...) when it failed."""
        if self.ok:
            return
        if self._exception is not None:
            raise self._exception
        from edgeship.errors import BuildError

        raise BuildError(self.error or "build failed")


@dataclass
class CompareRow(_Result):
    target: str
    accelerator_pct: float | None
    partitions: int
    host_round_trips: int | None
    latency_ms: float | None
    peak_memory_kb: float | None
    budget: dict
    meets_budget: bool | None
    error: str | None = None
    extra: dict = field(default_factory=dict)  # further columns a backend adds (vendor figures, ...)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data.update(data.pop("extra"))  # flat, as compare's rows always were
        return data


# --- rollouts ------------------------------------------------------------------------------------

@dataclass
class ReleaseRef(_Result):
    digest: str | None
    name: str | None  # pipeline vN, or the short digest of an artifact never seen here

    @classmethod
    def of(cls, digest: str | None, catalog) -> "ReleaseRef":
        return cls(digest, catalog.get(digest).name if digest else None)


@dataclass
class PlanDevice(_Result):
    device: str
    transport: str
    wave: str
    current: ReleaseRef
    desired: ReleaseRef
    action: str  # none | push+activate | drift | unreachable
    note: str = ""


@dataclass
class RolloutPlan(_Result):
    rollout: str
    fleet: str
    release: ReleaseRef
    devices: list[PlanDevice]
    owned_elsewhere: dict[str, str] = field(default_factory=dict)  # device -> the rollout that owns it
    untrusted_signer: str | None = None  # why devices will refuse the artifact, when they will
    warnings: list[str] = field(default_factory=list)  # the manifest's warnings (file:line:col: ...)
    _derived = ("changes", "errors")

    @property
    def changes(self) -> bool:
        return any(d.action in ("push+activate", "drift") for d in self.devices)

    @property
    def errors(self) -> bool:
        return any(d.action in ("unreachable", "wrong-target") for d in self.devices)


@dataclass
class ApplyDevice(_Result):
    device: str
    wave: str
    before: ReleaseRef
    after: ReleaseRef
    result: str  # activated | unchanged | failed: <reason> | rolled back | not reached ...
    message: str = ""  # the full failure message, when it failed
    p95_ms: float | None = None
    bytes: int = 0


@dataclass
class GateResult(_Result):
    wave: str
    ok: bool
    reason: str
    figures: dict = field(default_factory=dict)


@dataclass
class ApplyResult(_Result):
    rollout: str
    run: int | None          # journal run id
    run_number: int | None   # this rollout's n-th run
    release: ReleaseRef
    state: str               # done | unchanged | failed | paused | aborted
    reason: str
    devices: list[ApplyDevice]
    gates: list[GateResult]
    bytes_pushed: int = 0
    devices_pushed: int = 0
    artifact_bytes: int = 0
    ok: bool = False                        # done or unchanged (the engine's verdict)
    per_device_ratio: float | None = None   # bytes sent per device that received any, over the artifact's size


@dataclass
class DeviceState(_Result):
    """One device as a rollout (or the fleet) sees it now."""

    device: str
    state: str  # on-target | elsewhere | offline | unreachable | online
    release: ReleaseRef
    online: bool | None = None
    last_seen: float | None = None
    transport: str | None = None
    reason: str = ""    # machine-readable, when something is wrong
    message: str = ""   # the full message that goes with it


@dataclass
class ReleaseCount(_Result):
    release: ReleaseRef
    devices: int


@dataclass
class RolloutStatus(_Result):
    name: str
    state: str
    reason: str
    run: int
    run_number: int | None
    release: ReleaseRef
    manifest: str
    fleet: str
    updated: float
    activated: int
    failed: int
    rolled_back: int
    bytes_pushed: int
    devices_pushed: int
    artifact_bytes: int
    gates: list[GateResult]
    sync: str | None       # Synced | OutOfSync | Unknown (None: the devices could not be asked)
    health: str | None     # Healthy | Progressing | Suspended | Degraded
    devices: list[DeviceState]
    releases: list[ReleaseCount]
    live_error: str | None = None
    _live: Any = field(default=None, repr=False, compare=False)  # the LiveStatus (status.derive), for the CLI


@dataclass
class RolloutSummary(_Result):
    name: str
    state: str
    reason: str
    fleet: str
    manifest: str
    release: ReleaseRef
    run: int
    run_number: int | None
    runs: int
    updated: float


@dataclass
class RunRecord(_Result):
    run: int
    number: int
    state: str
    reason: str
    release: ReleaseRef
    started: float
    finished: float | None


@dataclass
class StepRecord(_Result):
    run: int
    number: int
    ts: float
    device: str
    wave: int
    action: str
    ok: bool
    bytes: int
    reason: str = ""
    message: str = ""


@dataclass
class RolloutHistory(_Result):
    name: str
    runs: list[RunRecord]
    steps: list[StepRecord]


@dataclass
class RolledBackDevice(_Result):
    device: str
    ok: bool
    note: str


@dataclass
class RollbackResult(_Result):
    rollout: str
    devices: list[RolledBackDevice]
    _derived = ("ok",)

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.devices)


@dataclass
class FleetStatus(_Result):
    fleet: str
    devices: list[DeviceState]
    releases: list[ReleaseCount]
    _raw: list = field(default_factory=list, repr=False, compare=False)  # the transports' own reports


__all__ = ["document", "StageOutcome", "BuildOutcome", "CompareRow", "ReleaseRef", "PlanDevice", "RolloutPlan",
           "ApplyDevice", "GateResult", "ApplyResult", "DeviceState", "ReleaseCount", "RolloutStatus",
           "RolloutSummary", "RunRecord", "StepRecord", "RolloutHistory", "RolledBackDevice", "RollbackResult",
           "FleetStatus"]
