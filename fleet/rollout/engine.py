"""`edgeship apply`: converge the selected devices to the rollout's artifact, wave by wave.

Per wave: push + activate each device that is not there yet (at most `max_unavailable` at once),
soak, then gate the wave on its outcomes. A failed gate rolls the wave's switched devices back (or
pauses) and stops: later waves are never touched. Every step goes through the journal first, so a
killed manager re-run with the same manifest continues the same run: steps that finished are not
repeated (no double push), a step cut in half is checked against the device and finished, and
the gate counts recorded before the kill still count.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from edgeship import events as ev
from edgeship.errors import EdgeshipError, RolloutError
from edgeship.fleet.rollout import gate as gates
from edgeship.fleet.rollout import ownership
from edgeship.fleet.rollout import plan as plans
from edgeship.fleet import target_binding
from edgeship.fleet.rollout.artifacts import Shipment, signer_ids_of, stored_signers
from edgeship.fleet.rollout.devices import Transports, failure_reason, fetch_statuses, withdraw_pending
from edgeship.fleet.rollout.journal import Journal
from edgeship.fleet.rollout.spec import RolloutSpec
from edgeship.fleet.rollout.status import devices_pushed
from edgeship.fleet.rollout.waves import Wave, plan_waves, resolve_max_unavailable
from edgeship.fleet.state.lease import LeaseLost
from edgeship.fleet.trust_delivery import revoked_ids

STOPPING_STATES = ("paused", "aborted")


@dataclass
class DeviceRow:
    device_id: str
    wave: str
    before: str | None
    after: str | None
    result: str          # activated | unchanged | failed: <reason> | rolled back | skipped
    p95_ms: float | None = None
    bytes_sent: int = 0


@dataclass
class ApplyReport:
    rollout: str
    run_id: int | None
    digest: str
    state: str           # done | unchanged | failed | paused | aborted
    reason: str = ""
    rows: list[DeviceRow] = field(default_factory=list)
    gates: list[tuple[str, gates.Verdict]] = field(default_factory=list)
    bytes_pushed: int = 0
    devices_pushed: int = 0  # devices that received bytes in this run
    artifact_bytes: int = 0  # the bundle's size: a delta transfer sends less than this per device

    @property
    def per_device_ratio(self) -> float | None:
        """Bytes sent per device that received any, over the artifact's size (MQTT chunks: < 1 on an update)."""
        if not self.devices_pushed or not self.artifact_bytes:
            return None
        return self.bytes_pushed / self.devices_pushed / self.artifact_bytes

    @property
    def ok(self) -> bool:
        return self.state in ("done", "unchanged")


def stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _emitter(log: Callable[[str], None] | None, on_event: ev.EventCallback | None) -> Callable[[ev.Event], None]:
    """One event to the callback, then its human line to `log` (the text is derived from the event)."""
    def emit(event: ev.Event) -> None:
        if on_event is not None:
            on_event(event)
        line = event.text()
        if line and log is not None:
            log(line)
    return emit


class Engine:
    def __init__(self, spec: RolloutSpec, fleet, devices: list, shipment: Shipment, journal: Journal,
                 transports: Transports | None = None, log: Callable[[str], None] = stderr_log,
                 sleep: Callable[[float], None] = time.sleep, take_over: bool = False,
                 on_event: ev.EventCallback | None = None):
        self.spec, self.fleet, self.devices, self.ship, self.journal = spec, fleet, devices, shipment, journal
        self.take_over = take_over  # may move devices owned by another rollout to this one
        self.transports = transports or Transports(fleet)
        self.emit = _emitter(log, on_event)  # typed events; `log` gets each one's human line
        self.sleep = sleep
        self.by_id = {d.id: d for d in devices}
        self.waves: list[Wave] = plan_waves([d.id for d in devices], spec.strategy.canary, spec.strategy.waves)
        self.parallel = resolve_max_unavailable(spec.strategy.max_unavailable, len(devices))
        self.run_id: int | None = None
        self._lease = None  # held while apply runs: checked before each step that touches a device
        self._rows: dict[str, DeviceRow] = {}
        self._warmed: set[str] = set()  # transport kinds that shipped this bundle once already
        self._seen: dict[str, str | None] = {}  # device -> release it ran when planned (for the final table)
        self._wave_name = {d: w.name for w in self.waves for d in w.devices}

    # --- planning ---------------------------------------------------------------------------

    def plan(self) -> list[plans.PlanRow]:
        statuses = fetch_statuses(self.devices, self.transports)
        rows = plans.make_plan(self.devices, self.waves, self.ship.digest, statuses, self.journal.applied(self.fleet.name))
        rows = plans.bind_targets(rows, self.wrong_target())
        rows = plans.mark_revoked(rows, self._signers_of, revoked_ids(self.fleet))
        owned = self.foreign_owners()
        return [replace(r, note="; ".join(n for n in (r.note, f"owned by rollout {owned[r.device_id]}") if n))
                if r.device_id in owned else r for r in rows]

    def wrong_target(self) -> dict[str, str]:
        """Selected devices whose Fleet `target` the artifact is not built for: id -> one line."""
        return target_binding.refused_devices(self.ship.meta, self.devices)

    def _signers_of(self, digest: str) -> list[str]:
        """Who signed a release a device runs: this shipment, a bundle an earlier rollout shipped
        (the journal names it), or one in the local artifact store; [] when none is at hand."""
        if digest == self.ship.digest:
            return signer_ids_of(self.ship.bundle)
        for row in self.journal.rollouts():
            if row.artifact_digest == digest and row.bundle and Path(row.bundle).exists():
                return signer_ids_of(Path(row.bundle))
        return stored_signers(digest)

    def _refuse_wrong_targets(self) -> None:
        """Nothing is sent when the rollout selects devices the artifact is not built for."""
        refused = self.wrong_target()
        if not refused:
            return
        for device_id, why in refused.items():
            self.emit(ev.Notice(f"edgeship: error: {device_id}: {why}: refused", self.spec.name))
        raise RolloutError(f"{self.spec.name}: the artifact is not built for the target of {len(refused)} selected "
                           "device(s); nothing was sent (fix the selector, or build for their target)")

    def foreign_owners(self) -> dict[str, str]:
        """Selected devices that belong to another rollout (apply refuses them without take_over)."""
        return ownership.foreign(self.journal, self.fleet.name, [d.id for d in self.devices], self.spec.name)

    # --- apply ------------------------------------------------------------------------------

    def apply(self, resume: bool = False) -> ApplyReport:
        """Converge. `resume=True` continues a paused run and retries the devices that failed in it."""
        try:
            with self.journal.lease(self.spec.name) as self._lease:
                self.journal.backup()  # a journal damaged later loses at most this run (docs/rollouts.md)
                return self._apply(resume)
        finally:
            self._lease = None
            self.transports.close()

    def _apply(self, resume: bool) -> ApplyReport:
        name, digest = self.spec.name, self.ship.digest
        row = self.journal.rollout(name)
        same = row is not None and row.spec_digest == self.spec.spec_digest and row.artifact_digest == digest
        if row is not None and same and row.state == "paused" and not resume:
            raise RolloutError(f"{name} is paused ({row.reason or 'by an operator'}): "
                               f"`edgeship rollout resume {name}` to continue or `edgeship rollout abort {name}`")
        continuing = same and row.state in ("running", "paused")
        self._refuse_wrong_targets()
        if not continuing:
            plan_rows = self.plan()
            self._seen = {r.device_id: r.current for r in plan_rows}
            if plans.has_errors(plan_rows) and not plans.has_changes(plan_rows):
                bad = [r for r in plan_rows if r.action == plans.UNREACHABLE]
                raise RolloutError(f"{name}: {len(bad)} device(s) not reachable, e.g. {bad[0].note}")
            ownership.refuse_or_take(self.journal, self.fleet.name, self._seen, name, self.take_over, self._notice)
            if not plans.has_changes(plan_rows) and not plans.has_errors(plan_rows):
                run_id = self._record_converged(row)
                ownership.claim(self.journal, self.fleet.name, self._seen, name)
                self.emit(ev.RolloutFinished(name, run_id, "unchanged", "nothing to change"))
                return ApplyReport(name, run_id, digest, "unchanged", "nothing to change",
                                   [DeviceRow(r.device_id, r.wave, r.current, r.current, "unchanged") for r in plan_rows])
            self.run_id = self.journal.new_run(name, str(self.spec.source), self.fleet.name, self.spec.spec_digest,
                                               digest, str(self.ship.bundle))
            ownership.claim(self.journal, self.fleet.name, self._seen, name)
            self.emit(ev.RolloutStarted(name, self.run_id, self.journal.run_number(name, self.run_id), digest,
                                        len(self.devices), len(self.waves), self.parallel))
        else:
            self.run_id = row.run_id
            if row.state == "paused":
                self.journal.set_state(name, "running", "")
            self.emit(ev.RolloutStarted(name, self.run_id, self.journal.run_number(name, self.run_id), digest,
                                        len(self.devices), len(self.waves), self.parallel, resumed=True))
        return self._run_waves(retry_failed=resume)

    def converged_now(self) -> bool:
        """True when every selected device runs the artifact already (then recorded as a finished run,
        so `rollout status` and reconcile stop reporting an old failure). Used by reconcile for a
        rollout it does not retry."""
        try:
            with self.journal.lease(self.spec.name):
                rows = self.plan()
                if plans.has_changes(rows) or plans.has_errors(rows):
                    return False
                self._record_converged(self.journal.rollout(self.spec.name))
                return True
        finally:
            self.transports.close()

    def _record_converged(self, row) -> int:
        """The fleet already runs what this manifest wants: unless the journal says so already, record
        it as a run that found nothing to do, so the rollout's last run is not a stale failure."""
        same = row is not None and row.spec_digest == self.spec.spec_digest and row.artifact_digest == self.ship.digest
        if same and row.state == "done":
            return row.run_id
        run_id = self.journal.new_run(self.spec.name, str(self.spec.source), self.fleet.name, self.spec.spec_digest,
                                      self.ship.digest, str(self.ship.bundle))
        self.journal.set_state(self.spec.name, "done", "already converged: nothing to change")
        return run_id

    def _run_waves(self, retry_failed: bool) -> ApplyReport:
        name = self.spec.name
        report = ApplyReport(name, self.run_id, self.ship.digest, "done")
        recorded = self.journal.gates(self.run_id)
        for wave in self.waves:
            previous_gate = recorded.get(wave.index)
            if previous_gate and previous_gate["ok"]:
                report.gates.append((wave.name, gates.Verdict(True, previous_gate["reason"], previous_gate["figures"])))
                self._mark_converged(wave)
                continue
            if previous_gate and not retry_failed:  # the gate failed before a restart: finish handling it
                verdict = gates.Verdict(False, previous_gate["reason"], previous_gate["figures"])
                self._mark_converged(wave)
                report.gates.append((wave.name, verdict))
                return self._gate_failed(report, wave, verdict)
            stop = self._stop_requested()
            if stop:
                return self._finish(report, stop, f"{stop} by an operator before {wave.name}")
            acted = self._converge_wave(wave, retry_failed)
            stop = self._stop_requested()
            if stop:
                return self._finish(report, stop, f"{stop} by an operator during {wave.name}")
            if acted and self.spec.strategy.gate.soak_s > 0:
                self._soak(wave)
            verdict = self._evaluate(wave)
            self.journal.record_gate(self.run_id, wave.index, verdict.ok, verdict.reason, verdict.figures, wave.name)
            report.gates.append((wave.name, verdict))
            self.emit((ev.GatePassed if verdict.ok else ev.GateFailed)(name, wave.name, verdict.reason, dict(verdict.figures)))
            if not verdict.ok:
                return self._gate_failed(report, wave, verdict)
        return self._finish(report, "done", "")

    def _finish(self, report: ApplyReport, state: str, reason: str) -> ApplyReport:
        self.journal.set_state(self.spec.name, state, reason)
        report.state, report.reason = state, reason
        report.rows = [self._rows.get(d) or DeviceRow(d, self._wave_name[d], self._seen.get(d), self._seen.get(d), "not reached")
                       for w in self.waves for d in w.devices]
        report.bytes_pushed = self.journal.bytes_pushed(self.run_id)
        report.devices_pushed = len(devices_pushed(self.journal.steps(self.spec.name, self.run_id)))
        report.artifact_bytes = self.ship.size
        self.emit(ev.RolloutFinished(self.spec.name, self.run_id, state, reason))
        return report

    def _notice(self, line: str) -> None:
        self.emit(ev.Notice(line, self.spec.name))

    def _stop_requested(self) -> str | None:
        if self._lease is not None:
            self._lease.check()  # raises LeaseLost: this manager must not act on another device
        state = self.journal.state(self.spec.name)
        return state if state in STOPPING_STATES else None

    # --- one wave ---------------------------------------------------------------------------

    def _converge_wave(self, wave: Wave, retry_failed: bool) -> bool:
        """The first device acted on per transport kind goes alone: the transport prepares the bundle
        once (the MQTT manager chunks it) and a bundle it cannot ship fails one device, not a batch."""
        devices = [self.by_id[d] for d in wave.devices]
        acted = False
        rest = []
        for device in devices:
            if device.transport in self._warmed:
                rest.append(device)
            elif self._converge_guarded(device, wave, retry_failed):
                acted = True
                self._warmed.add(device.transport)
        if rest:
            acted = any(_map_in_threads(lambda d: self._converge_guarded(d, wave, retry_failed), rest, self.parallel)) or acted
        return acted

    def _converge_guarded(self, device, wave: Wave, retry_failed: bool) -> bool:
        """One device's unexpected failure (a transport bug, a library error it did not wrap) is that
        device's failure, counted by the gate, not the end of the rollout."""
        try:
            return self._converge_device(device, wave, retry_failed)
        except LeaseLost:
            raise  # another manager drives the rollout now: stop, record nothing more
        except (EdgeshipError, OSError, RuntimeError, ValueError) as err:
            self._activation_failed(device, wave, None, "error", f"{type(err).__name__}: {err}")
            return True

    def _converge_device(self, device, wave: Wave, retry_failed: bool) -> bool:
        """Bring one device to the digest; True when it was acted on (and so counts in the gate)."""
        if self._stop_requested():
            return False
        run, name, digest, j = self.run_id, self.spec.name, self.ship.digest, self.journal
        done = j.last_end(run, device.id, "activate", digest)
        if done is not None and (done.ok or not retry_failed) and not j.interrupted(run, device.id, "activate", digest):
            self._row_from_journal(device.id, wave, done)
            return True
        transport = self.transports.for_device(device)
        try:
            state = transport.status(device)
        except EdgeshipError as err:
            self._activation_failed(device, wave, None, failure_reason(err), str(err))
            return True
        if state.current == digest:
            if j.interrupted(run, device.id, "activate", digest):  # switched just before a kill: finish the record
                figures = _figures_of(getattr(state, "last_result", None))
                j.end(run, name, device.id, wave.index, "activate", digest, True,
                      detail={"recovered": True, "previous": state.previous, "figures": figures})
                j.set_applied(self.fleet.name, device.id, digest, state.previous, name)
                self._set_row(device.id, wave, state.previous, digest, "activated", _p95(figures))
                self.emit(ev.DeviceActivated(name, wave.name, device.id, digest, _p95(figures), recovered=True))
                return True
            self._set_row(device.id, wave, digest, digest, "unchanged")
            return False
        before = state.current
        sent = self._push(device, wave, transport, before)
        if sent is None:
            return True
        j.begin(run, name, device.id, wave.index, "activate", digest)
        try:
            result = transport.activate(device, digest)
        except EdgeshipError as err:
            j.end(run, name, device.id, wave.index, "activate", digest, False,
                  detail={"reason": failure_reason(err), "message": str(err), "previous": before})
            self._set_row(device.id, wave, before, before, f"failed: {failure_reason(err)}", bytes_sent=sent)
            self.emit(ev.DeviceFailed(name, wave.name, device.id, "activate", failure_reason(err), str(err), raised=True))
            return True
        if result.ok and result.digest != digest:  # a stale or foreign "ok": only the device's word on the target counts
            result = type(result)(False, device.id, digest, "not-running",
                                  f"device answered for {result.digest or 'no release'}, not {digest}", result.figures)
        figures = dict(getattr(result, "figures", None) or {})
        detail = {"reason": result.reason or "", "message": result.message or "", "figures": figures, "previous": before}
        j.end(run, name, device.id, wave.index, "activate", digest, bool(result.ok), detail=detail)
        p95 = _p95(figures)
        if result.ok:
            j.set_applied(self.fleet.name, device.id, digest, before, name)
            self._set_row(device.id, wave, before, digest, "activated", p95, sent)
            self.emit(ev.DeviceActivated(name, wave.name, device.id, digest, p95))
        else:
            self._set_row(device.id, wave, before, before, f"failed: {result.reason or 'error'}", p95, sent)
            self.emit(ev.DeviceFailed(name, wave.name, device.id, "activate", result.reason or "", result.message or ""))
        return True

    def _push(self, device, wave: Wave, transport, before: str | None) -> int | None:
        """Push unless this run finished pushing this digest to this device and no activation has
        been tried since (an agent discards a bundle it refused, and one cut short may have too;
        then the transport's own skip-if-present decides). None = the push failed."""
        run, name, digest, j = self.run_id, self.spec.name, self.ship.digest, self.journal
        if j.pushed_and_untried(run, device.id, digest):
            return 0
        j.begin(run, name, device.id, wave.index, "push", digest)
        try:
            result = transport.push(device, self.ship.bundle)
        except EdgeshipError as err:
            j.end(run, name, device.id, wave.index, "push", digest, False,
                  detail={"reason": failure_reason(err, "push-failed"), "message": str(err)})
            self._activation_failed(device, wave, before, failure_reason(err, "push-failed"), str(err))
            return None
        sent = int(getattr(result, "bytes_sent", 0) or 0)
        j.end(run, name, device.id, wave.index, "push", digest, True, sent, {"skipped": bool(getattr(result, "skipped", False))})
        self.emit(ev.DevicePushed(name, wave.name, device.id, sent, bool(getattr(result, "skipped", False))))
        return sent

    def _activation_failed(self, device, wave: Wave, before, reason: str, message: str) -> None:
        """Record a device that could not even be activated, so the gate counts it."""
        run, name, digest = self.run_id, self.spec.name, self.ship.digest
        self.journal.begin(run, name, device.id, wave.index, "activate", digest)
        self.journal.end(run, name, device.id, wave.index, "activate", digest, False,
                         detail={"reason": reason, "message": message, "previous": before})
        self._set_row(device.id, wave, before, before, f"failed: {reason}")
        self.emit(ev.DeviceFailed(name, wave.name, device.id, None, reason, message))

    def _soak(self, wave: Wave) -> None:
        """Wait soak_s, then check every switched device still runs the digest (a crash-looping model
        that the agent reverted shows up here)."""
        name, digest, run = self.spec.name, self.ship.digest, self.run_id
        self.emit(ev.WaveSoaking(name, wave.name, self.spec.strategy.gate.soak_s))
        deadline = time.monotonic() + self.spec.strategy.gate.soak_s
        while time.monotonic() < deadline and not self._stop_requested():
            self.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        results = self.journal.wave_results(run, wave.index)
        switched = [self.by_id[d] for d, r in results.items() if r.ok]
        statuses = fetch_statuses(switched, self.transports)
        for device in switched:
            state = statuses[device.id]
            ok = not isinstance(state, Exception) and state.current == digest and getattr(state, "online", True)
            why = "" if ok else (failure_reason(state) if isinstance(state, Exception) else
                                 "offline" if not getattr(state, "online", True) else "reverted")
            self.journal.end(run, name, device.id, wave.index, "verify", digest, ok, detail={"reason": why})
            if not ok:
                self._set_row(device.id, wave, None, None if isinstance(state, Exception) else state.current, f"failed: {why}")

    def _evaluate(self, wave: Wave) -> gates.Verdict:
        results = self.journal.wave_results(self.run_id, wave.index)
        verified = self.journal.wave_results(self.run_id, wave.index, "verify")
        outcomes = []
        for device_id, end in results.items():
            ok, reason = end.ok, end.detail.get("reason", "")
            if ok and device_id in verified and not verified[device_id].ok:
                ok, reason = False, verified[device_id].detail.get("reason", "reverted")
            outcomes.append(gates.Outcome(device_id, ok, reason, _p95(end.detail.get("figures") or {})))
        return gates.evaluate(outcomes, self.spec.strategy.gate, self.ship.budget_p95_ms)

    # --- a failed gate ----------------------------------------------------------------------

    def _gate_failed(self, report: ApplyReport, wave: Wave, verdict: gates.Verdict) -> ApplyReport:
        name = self.spec.name
        where = f"gate failed at {wave.name}: {verdict.reason}"
        self._withdraw_failed(wave)
        if self.spec.strategy.on_failure == "pause":
            self.emit(ev.RolloutPaused(name, where))
            return self._finish(report, "paused", where)
        rolled = self._roll_back_wave(wave)
        self.emit(ev.WaveRolledBack(name, wave.name, rolled))
        return self._finish(report, "failed", f"{where}; rolled back {rolled} device(s) of {wave.name}")

    def _withdraw_failed(self, wave: Wave) -> None:
        """Devices of the wave that never switched (offline, refused) may still hold this run's
        desired state: withdraw it, so one that returns late stays where the rollout now wants it."""
        results = self.journal.wave_results(self.run_id, wave.index)
        pending = [self.by_id[d] for d, end in results.items() if not end.ok and d in self.by_id]
        withdrawn = withdraw_pending(pending, self.transports, self._notice)
        if withdrawn:
            self._notice(f"{self.spec.name}: withdrew the pending desired state of {', '.join(withdrawn)}")

    def _roll_back_wave(self, wave: Wave) -> int:
        """Every device of the wave this run switched goes back to the release it ran before."""
        run, name, digest, j = self.run_id, self.spec.name, self.ship.digest, self.journal
        results = j.wave_results(run, wave.index)
        switched = [self.by_id[d] for d, r in results.items() if r.ok]
        for device_id, end in results.items():  # failed activations never switched: they still run their old release
            if not end.ok and device_id in self._rows:
                self._rows[device_id].result = f"failed: {end.detail.get('reason') or 'error'} (kept previous)"

        def one(device) -> bool:
            done = j.last_end(run, device.id, "rollback", digest)
            if done is not None and done.ok:
                return True
            previous = results[device.id].detail.get("previous")
            transport = self.transports.for_device(device)
            try:
                state = transport.status(device)
                if state.current != digest:  # already back (rolled back before a restart, or by the agent)
                    j.end(run, name, device.id, wave.index, "rollback", digest, True, detail={"already": state.current})
                    j.set_applied(self.fleet.name, device.id, state.current, None, name)
                    self._set_row(device.id, wave, previous, state.current, "rolled back")
                    return True
                j.begin(run, name, device.id, wave.index, "rollback", digest)
                result = transport.rollback(device)
            except EdgeshipError as err:
                j.end(run, name, device.id, wave.index, "rollback", digest, False, detail={"message": str(err)})
                self.emit(ev.DeviceFailed(name, wave.name, device.id, "rollback", failure_reason(err), str(err), raised=True))
                return False
            j.end(run, name, device.id, wave.index, "rollback", digest, bool(result.ok),
                  detail={"reason": result.reason or "", "message": result.message or ""})
            if result.ok:
                j.set_applied(self.fleet.name, device.id, previous, None, name)
                self._set_row(device.id, wave, digest, previous, "rolled back")
                self.emit(ev.DeviceRolledBack(name, wave.name, device.id, previous))
            else:
                self._set_row(device.id, wave, digest, digest, f"rollback failed: {result.reason}")
                self.emit(ev.DeviceFailed(name, wave.name, device.id, "rollback", result.reason or "", result.message or ""))
            return bool(result.ok)

        if not switched:
            return 0
        return sum(_map_in_threads(one, switched, self.parallel))

    # --- report rows ------------------------------------------------------------------------

    def _set_row(self, device_id, wave: Wave, before, after, result, p95=None, bytes_sent=0) -> None:
        row = self._rows.get(device_id)
        if row is None:
            self._rows[device_id] = DeviceRow(device_id, wave.name, before, after, result, p95, bytes_sent)
        else:
            row.after, row.result = after, result
            row.p95_ms = p95 if p95 is not None else row.p95_ms
            row.bytes_sent += bytes_sent
            if before is not None and row.before is None:
                row.before = before

    def _row_from_journal(self, device_id, wave: Wave, end) -> None:
        previous = end.detail.get("previous")
        if end.ok:
            self._set_row(device_id, wave, previous, end.digest, "activated", _p95(end.detail.get("figures") or {}))
        else:
            self._set_row(device_id, wave, previous, previous, f"failed: {end.detail.get('reason') or 'error'}")

    def _mark_converged(self, wave: Wave) -> None:
        results = self.journal.wave_results(self.run_id, wave.index)
        for device_id in wave.devices:
            if device_id in results:
                self._row_from_journal(device_id, wave, results[device_id])
            else:
                self._set_row(device_id, wave, self.ship.digest, self.ship.digest, "unchanged")


def roll_back_rollout(name: str, journal: Journal, fleet, transports: Transports,
                      log: Callable[[str], None] | None = stderr_log,
                      on_event: ev.EventCallback | None = None) -> list[tuple[str, bool, str]]:
    """`edgeship rollout rollback NAME`: every device whose last applied release came from this
    rollout and still runs it goes back to the release it ran before. Returns (device, ok, note)."""
    emit = _emitter(log, on_event)
    row = journal.rollout(name)
    if row is None:
        raise RolloutError(f"no rollout named {name!r} in the journal")
    digest = row.artifact_digest
    applied = {d: a for d, a in journal.applied(row.fleet).items() if a["rollout"] == name and a["digest"] == digest}
    by_id = {d.id: d for d in fleet.devices}
    out = []

    def one(device_id: str):
        device = by_id.get(device_id)
        if device is None:
            return device_id, False, "no longer in the fleet"
        transport = transports.for_device(device)
        journal.begin(row.run_id, name, device_id, -1, "rollback", digest)
        try:
            result = transport.rollback(device)
        except EdgeshipError as err:
            journal.end(row.run_id, name, device_id, -1, "rollback", digest, False, detail={"message": str(err)})
            emit(ev.DeviceFailed(name, None, device_id, "rollback", failure_reason(err), str(err), raised=True))
            return device_id, False, str(err)
        journal.end(row.run_id, name, device_id, -1, "rollback", digest, bool(result.ok),
                    detail={"reason": result.reason or "", "message": result.message or ""})
        if result.ok:
            journal.set_applied(row.fleet, device_id, applied[device_id]["previous"], None, name)
        note = "rolled back" if result.ok else f"{result.reason}: {result.message}"
        if result.ok:
            emit(ev.DeviceRolledBack(name, None, device_id, applied[device_id]["previous"]))
        else:
            emit(ev.DeviceFailed(name, None, device_id, "rollback", result.reason or "", result.message or ""))
        return device_id, bool(result.ok), note

    touched = {s["device"] for s in journal.steps(name)} - set(applied)  # never switched: withdraw what is pending
    withdraw_pending([by_id[d] for d in sorted(touched) if d in by_id], transports, lambda line: emit(ev.Notice(line, name)))
    ids = sorted(applied)
    if ids:
        out = _map_in_threads(one, ids, 16)
    journal.set_state(name, "rolled-back", f"rolled back {sum(ok for _, ok, _ in out)} device(s) by an operator")
    return out


def _map_in_threads(fn: Callable, items: list, workers: int) -> list:
    """fn over items, `workers` at a time. On Ctrl-C (KeyboardInterrupt in the waiting thread) the
    devices not started yet are cancelled and the started ones finish their journaled step before the
    interrupt goes on, so a re-run resumes from a consistent journal."""
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(items))))
    try:
        return list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _figures_of(last_result) -> dict:
    if isinstance(last_result, dict):
        return dict(last_result.get("figures") or {})
    return dict(getattr(last_result, "figures", None) or {})


def _p95(figures: dict) -> float | None:
    """The smoke p95 in ms from an agent's figures, whatever nesting the agent chose."""
    for key in ("p95_ms", "smoke_p95_ms", "latency_p95_ms"):
        value = figures.get(key)
        if isinstance(value, (int, float)):
            return float(value)
    smoke = figures.get("smoke")
    if isinstance(smoke, dict):
        return _p95(smoke)
    return None
