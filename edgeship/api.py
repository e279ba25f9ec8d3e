"""The public Python API: what the `edgeship` command does, as functions with typed results.

    import edgeship

    built = edgeship.build("pipeline.yaml")[0]           # -> BuildOutcome
    plan = edgeship.plan("rollout.yaml")[0]              # -> RolloutPlan
    done = edgeship.apply("rollout.yaml", on_event=print)[0]   # -> ApplyResult, events as they happen

Every function raises the typed errors of `edgeship.errors` (ManifestError with every diagnostic,
RolloutError, TransportError, ...), never prints, and keeps its state where the CLI keeps it
(`EDGESHIP_HOME`, default ~/.cache/edgeship; the journal where the Fleet manifest's `state:` block or
EDGESHIP_DATABASE_URL says: functions that take a rollout name take `fleet=` to find it). Long operations (build, apply, rollback, resume)
take `on_event`, called with each `edgeship.events.Event` as it happens (from worker threads too:
keep it short and thread-safe). The CLI (`edgeship.commands.*`) is a thin layer over these
functions, so both stay in step. Docs with runnable examples: docs/api.md.
"""

from __future__ import annotations

import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Union

from edgeship.errors import BudgetExceeded, EdgeshipError, ManifestError, RolloutError, UsageError
from edgeship.events import EventCallback
from edgeship.results import (ApplyDevice, ApplyResult, BuildOutcome, CompareRow, DeviceState, FleetStatus,
                              GateResult, PlanDevice, ReleaseCount, ReleaseRef, RolledBackDevice, RollbackResult,
                              RolloutHistory, RolloutPlan, RolloutStatus, RolloutSummary, RunRecord, StageOutcome,
                              StepRecord)



PathArg = Union[str, "os.PathLike[str]"]


# --- build ---------------------------------------------------------------------------------------

def load_pipelines(paths: PathArg | Iterable[PathArg]) -> list:
    """Every Pipeline document of these files; all manifest errors at once (ManifestError)."""
    from edgeship.pipelines.manifest import duplicate_pipeline_names, load_documents

    docs, diagnostics = [], []
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else list(paths):
        if not Path(path).exists():
            raise UsageError(f"{path}: no such file")
        try:
            docs.extend(load_documents(path, kinds=["Pipeline"]))
        except ManifestError as err:
            diagnostics.extend(err.diagnostics)
    diagnostics += duplicate_pipeline_names(docs)  # across files (within a file, load_documents found them)
    if diagnostics:
        raise ManifestError(diagnostics)
    return docs


def build(manifests: PathArg | Iterable[PathArg], *, target: str | None = None, use_cache: bool = True, output_dir: PathArg | None = None,
          on_event: EventCallback | None = None) -> list[BuildOutcome]:
    """Build every Pipeline in `manifests` (a path or a list of paths), one after the other.

    A failed stage or budget does not raise: the outcome says so (`ok`, `error`, `budget`) and
    `outcome.raise_for_error()` raises its typed error. Bad manifests raise ManifestError. With
    `output_dir`, each artifact is also copied to OUTPUT_DIR/<name>/ and OUTPUT_DIR/<name>.tar.
    """
    from edgeship.stages.package import ensure_signing_key

    docs = load_pipelines(manifests)
    if not docs:
        raise UsageError("no Pipeline documents in the given files")
    ensure_signing_key()
    outcomes = [build_document(doc, target=target, use_cache=use_cache, on_event=on_event) for doc in docs]
    if output_dir is not None:
        for outcome in outcomes:
            export(outcome, Path(output_dir))
    return outcomes


def build_document(doc, *, target: str | None = None, use_cache: bool = True, on_event: EventCallback | None = None,
                   progress=None) -> BuildOutcome:
    """Build one loaded Pipeline document (see `build`). `progress` (a runner.Progress) overrides on_event."""
    from edgeship.pipelines.runner import Progress, summary_table
    from edgeship.pipelines.runner import build as run_build

    result = run_build(doc, target=target, use_cache=use_cache,
                       progress=progress or Progress(quiet=True, on_event=on_event))
    err, art = result.error, result.artifact
    return BuildOutcome(
        pipeline=result.name, ok=result.ok, seconds=result.seconds, digest=art.get("digest"),
        artifact_dir=_str(art.get("dir")), artifact_tar=_str(art.get("tar")), key_id=art.get("key_id"),
        stages=[StageOutcome(r.name, r.status, r.seconds, r.key, r.reason) for r in result.records],
        warnings=list(result.ctx.warnings), error=str(err) if err else None,
        exit_code=getattr(err, "exit_code", 1) if err else 0,
        budget=[asdict(r) if hasattr(r, "__dataclass_fields__") else dict(r) for r in list[Any](err.rows)]
        if isinstance(err, BudgetExceeded) else [],
        diagnostics=[str(d) for d in err.diagnostics] if isinstance(err, ManifestError) else [],
        summary=summary_table(result), _exception=err)


def export(outcome: BuildOutcome, output_dir: Path) -> None:
    """Copy a successful build's artifact to OUTPUT_DIR/<name>/ and .tar (records where on the outcome)."""
    if not outcome.ok:
        return
    from edgeship.exporting import export_artifact

    try:
        folder, tar = export_artifact({"dir": outcome.artifact_dir, "tar": outcome.artifact_tar}, output_dir,
                                      outcome.pipeline)
    except OSError as err:
        raise UsageError(f"{output_dir}: cannot write the artifact there ({err.strerror or err}); "
                         f"it is stored as {outcome.artifact_dir}") from None
    outcome.exported_dir, outcome.exported_tar = str(folder), str(tar)


def compare(pipeline: PathArg, targets: list[str] | str, *, use_cache: bool = True) -> list[CompareRow]:
    """Build `pipeline` for each target up to `estimate`: which chip does the model fit?
    `targets` is a list of profile names, or "all"."""
    from edgeship.commands.compile import compare_targets
    from edgeship.targets import target_names

    if not Path(pipeline).is_file():
        raise UsageError(f"{pipeline}: no such file")
    if isinstance(targets, str):
        targets = target_names() if targets.strip() == "all" else [t.strip() for t in targets.split(",") if t.strip()]
    if not targets:
        raise UsageError("targets: give at least one target name")
    known = {f.name for f in fields(CompareRow)} - {"extra"}
    return [CompareRow(**{k: v for k, v in row.items() if k in known},
                       extra={k: v for k, v in row.items() if k not in known})
            for row in compare_targets(str(pipeline), list(targets), use_cache=use_cache)]


# --- rollouts: plan and apply --------------------------------------------------------------------

def load_rollouts(manifest: PathArg, name: str | None = None) -> list:
    """The Rollout specs of a manifest (only `name` when given)."""
    from edgeship.fleet.rollout.spec import load_rollouts as load

    specs = load(Path(manifest))
    if name:
        specs = [s for s in specs if s.name == name]
        if not specs:
            raise UsageError(f"{manifest}: no Rollout named {name!r}")
    if not specs:
        raise UsageError(f"{manifest}: no Rollout document in this file")
    return specs


def engine_for(spec, journal, log: Callable[[str], None] | None = None, take_over: bool = False,
               on_event: EventCallback | None = None, build_progress: bool = False):
    """The rollout engine for one spec: its artifact resolved (a `pipeline:` reference is built, its
    progress lines on stderr with `build_progress`), its fleet loaded and its devices selected.
    `log` receives each event's human line."""
    from edgeship.fleet.rollout.artifacts import resolve
    from edgeship.fleet.rollout.devices import load_fleet_and_select
    from edgeship.fleet.rollout.engine import Engine

    shipment = resolve(spec, build=lambda manifest: build_pipeline(manifest, on_event=on_event, progress=build_progress))
    fleet, devices = load_fleet_and_select(spec)
    return Engine(spec, fleet, devices, shipment, journal, log=log, take_over=take_over, on_event=on_event)


def build_pipeline(manifest: Path, on_event: EventCallback | None = None, progress: bool = False) -> Path:
    """Build a Pipeline manifest for a rollout's `artifact.pipeline` (progress lines on stderr with
    `progress`). The stage cache makes an unchanged pipeline cheap, so reconcile may call this each pass."""
    import sys

    from edgeship.pipelines.manifest import load_documents
    from edgeship.pipelines.runner import Progress

    docs = load_documents(Path(manifest), kinds={"Pipeline"})
    if len(docs) != 1:
        raise RolloutError(f"{manifest}: artifact.pipeline must name a file with exactly one Pipeline (found {len(docs)})")
    lines = Progress(stream=sys.stderr, prefix=f"build {docs[0].name}: ", quiet=not progress, on_event=on_event)
    outcome = build_document(docs[0], progress=lines)
    outcome.raise_for_error()
    if not outcome.artifact_tar and not outcome.artifact_dir:
        raise RolloutError(f"{manifest}: the build produced no artifact (does the pipeline end with the package stage?)")
    return Path(outcome.artifact_tar or outcome.artifact_dir or "")


def plan(manifest: PathArg, name: str | None = None) -> list[RolloutPlan]:
    """What `apply` would do, per device, for each Rollout of the manifest. Changes nothing."""
    from edgeship.fleet.rollout.artifacts import untrusted_signer
    from edgeship.fleet.rollout.journal import journal_for

    out = []
    specs = load_rollouts(manifest, name)
    with journal_for(*(spec.fleet_path for spec in specs)) as journal:
        for spec in specs:
            engine = engine_for(spec, journal)
            try:
                rows = engine.plan()
                owned = engine.foreign_owners()
            finally:
                engine.transports.close()
            catalog = _catalog(journal, [engine.ship.bundle])
            out.append(RolloutPlan(
                rollout=spec.name, fleet=engine.fleet.name, release=ReleaseRef.of(engine.ship.digest, catalog),
                devices=[PlanDevice(r.device_id, r.transport, r.wave, ReleaseRef.of(r.current, catalog),
                                    ReleaseRef.of(r.desired, catalog), r.action, r.note) for r in rows],
                owned_elsewhere=dict(owned), untrusted_signer=untrusted_signer(engine.ship, engine.fleet),
                warnings=[str(w) for w in spec.warnings]))
    return out


def apply(manifest: PathArg, name: str | None = None, *, take_over: bool = False, on_event: EventCallback | None = None,
          log: Callable[[str], None] | None = None) -> list[ApplyResult]:
    """Converge the fleet to each Rollout of the manifest: canary, waves, health gates. A failed gate
    does not raise: the result says so (`ok`, `state`, `reason`). `log` receives human lines."""
    from edgeship.fleet.rollout.journal import journal_for

    out = []
    specs = load_rollouts(manifest, name)
    with journal_for(*(spec.fleet_path for spec in specs)) as journal:
        for spec in specs:
            engine = engine_for(spec, journal, log=log, take_over=take_over, on_event=on_event)
            out.append(apply_result(engine.apply(), journal, engine.ship.bundle))
    return out


def resume(name: str, *, fleet: PathArg | None = None, on_event: EventCallback | None = None, log: Callable[[str], None] | None = None) -> ApplyResult:
    """Continue a paused rollout (its failed devices are retried)."""
    from edgeship.fleet.rollout.journal import journal_for
    from edgeship.fleet.rollout.spec import load_rollout

    with journal_for(fleet) as journal:
        row = _row(journal, name)
        if row.state not in ("paused", "running"):
            raise RolloutError(f"{row.name} is {row.state}, not paused: run `edgeship apply` to start it again")
        spec = load_rollout(Path(row.manifest), row.name)
        engine = engine_for(spec, journal, log=log, on_event=on_event)
        if engine.ship.digest != row.artifact_digest or spec.spec_digest != row.spec_digest:
            raise RolloutError(f"{row.name}: {row.manifest} changed since the run was paused: `edgeship apply` it as a new run")
        return apply_result(engine.apply(resume=True), journal, engine.ship.bundle)


def pause(name: str, *, fleet: PathArg | None = None) -> RolloutSummary:
    """Ask a running rollout to stop after the devices in flight."""
    from edgeship.fleet.rollout.journal import journal_for

    with journal_for(fleet) as journal:
        row = _row(journal, name)
        if row.state != "running":
            raise RolloutError(f"{row.name} is {row.state}, not running: nothing to pause")
        journal.set_state(row.name, "paused", "paused by an operator")
        return _summary(journal, journal.rollout(name), _catalog(journal))


def abort(name: str, *, fleet: PathArg | None = None) -> RolloutSummary:
    """Stop a rollout for good; devices stay on what they run now."""
    from edgeship.fleet.rollout.journal import journal_for

    with journal_for(fleet) as journal:
        row = _row(journal, name)
        if row.state in ("done", "aborted", "rolled-back"):
            raise RolloutError(f"{row.name} is {row.state}: nothing to abort")
        journal.set_state(row.name, "aborted", "aborted by an operator")
        return _summary(journal, journal.rollout(name), _catalog(journal))


def rollback(name: str, *, fleet: PathArg | None = None, on_event: EventCallback | None = None,
             log: Callable[[str], None] | None = None) -> RollbackResult:
    """Return every device this rollout switched (and that still runs it) to its previous release."""
    from edgeship.fleet.inventory import load_fleet
    from edgeship.fleet.rollout.devices import Transports
    from edgeship.fleet.rollout.engine import roll_back_rollout
    from edgeship.fleet.rollout.journal import journal_for
    from edgeship.fleet.rollout.spec import load_rollout

    with journal_for(fleet) as journal:
        row = _row(journal, name)
        spec = load_rollout(Path(row.manifest), row.name)
        fleet = load_fleet(spec.fleet_path)
        transports = Transports(fleet)
        try:
            results = roll_back_rollout(row.name, journal, fleet, transports, log=log, on_event=on_event)
        finally:
            transports.close()
    return RollbackResult(row.name, [RolledBackDevice(d, ok, note) for d, ok, note in results])


def apply_result(report, journal, bundle=None) -> ApplyResult:
    """The engine's ApplyReport as a typed result: releases named, each failure's full message."""
    catalog = _catalog(journal, [bundle] if bundle else [])
    messages = _failure_messages(journal, report.rollout, report.run_id)
    return ApplyResult(
        rollout=report.rollout, run=report.run_id, run_number=journal.run_number(report.rollout, report.run_id),
        release=ReleaseRef.of(report.digest, catalog), state=report.state, reason=report.reason,
        devices=[ApplyDevice(r.device_id, r.wave, ReleaseRef.of(r.before, catalog), ReleaseRef.of(r.after, catalog),
                             r.result, messages.get(r.device_id, "") if "failed" in r.result else "", r.p95_ms,
                             r.bytes_sent) for r in report.rows],
        gates=[GateResult(w, v.ok, v.reason, dict(v.figures)) for w, v in report.gates],
        bytes_pushed=report.bytes_pushed, devices_pushed=report.devices_pushed, artifact_bytes=report.artifact_bytes,
        ok=report.ok, per_device_ratio=report.per_device_ratio)


# --- rollouts: what the journal and the devices say ----------------------------------------------

def rollouts(*, fleet: PathArg | None = None) -> list[RolloutSummary]:
    """Every rollout in the journal, by name: state, release, last run."""
    from edgeship.fleet.rollout.journal import journal_for

    with journal_for(fleet) as journal:
        catalog = _catalog(journal)
        return [_summary(journal, row, catalog) for row in journal.rollouts()]


def history(name: str, *, fleet: PathArg | None = None) -> RolloutHistory:
    """A rollout's runs (numbered per rollout) and every journaled step that finished."""
    from edgeship.fleet.rollout.journal import journal_for

    with journal_for(fleet) as journal:
        row = _row(journal, name)
        catalog = _catalog(journal)
        runs = journal.runs(row.name)
        number = {r["id"]: i for i, r in enumerate(runs, 1)}
        steps = [s for s in journal.steps(row.name) if s["phase"] == "end"]
        return RolloutHistory(
            row.name,
            [RunRecord(r["id"], number[r["id"]], r["state"], r["reason"] or "", ReleaseRef.of(r["artifact_digest"], catalog),
                       r["started"], r["finished"]) for r in runs],
            [StepRecord(s["run_id"], number.get(s["run_id"], 0), s["ts"], s["device"], s["wave"], s["action"],
                        bool(s["ok"]), int(s["bytes"] or 0), *_reason_message(s["detail"])) for s in steps])


def status(name: str, *, fleet: PathArg | None = None) -> RolloutStatus:
    """A rollout's state from the journal and from its devices now (sync, health, per device)."""
    from edgeship.fleet.rollout.journal import journal_for
    from edgeship.fleet.rollout.status import devices_pushed

    with journal_for(fleet) as journal:
        row = _row(journal, name)
        catalog = _catalog(journal)
        live, statuses, why_not = _live(row)
        gates = journal.gates(row.run_id)
        steps = journal.steps(row.name, row.run_id)
        latest = {s["device"]: s for s in steps if s["phase"] == "end" and s["action"] == "activate"}
        ok = sum(1 for s in latest.values() if s["ok"])
        rolled_back = len({s["device"] for s in steps if s["phase"] == "end" and s["action"] == "rollback" and s["ok"]})
        devices = [_device_state(d, st, catalog, row.artifact_digest, latest.get(d)) for d, st in sorted(statuses.items())]
        return RolloutStatus(
            name=row.name, state=row.state, reason=row.reason, run=row.run_id,
            run_number=journal.run_number(row.name, row.run_id), release=ReleaseRef.of(row.artifact_digest, catalog),
            manifest=row.manifest, fleet=row.fleet, updated=row.updated, activated=ok, failed=len(latest) - ok,
            rolled_back=rolled_back, bytes_pushed=journal.bytes_pushed(row.run_id),
            devices_pushed=len(devices_pushed(steps)), artifact_bytes=_size(row.bundle),
            gates=[GateResult(g["name"], g["ok"], g["reason"], g["figures"]) for g in gates.values()],
            sync=live.sync if live else None, health=live.health if live else None, devices=devices,
            releases=_release_counts(devices, catalog), live_error=why_not or None, _live=live)


def fleet_status(fleet: PathArg) -> FleetStatus:
    """Every device of a Fleet manifest: online, the release it runs (by name), last seen, last result."""
    from edgeship.errors import TransportError
    from edgeship.fleet.inventory import load_fleet
    from edgeship.fleet.rollout.devices import failure_reason
    from edgeship.fleet.rollout.journal import Journal
    from edgeship.fleet.state.location import state_location
    from edgeship.fleet.transports import close_transports, get_transport

    loaded = load_fleet(Path(fleet))
    location = state_location(fleet)
    if location.exists():  # release names: the journal knows the bundles rollouts shipped
        with Journal(state=location) as journal:
            catalog = _catalog(journal)
    else:  # no rollout yet: the artifact store alone (and no journal created by a read-only command)
        from edgeship.fleet.rollout.releases import Catalog

        catalog = Catalog()
    devices, raw = [], []
    try:
        for dev in loaded.devices:
            try:
                state = get_transport(loaded, dev).status(dev)
            except TransportError as err:  # keep the transport's reason (host-key, timeout): not just "offline"
                devices.append(DeviceState(dev.id, "unreachable", ReleaseRef(None, None), False, None, dev.transport,
                                           failure_reason(err), str(err)))
                raw.append({"device_id": dev.id, "transport": dev.transport, "online": False, "current": None,
                            "last_seen": None, "error": str(err), "reason": failure_reason(err)})
                continue
            raw.append({**state.to_dict(), "transport": dev.transport, "error": None})
            last = state.last_result if isinstance(getattr(state, "last_result", None), dict) else {}
            failed = bool(last) and not last.get("ok")
            devices.append(DeviceState(dev.id, "online" if state.online else "offline", ReleaseRef.of(state.current, catalog),
                                       bool(state.online), state.last_seen, dev.transport,
                                       str(last.get("reason") or "") if failed else "",
                                       str(last.get("message") or "") if failed else ""))
    finally:
        close_transports(loaded)
    return FleetStatus(loaded.name, devices, _release_counts(devices, catalog), _raw=raw)


# --- helpers -------------------------------------------------------------------------------------

def _row(journal, name: str):
    row = journal.rollout(name)
    if row is None:
        known = ", ".join(r.name for r in journal.rollouts()) or "none yet"
        raise RolloutError(f"no rollout named {name!r} in the journal {journal.where} (known: {known}; one kept in "
                           "its fleet's own store is found with --fleet FLEET.yaml, in Python fleet=)")
    return row


def _catalog(journal, extra=()):
    from edgeship.fleet.rollout.releases import Catalog

    return Catalog([*(r.bundle for r in journal.rollouts()), *extra])


def _summary(journal, row, catalog) -> RolloutSummary:
    return RolloutSummary(row.name, row.state, row.reason, row.fleet, row.manifest,
                          ReleaseRef.of(row.artifact_digest, catalog), row.run_id,
                          journal.run_number(row.name, row.run_id), len(journal.runs(row.name)), row.updated)


def _live(row):
    """(LiveStatus, device -> state or error, why not) of the rollout's devices now."""
    from edgeship.fleet.rollout.devices import Transports, fetch_statuses, load_fleet_and_select
    from edgeship.fleet.rollout.spec import load_rollout
    from edgeship.fleet.rollout.status import derive

    try:
        spec = load_rollout(Path(row.manifest), row.name)
        fleet, devices = load_fleet_and_select(spec)
        transports = Transports(fleet)
        try:
            statuses = fetch_statuses(devices, transports)
        finally:
            transports.close()
    except (EdgeshipError, OSError) as err:
        return None, {}, str(err)
    return derive(row.state, row.artifact_digest, statuses), statuses, ""


def _device_state(device_id: str, state, catalog, wanted: str, last_step: dict | None) -> DeviceState:
    from edgeship.fleet.rollout.devices import failure_reason

    reason, message = _reason_message(last_step["detail"]) if last_step and not last_step["ok"] else ("", "")
    if isinstance(state, Exception):
        return DeviceState(device_id, "unreachable", ReleaseRef(None, None), False, None, None,
                           failure_reason(state), str(state))
    last = state.last_result if isinstance(state.last_result, dict) else {}
    if not state.online and state.current is None and last.get("reason"):
        return DeviceState(device_id, "unreachable", ReleaseRef(None, None), False, None, None,
                           str(last["reason"]), str(last.get("message") or ""))
    where = "on-target" if state.current == wanted else "elsewhere"
    return DeviceState(device_id, where if state.online else "offline", ReleaseRef.of(state.current, catalog),
                       bool(state.online), state.last_seen, None, reason, message)


def _release_counts(devices: list[DeviceState], catalog) -> list[ReleaseCount]:
    reachable = [d.release.digest for d in devices if d.state != "unreachable"]
    return [ReleaseCount(ReleaseRef(r.digest, r.name) if r else ReleaseRef(None, None), n)
            for r, n in catalog.counts(reachable)]


def _failure_messages(journal, rollout: str, run_id: int | None) -> dict[str, str]:
    """device -> the full message of its last failed step in this run (the table shows only reasons)."""
    if run_id is None:
        return {}
    out: dict[str, str] = {}
    for step in journal.steps(rollout, run_id):
        if step["phase"] == "end" and not step["ok"]:
            reason, message = _reason_message(step["detail"])
            if message:
                out[step["device"]] = message
    return out


def _reason_message(detail) -> tuple[str, str]:
    import json

    try:
        data = json.loads(detail or "{}") if isinstance(detail, str) else dict(detail or {})
    except ValueError:
        return "", ""
    reason = data.get("reason") or ("skipped" if data.get("skipped") else "") or ("recovered" if data.get("recovered") else "")
    return str(reason or ""), str(data.get("message") or "")


def _size(path: str | None) -> int:
    try:
        return Path(path).stat().st_size if path else 0
    except OSError:
        return 0


def _str(value) -> str | None:
    return str(value) if value else None


__all__ = ["build", "build_document", "load_pipelines", "export", "compare", "load_rollouts", "engine_for",
           "build_pipeline", "plan", "apply", "resume", "pause", "abort", "rollback", "apply_result", "rollouts",
           "history", "status", "fleet_status"]
