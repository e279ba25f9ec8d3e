"""The dashboard's plain views of edgeship's state: what the pages and the metrics show, built by
`edgeship.ui.source` and never touching the journal, the devices or the store themselves."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from edgeship import artifact


# What a device's health can be, in the order the fleet page counts them (docs/ui.md says what each means).
HEALTHS = ("healthy", "updating", "out-of-sync", "drifted", "failed", "offline", "unreachable", "empty", "unknown")


@dataclass
class DeviceView:
    id: str
    fleet: str
    target: str
    transport: str
    labels: dict[str, str]
    current: str | None = None       # digest it runs now
    desired: str | None = None       # digest its rollout wants
    rollout: str = ""                # the rollout that owns it
    health: str = "unknown"          # one of HEALTHS
    reason: str = ""
    online: bool = False
    last_seen: float | None = None
    p95_ms: float | None = None      # smoke p95 of its last activation


@dataclass
class FleetView:
    name: str
    source: str
    devices: list[DeviceView] = field(default_factory=list)
    error: str = ""

    def count(self, health: str) -> int:
        return sum(1 for d in self.devices if d.health == health)


@dataclass
class GateView:
    wave: int
    name: str
    ok: bool
    reason: str
    figures: dict
    ts: float | None = None


@dataclass
class WaveView:
    index: int
    name: str
    devices: list[str]
    activated: int = 0
    failed: int = 0
    rolled_back: int = 0
    gate: GateView | None = None

    @property
    def pending(self) -> int:
        return max(0, len(self.devices) - self.activated - self.failed - self.rolled_back)

    @property
    def status(self) -> str:
        if self.gate is not None:
            return "passed" if self.gate.ok else "failed"
        if self.activated or self.failed:
            return "in progress"
        return "waiting"


@dataclass
class EventView:
    ts: float
    kind: str        # run | step | gate
    device: str
    wave: int | None
    action: str
    ok: bool | None
    text: str
    bytes: int = 0   # a push's bytes sent


@dataclass
class RolloutView:
    name: str
    state: str
    reason: str
    run_id: int
    fleet: str
    manifest: str
    artifact: str
    updated: float
    waves: list[WaveView] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    timeline: list[EventView] = field(default_factory=list)
    bytes_pushed: int = 0            # this run
    bytes_total: int = 0             # every run of this rollout
    devices_total: int = 0
    devices_done: int = 0
    devices_failed: int = 0
    rolled_back: int = 0
    smoke_p95_ms: list[float] = field(default_factory=list)  # successful activations of this run
    error: str = ""                  # why the waves could not be read from the manifest

    @property
    def progress(self) -> float:
        return self.devices_done / self.devices_total if self.devices_total else 0.0

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass
class BudgetRow:
    metric: str
    limit: object
    measured: object
    ok: bool
    by: str = ""


@dataclass
class ArtifactView:
    digest: str
    name: str
    target: str
    created: str
    verdict: bool | None            # every budget met (None: no budget checked)
    budgets: list[BudgetRow] = field(default_factory=list)
    latency_ms: float | None = None  # estimated
    peak_memory_kb: float | None = None
    accelerator_pct: float | None = None
    measured_p95_ms: float | None = None
    has_report: bool = False


@dataclass
class BuildView:
    name: str
    ok: bool
    error: str
    seconds: float
    finished: float | None
    digest: str
    stages: list[dict] = field(default_factory=list)


@dataclass
class Snapshot:
    taken: float
    fleets: list[FleetView]
    rollouts: list[RolloutView]
    artifacts: list[ArtifactView]
    builds: list[BuildView]
    errors: list[str] = field(default_factory=list)
    pipelines: dict[str, str] = field(default_factory=dict)  # digest -> pipeline name, for bundles outside the store

    def release_name(self, digest: str | None) -> str:
        """`kws@3f2a9c1d0b7e`: the pipeline's name beside the short digest (the digest alone if unknown)."""
        if not digest:
            return "-"
        name = next((a.name for a in self.artifacts if a.digest == digest), None) or self.pipelines.get(digest)
        return f"{name}@{artifact.short(digest)}" if name else artifact.short(digest)

    @property
    def devices(self) -> list[DeviceView]:
        return [d for f in self.fleets for d in f.devices]

    def release_counts(self, fleet: FleetView) -> list[tuple[str, int]]:
        """(release name, devices running it), most devices first: the fleet's mix of releases."""
        counts: dict[str, int] = {}
        for d in fleet.devices:
            name = self.release_name(d.current) if d.current else "none"
            counts[name] = counts.get(name, 0) + 1
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))

    def select(self, fleet: FleetView, health: str = "", text: str = "") -> list[DeviceView]:
        """The fleet's devices with this health (any when empty) whose id, target, label (`k=v`),
        transport or release name contains `text` (case-insensitive)."""
        text = text.strip().lower()
        out = []
        for d in fleet.devices:
            if health and d.health != health:
                continue
            haystack = [d.id, d.target, d.transport, d.rollout, *(f"{k}={v}" for k, v in d.labels.items()),
                        self.release_name(d.current) if d.current else "none"]
            if text and not any(text in h.lower() for h in haystack):
                continue
            out.append(d)
        return out

    def rollout(self, name: str) -> RolloutView | None:
        return next((r for r in self.rollouts if r.name == name), None)

    def artifact(self, hexd: str) -> ArtifactView | None:
        return next((a for a in self.artifacts if artifact.short(a.digest, 64) == hexd), None)

    def compare(self) -> dict[str, list[ArtifactView]]:
        """Pipeline name -> its newest artifact per target: the table across targets."""
        out: dict[str, dict[str, ArtifactView]] = {}
        for a in sorted(self.artifacts, key=lambda a: a.created):
            out.setdefault(a.name, {})[a.target] = a
        return {name: sorted(by_target.values(), key=lambda a: a.target) for name, by_target in sorted(out.items())}

    def signature(self) -> str:
        """What a viewer would notice changing (not clocks): live updates fire when this changes."""
        parts = [(d.fleet, d.id, d.current, d.desired, d.health, d.reason) for f in self.fleets for d in f.devices]
        parts += [(r.name, r.state, r.run_id, len(r.timeline), r.devices_done, r.devices_failed,
                   [(w.activated, w.failed, w.rolled_back, w.status) for w in r.waves]) for r in self.rollouts]
        parts += [(a.digest,) for a in self.artifacts] + [(b.name, b.finished) for b in self.builds]
        return json.dumps(parts, default=str)
