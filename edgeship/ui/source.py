"""Read edgeship's state into plain views for the dashboard and the metrics: the one module that
knows where things are kept (the rollout journal, Fleet manifests and their devices, build records
and the artifact store), so the rest of the UI never touches them and a change of source (the
public `edgeship.api`) is a change here only.

Nothing here writes: a missing journal is "no rollouts yet", not a new journal.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from edgeship import artifact
from edgeship.errors import ArtifactError, EdgeshipError
from edgeship.paths import state_dir
from edgeship.ui.views import (ArtifactView, BudgetRow, BuildView, DeviceView, EventView, FleetView, GateView, RolloutView,
                               Snapshot, WaveView)

TIMELINE_LIMIT = 200


# --- the reader --------------------------------------------------------------------------------

class StateSource:
    """Reads a Snapshot. Keeps the journal handle and each fleet's transports open between reads
    (an MQTT transport connects once, not at every refresh); `close()` releases them. The devices
    are asked at most every `status_interval` seconds (an SSH status is a connection per device);
    the journal is read at every snapshot."""

    def __init__(self, fleet_paths: list[Path] | None = None, home: Path | None = None, status_interval: float = 0.0):
        from edgeship.fleet.state.location import shared_location

        self.fleet_paths = [Path(p).resolve() for p in fleet_paths or []]
        self.home = Path(home) if home else state_dir()
        # the journal of the fleets shown (their state: block, or EDGESHIP_DATABASE_URL), else home's file
        self.state = shared_location(self.fleet_paths, "the dashboard's fleets")
        if not self.state.url and self.state.sqlite is None:
            self.state = dataclasses.replace(self.state, sqlite=self.home / "rollouts.db")
        self.status_interval = status_interval
        self._journal = None
        self._fleets: dict[Path, tuple[float, object, object]] = {}  # path -> (mtime, Fleet, Transports)
        self._statuses: dict[Path, tuple[float, dict]] = {}  # path -> (when asked, device -> state or error)
        self._plans: dict[str, tuple] = {}  # rollout -> (manifest mtimes, spec, planned waves, why not)
        self._names: dict[str, str] = {}  # digest -> pipeline name ("" unknown) of shipped bundles

    def close(self) -> None:
        for _, _, transports in self._fleets.values():
            transports.close()
        self._fleets.clear()
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    # --- snapshot -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        errors: list[str] = []
        journal = self._open_journal(errors)
        rows = journal.rollouts() if journal else []
        plans = {row.name: self._plan(row, errors) for row in rows}
        fleet_paths = list(self.fleet_paths)
        for spec, _, _ in plans.values():
            if spec is not None and spec.fleet_path.resolve() not in fleet_paths:
                fleet_paths.append(spec.fleet_path.resolve())
        history = {row.name: journal.steps(row.name) for row in rows}  # one read per rollout per snapshot
        rollouts = [self._rollout(journal, row, plans[row.name], history[row.name]) for row in rows]
        fleets = [self._fleet(path, journal, rows) for path in fleet_paths]
        _attach_p95(fleets, history)
        return Snapshot(time.time(), fleets, rollouts, self._artifacts(), self._builds(), errors,
                        self._shipped_names(rows))

    # --- journal and rollouts ---------------------------------------------------------------

    def _open_journal(self, errors: list[str]):
        from edgeship.fleet.rollout.journal import Journal

        if self._journal is None and self.state.exists():
            try:
                self._journal = Journal(state=self.state)
            except EdgeshipError as err:
                errors.append(str(err))
        return self._journal

    def _plan(self, row, errors: list[str]) -> tuple[object | None, list[tuple[int, str, list[str]]], str]:
        """(spec, planned waves, why not) of a journaled rollout: the engine's own planner, so the same
        canary and waves; re-read only when its Rollout or Fleet manifest changed."""
        cached = self._plans.get(row.name)
        if cached is None or cached[0] != _mtimes(row.manifest, cached[1]):
            spec, planned, why = _read_plan(row)
            cached = (_mtimes(row.manifest, spec), spec, planned, why)
            self._plans[row.name] = cached
        _, spec, planned, why = cached
        if spec is None:
            errors.append(f"rollout {row.name}: {why}")
        return spec, planned, why

    def _rollout(self, journal, row, plan, all_steps: list[dict]) -> RolloutView:
        view = RolloutView(row.name, row.state, row.reason, row.run_id, row.fleet, row.manifest,
                           row.artifact_digest, row.updated)
        steps = [s for s in all_steps if s["run_id"] == row.run_id]
        gates = journal.gates(row.run_id)
        view.runs = journal.runs(row.name)
        view.bytes_pushed = journal.bytes_pushed(row.run_id)
        view.bytes_total = sum(s["bytes"] or 0 for s in all_steps
                               if s["action"] == "push" and s["phase"] == "end" and s["ok"])
        view.error = plan[2]
        view.waves = _waves(plan[1], steps, gates, view)
        latest = _latest_ends(steps, "activate")
        rolled = {s["device"] for s in steps if s["action"] == "rollback" and s["phase"] == "end" and s["ok"]}
        view.devices_total = view.devices_total or len(latest)
        view.devices_done = sum(1 for d, s in latest.items() if s["ok"] and d not in rolled)
        view.devices_failed = sum(1 for s in latest.values() if not s["ok"])
        view.rolled_back = len(rolled)
        view.smoke_p95_ms = [p for s in latest.values() if s["ok"] for p in [_p95(_detail(s))] if p is not None]
        view.timeline = _timeline(row, view.runs, steps, gates)
        return view

    # --- fleets and devices -----------------------------------------------------------------

    def _fleet(self, path: Path, journal, rows) -> FleetView:
        from edgeship.fleet.inventory import load_fleet
        from edgeship.fleet.rollout.devices import Transports, fetch_statuses

        try:
            mtime = path.stat().st_mtime
            cached = self._fleets.get(path)
            if cached is None or cached[0] != mtime:
                if cached is not None:
                    cached[2].close()
                fleet = load_fleet(path)
                cached = (mtime, fleet, Transports(fleet))
                self._fleets[path] = cached
                self._statuses.pop(path, None)
            _, fleet, transports = cached
            asked = self._statuses.get(path)
            if asked is None or time.monotonic() - asked[0] >= self.status_interval:
                asked = (time.monotonic(), fetch_statuses(fleet.devices, transports))
                self._statuses[path] = asked
            statuses = asked[1]
        except (EdgeshipError, OSError) as err:
            return FleetView(path.stem, str(path), error=str(err).splitlines()[0])
        applied = journal.applied(fleet.name) if journal else {}
        by_rollout = {r.name: r for r in rows}
        view = FleetView(fleet.name, str(path))
        for device in fleet.devices:
            d = DeviceView(device.id, fleet.name, device.target, device.transport, dict(device.labels))
            owner = (applied.get(device.id) or {}).get("rollout") or ""
            row = by_rollout.get(owner)
            d.rollout = owner
            if row is not None and row.state != "rolled-back":
                d.desired = row.artifact_digest
            _device_health(d, statuses.get(device.id), row, (applied.get(device.id) or {}).get("digest"))
            view.devices.append(d)
        return view

    # --- builds and artifacts ---------------------------------------------------------------

    def _artifacts(self) -> list[ArtifactView]:
        root = self.home / "artifacts"
        out = []
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            if folder.is_dir() and (folder / artifact.SUMS).is_file() and (folder / "bundle.json").is_file():
                view = _artifact_view(folder)
                if view is not None:
                    out.append(view)
        return out

    def _shipped_names(self, rows) -> dict[str, str]:
        """digest -> pipeline name of the bundles rollouts shipped (a tar outside the store too);
        each bundle read once."""
        for row in rows:
            if row.artifact_digest not in self._names and row.bundle:
                try:
                    meta = artifact.read_json_member(Path(row.bundle), "bundle.json")
                except (ArtifactError, OSError, ValueError):
                    meta = {}
                name = meta.get("name") if isinstance(meta, dict) else None
                self._names[row.artifact_digest] = str(name) if name else ""
        return {digest: name for digest, name in self._names.items() if name}

    def _builds(self) -> list[BuildView]:
        root = self.home / "builds"
        out = []
        for path in sorted(root.glob("*.json")) if root.is_dir() else []:
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            out.append(BuildView(str(doc.get("name") or path.stem), bool(doc.get("ok")), str(doc.get("error") or ""),
                                 float(doc.get("seconds") or 0), doc.get("finished"),
                                 str((doc.get("artifact") or {}).get("digest") or ""), list(doc.get("stages") or [])))
        return sorted(out, key=lambda b: -(b.finished or 0))

    def report_path(self, hexd: str) -> Path | None:
        """The artifact's report.html, for a 64-hex digest only (never a path from the request)."""
        if len(hexd) != 64 or any(c not in "0123456789abcdef" for c in hexd):
            return None
        path = self.home / "artifacts" / hexd / "report.html"
        return path if path.is_file() else None


# --- helpers -----------------------------------------------------------------------------------

def _waves(planned: list[tuple[int, str, list[str]]], steps: list[dict], gates: dict, view: RolloutView) -> list[WaveView]:
    """Each wave's counts and gate: as planned from the manifest, else as the journal recorded them."""
    if not planned:
        by_wave: dict[int, set[str]] = {}
        for s in steps:
            if s["wave"] is not None and s["wave"] >= 0:
                by_wave.setdefault(s["wave"], set()).add(s["device"])
        planned = [(i, (gates.get(i) or {}).get("name") or f"wave {i}", sorted(ds)) for i, ds in sorted(by_wave.items())]
    view.devices_total = sum(len(ds) for _, _, ds in planned)
    waves = []
    for index, name, devices in planned:
        ends = _latest_ends([s for s in steps if s["wave"] == index], "activate")
        rolled = {s["device"] for s in steps if s["action"] == "rollback" and s["phase"] == "end" and s["ok"]
                  and s["device"] in devices}
        wave = WaveView(index, name, devices, sum(1 for d, s in ends.items() if s["ok"] and d not in rolled),
                        sum(1 for s in ends.values() if not s["ok"]), len(rolled))
        g = gates.get(index)
        if g:
            wave.gate = GateView(index, g["name"], g["ok"], g["reason"], g["figures"], g.get("ts"))
        waves.append(wave)
    return waves


def _read_plan(row) -> tuple[object | None, list[tuple[int, str, list[str]]], str]:
    from edgeship.fleet.rollout.devices import load_fleet_and_select
    from edgeship.fleet.rollout.spec import load_rollout
    from edgeship.fleet.rollout.waves import plan_waves

    try:
        spec = load_rollout(Path(row.manifest), row.name)
    except (EdgeshipError, OSError) as err:
        return None, [], f"{row.manifest}: {str(err).splitlines()[0]}"
    try:
        _, devices = load_fleet_and_select(spec)
    except (EdgeshipError, OSError) as err:
        return spec, [], str(err).splitlines()[0]
    waves = plan_waves([d.id for d in devices], spec.strategy.canary, spec.strategy.waves)
    return spec, [(w.index, w.name, list(w.devices)) for w in waves], ""


def _mtimes(manifest: str, spec) -> tuple:
    """What a cached plan depends on: the Rollout manifest and its Fleet manifest."""
    def mtime(path) -> float | None:
        try:
            return Path(path).stat().st_mtime
        except OSError:
            return None

    return mtime(manifest), mtime(spec.fleet_path) if spec is not None else None


def _device_health(d: DeviceView, state, row, given: str | None) -> None:
    """`given`: the release edgeship last gave the device (the journal's `applied`), which tells a
    device left behind by a stopped rollout (out-of-sync) from one changed by something else (drifted)."""
    if state is None:
        d.health, d.reason = "unknown", "not asked"
        return
    if isinstance(state, Exception):
        from edgeship.fleet.rollout.devices import failure_reason

        d.health, d.reason = "unreachable", failure_reason(state)
        return
    d.online, d.current, d.last_seen = bool(state.online), state.current, state.last_seen
    last = state.last_result if isinstance(state.last_result, dict) else {}
    if not state.online:
        d.health = "offline"
    elif last and not last.get("ok", True):
        d.health, d.reason = "failed", str(last.get("reason") or "failed")
    elif given and d.current != given and not (row is not None and row.state == "running"):
        d.health, d.reason = "drifted", "runs what edgeship did not give it"
    elif d.desired and d.current != d.desired:
        d.health = "updating" if row.state == "running" else "out-of-sync"
        d.reason = f"rollout {row.name} {row.state}"
    elif d.current is None:
        d.health = "empty"
    else:
        d.health = "healthy"


def _attach_p95(fleets: list[FleetView], history: dict[str, list[dict]]) -> None:
    """Each device's smoke p95 from its last successful activation of the release it runs."""
    seen: dict[tuple[str, str], float] = {}
    for s in sorted((s for steps in history.values() for s in steps), key=lambda s: s["id"]):
        if s["action"] == "activate" and s["phase"] == "end" and s["ok"]:
            p95 = _p95(_detail(s))
            if p95 is not None:
                seen[(s["device"], s["digest"])] = p95
    for f in fleets:
        for d in f.devices:
            if d.current:
                d.p95_ms = seen.get((d.id, d.current))


def _latest_ends(steps: list[dict], action: str) -> dict[str, dict]:
    return {s["device"]: s for s in steps if s["action"] == action and s["phase"] == "end"}


def _detail(step: dict) -> dict:
    try:
        detail = json.loads(step.get("detail") or "{}")
    except ValueError:
        return {}
    return detail if isinstance(detail, dict) else {}


def _p95(detail: dict) -> float | None:
    """The smoke p95 of a journaled activation (the engine's reading of the agent's figures)."""
    from edgeship.fleet.rollout.engine import _p95 as p95_of_figures

    figures = detail.get("figures")
    return p95_of_figures(figures) if isinstance(figures, dict) else None


def _timeline(row, runs: list[dict], steps: list[dict], gates: dict) -> list[EventView]:
    events = []
    for run in runs:
        if run["id"] == row.run_id:
            events.append(EventView(run["started"], "run", "", None, "started", None, f"run {run['id']} started"))
            if run["finished"]:
                events.append(EventView(run["finished"], "run", "", None, run["state"], run["state"] == "done",
                                        f"run {run['id']} {run['state']}" + (f": {run['reason']}" if run["reason"] else "")))
    for s in steps:
        if s["phase"] != "end":
            continue
        detail = _detail(s)
        text = detail.get("message") or detail.get("reason") or ""
        if s["action"] == "push":
            text = "skipped (already there)" if detail.get("skipped") else ""  # the page shows the bytes
        elif s["action"] == "verify" and s["ok"]:
            text = "still runs the release after the soak"
        elif s["action"] == "activate" and s["ok"]:
            p95 = _p95(detail)
            text = f"smoke p95 {p95:.3g} ms" if p95 is not None else "activated"
        events.append(EventView(s["ts"], "step", s["device"], s["wave"], s["action"], bool(s["ok"]), str(text),
                                int(s["bytes"] or 0) if s["action"] == "push" else 0))
    for wave, g in gates.items():
        events.append(EventView(g["ts"], "gate", "", wave, f"gate {g['name']}", g["ok"], g["reason"]))
    events.sort(key=lambda e: e.ts or 0, reverse=True)
    return events[:TIMELINE_LIMIT]


def _artifact_view(folder: Path) -> ArtifactView | None:
    try:
        meta = json.loads((folder / "bundle.json").read_text())
        digest = artifact.digest_of_sums((folder / artifact.SUMS).read_bytes())
    except (OSError, ValueError):
        return None
    try:
        report = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        report = {}
    stages = report.get("stages") if isinstance(report.get("stages"), dict) else {}
    validate = stages.get("validate") if isinstance(stages.get("validate"), dict) else None
    estimate = stages.get("estimate") if isinstance(stages.get("estimate"), dict) else {}
    legalize = stages.get("legalize") if isinstance(stages.get("legalize"), dict) else {}
    view = ArtifactView(digest, str(meta.get("name") or folder.name[:12]), str(meta.get("target") or "?"),
                        str(meta.get("created") or ""), None, has_report=(folder / "report.html").is_file())
    if validate is not None:
        rows = [r for r in validate.get("budgets") or [] if isinstance(r, dict)]
        view.budgets = [BudgetRow(str(r.get("metric")), r.get("budget"), r.get("measured"), bool(r.get("ok")), str(r.get("by") or ""))
                        for r in rows]
        if rows:
            view.verdict = bool(validate.get("passed", all(r.ok for r in view.budgets)))
        latency = validate.get("latency") if isinstance(validate.get("latency"), dict) else {}
        p95 = (latency.get("single_thread") or {}).get("p95") if isinstance(latency.get("single_thread"), dict) else None
        view.measured_p95_ms = float(p95) if isinstance(p95, (int, float)) else None
    for attr, section, key in (("latency_ms", estimate, "latency_ms"), ("peak_memory_kb", estimate, "peak_memory_kb"),
                               ("accelerator_pct", legalize, "accelerator_pct")):
        value = section.get(key)
        if isinstance(value, (int, float)):
            setattr(view, attr, float(value))
    return view
