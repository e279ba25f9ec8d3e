"""Rollout commands: `plan`, `apply`, `rollout status|pause|resume|abort|rollback|history`, `reconcile`.

Thin: parse flags, load the manifest and fleet, call `edgeship.fleet.rollout`, print. `plan` follows
`kubectl diff`: exit 0 nothing to change, 1 changes, 2 error.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from edgeship import artifact
from edgeship.errors import EdgeshipError, ManifestError, RolloutError, UsageError


def register(sub) -> None:
    p = sub.add_parser("plan", help="show what apply would change, per device (exit 0 none, 1 changes, 2 error)")
    p.add_argument("manifest", type=Path, help="Rollout manifest (YAML)")
    p.add_argument("--name", help="the Rollout to plan when the file holds several")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("apply", help="converge the fleet to a Rollout: canary, waves, health gates")
    p.add_argument("manifest", type=Path, help="Rollout manifest (YAML)")
    p.add_argument("--name", help="only this Rollout when the file holds several")
    p.add_argument("--take-over", action="store_true",
                   help="move devices that belong to another rollout to this one (refused otherwise)")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("rollout", help="inspect and control rollouts recorded in the journal")
    rs = p.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)
    for action, text in (("status", "state, waves and gates of a rollout"),
                         ("pause", "stop a running rollout after the devices in flight"),
                         ("resume", "continue a paused rollout (retries its failed devices)"),
                         ("abort", "stop a rollout for good; devices stay where they are"),
                         ("rollback", "return every device this rollout switched to its previous release"),
                         ("history", "runs, gates and steps of a rollout")):
        q = rs.add_parser(action, help=text)
        q.add_argument("name", help="the Rollout's metadata.name")
        if action == "history":
            q.add_argument("--steps", action="store_true", help="list every journaled step")
        if action == "status":
            q.add_argument("--json", action="store_true", help="machine-readable output")
        q.set_defaults(func=cmd_rollout, rollout_command=action)

    p = sub.add_parser("reconcile", help="GitOps: keep the fleet converged to the Rollouts in a folder or git branch")
    p.add_argument("source", help="a folder of manifests, or a git repository (path or URL) with --branch")
    p.add_argument("--branch", help="git branch to follow (makes SOURCE a git repository)")
    p.add_argument("--path", default=".", help="folder inside the repository holding the manifests (default: its root)")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between passes (default 60)")
    p.add_argument("--once", action="store_true",
                   help="one pass, then exit (for CI): non-zero while any rollout failed or is not converged")
    p.set_defaults(func=cmd_reconcile)


# --- plan / apply -----------------------------------------------------------------------------

def _engine_for(spec, journal, log=None, take_over: bool = False):
    from edgeship.fleet.rollout.artifacts import resolve
    from edgeship.fleet.rollout.devices import load_fleet_and_select
    from edgeship.fleet.rollout.engine import Engine, stderr_log

    shipment = resolve(spec, build=build_pipeline)
    fleet, devices = load_fleet_and_select(spec)
    return Engine(spec, fleet, devices, shipment, journal, log=log or stderr_log, take_over=take_over)


def build_pipeline(manifest: Path) -> Path:
    """Build a Pipeline manifest with the build runner (imported here only: fleet never imports the
    build). The stage cache makes an unchanged pipeline cheap, so reconcile may call this each pass."""
    from edgeship.pipelines import runner
    from edgeship.pipelines.manifest import load_documents

    docs = load_documents(Path(manifest), kinds={"Pipeline"})
    if len(docs) != 1:
        raise RolloutError(f"{manifest}: artifact.pipeline must name a file with exactly one Pipeline (found {len(docs)})")
    result = runner.build(docs[0], progress=runner.Progress(stream=sys.stderr, prefix=f"build {docs[0].name}: "))
    if result.error is not None:
        raise result.error
    built = result.artifact
    if not built.get("tar") and not built.get("dir"):
        raise RolloutError(f"{manifest}: the build produced no artifact (does the pipeline end with the package stage?)")
    return Path(built.get("tar") or built["dir"])


def cmd_plan(args) -> int:
    from edgeship.fleet.rollout import plan as plans
    from edgeship.fleet.rollout.journal import Journal
    from edgeship.fleet.rollout.spec import load_rollouts

    try:
        specs = _pick(load_rollouts(args.manifest), args.name, args.manifest)
        changed = errors = wrong = False
        with Journal() as journal:
            for spec in specs:
                engine = _engine_for(spec, journal)
                try:
                    rows = engine.plan()
                finally:
                    engine.transports.close()
                print(f"Rollout {spec.name}: artifact {artifact.short(engine.ship.digest)} -> fleet {engine.fleet.name}")
                _warn_untrusted(engine)
                print(plans.format_table(rows))
                print(plans.summary(rows))
                for r in rows:
                    if r.action == plans.WRONG_TARGET:
                        print(f"edgeship: error: {r.device_id}: {r.note}: refused", file=sys.stderr)
                owned = engine.foreign_owners()
                if owned:
                    from edgeship.fleet.rollout.ownership import describe

                    print(f"Owned elsewhere: {describe(owned)}: apply refuses them without --take-over.")
                changed |= plans.has_changes(rows)
                errors |= any(r.action == plans.UNREACHABLE for r in rows)
                wrong |= any(r.action == plans.WRONG_TARGET for r in rows)
    except ManifestError:
        raise  # exit 2 already
    except EdgeshipError as err:  # kubectl-diff convention: every error is exit 2, whatever its usual code
        raise PlanError(str(err)) from None
    if wrong:
        raise PlanError("the artifact is not built for the target of some devices: apply refuses to send it")
    if errors:
        raise PlanError("some devices are unreachable; the plan is incomplete")
    return 1 if changed else 0


class PlanError(EdgeshipError):
    """Any failure of `plan`: exit 2, so CI can tell "changes" (1) from "could not tell" (2)."""

    exit_code = 2


def cmd_apply(args) -> int:
    from edgeship.fleet.rollout.journal import Journal
    from edgeship.fleet.rollout.spec import load_rollouts

    specs = _pick(load_rollouts(args.manifest), args.name, args.manifest)
    worst = 0
    with Journal() as journal:
        for spec in specs:
            engine = _engine_for(spec, journal, take_over=args.take_over)
            _warn_untrusted(engine)
            try:
                report = engine.apply()
            except KeyboardInterrupt:
                print(f"edgeship: apply of {spec.name} interrupted; the journal keeps every finished step: "
                      f"run `edgeship apply {args.manifest}` again to resume", file=sys.stderr)
                return 130
            worst = max(worst, print_report(report))
            if any("untrusted-key" in (r.result or "") for r in report.rows):
                _warn_untrusted(engine, prefix="edgeship: hint: ")
    return worst


def _warn_untrusted(engine, prefix: str = "edgeship: warning: ") -> None:
    """Say, before devices refuse it, that the fleet does not trust the key that signed the artifact."""
    from edgeship.fleet.rollout.artifacts import untrusted_signer

    problem = untrusted_signer(engine.ship, engine.fleet)
    if problem:
        print(prefix + problem, file=sys.stderr)


def print_report(report) -> int:
    """The final table on stdout, the verdict on stderr; returns the exit code."""
    from edgeship.fleet.rollout.plan import render_table

    def short(d):
        return artifact.short(d) if d else "-"

    body = [(r.device_id, r.wave, short(r.before), short(r.after), r.result,
             f"{r.p95_ms:.3g}" if r.p95_ms is not None else "-", str(r.bytes_sent)) for r in report.rows]
    print(render_table(("DEVICE", "WAVE", "BEFORE", "AFTER", "RESULT", "P95_MS", "BYTES"), body))
    for name, verdict in report.gates:
        print(f"gate {name}: {'passed' if verdict.ok else 'FAILED'}: {verdict.reason}")
    ratio = report.per_device_ratio
    print(f"Rollout {report.rollout}: {report.state}; {report.bytes_pushed} bytes pushed"
          + (f" to {report.devices_pushed} device(s), {ratio:.2f}x the {report.artifact_bytes}-byte artifact each"
             if ratio is not None else "")
          + (f" (run {report.run_id})" if report.run_id else ""))
    if report.ok:
        return 0
    failed = next((v for _, v in report.gates if not v.ok), None)
    figures = ""
    if failed is not None:
        shown = {k: v for k, v in failed.figures.items() if k != "failed"}
        figures = " " + json.dumps(shown, sort_keys=True)
    print(f"edgeship: error: rollout {report.rollout} {report.state}: {report.reason}{figures}", file=sys.stderr)
    return 1


def _pick(specs, name, manifest):
    for spec in specs:
        for warning in spec.warnings:
            print(warning, file=sys.stderr)
    if name:
        specs = [s for s in specs if s.name == name]
        if not specs:
            raise UsageError(f"{manifest}: no Rollout named {name!r}")
    if not specs:
        raise UsageError(f"{manifest}: no Rollout document in this file")
    return specs


# --- rollout status / pause / resume / abort / rollback / history -----------------------------

def cmd_rollout(args) -> int:
    from edgeship.fleet.rollout.journal import Journal

    with Journal() as journal:
        row = journal.rollout(args.name)
        if row is None:
            known = ", ".join(r.name for r in journal.rollouts()) or "none yet"
            raise RolloutError(f"no rollout named {args.name!r} in the journal (known: {known})")
        return _ROLLOUT_ACTIONS[args.rollout_command](args, journal, row)


def _live_status(row):
    """The rollout's devices as they are now (status.derive), or (None, why) when they cannot be asked."""
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
        return None, str(err)
    return derive(row.state, row.artifact_digest, statuses), ""


def _status(args, journal, row) -> int:
    from edgeship.fleet.rollout.status import devices_pushed, summary

    live, why_not = _live_status(row)
    gates = journal.gates(row.run_id)
    steps = journal.steps(row.name, row.run_id)
    ends = [s for s in steps if s["phase"] == "end" and s["action"] == "activate"]
    latest = {s["device"]: s for s in ends}
    ok = sum(1 for s in latest.values() if s["ok"])
    rolled_back = len({s["device"] for s in steps if s["phase"] == "end" and s["action"] == "rollback" and s["ok"]})
    data = {"name": row.name, "state": row.state, "reason": row.reason, "run": row.run_id,
            "artifact": row.artifact_digest, "manifest": row.manifest, "fleet": row.fleet,
            "updated": _ts(row.updated), "activated": ok, "failed": len(latest) - ok, "rolled_back": rolled_back,
            "bytes_pushed": journal.bytes_pushed(row.run_id),
            "devices_pushed": len(devices_pushed(steps)), "artifact_bytes": _size(row.bundle),
            "gates": [{"wave": g["name"], "ok": g["ok"], "reason": g["reason"], "figures": g["figures"]} for g in gates.values()],
            "live": live.to_dict() if live else None, "live_error": why_not or None}
    if live is not None:
        data.update(sync=live.sync, health=live.health)
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2))
        return 0
    short = lambda d: artifact.short(d) if d else "-"  # noqa: E731
    if live is not None:
        print(f"Rollout {row.name}: {live.sync}, {live.health}: {summary(live, short)}")
    else:
        print(f"Rollout {row.name}: fleet state unknown ({why_not})")
    print(f"  last run {row.run_id}: {row.state}" + (f" ({row.reason})" if row.reason else ""))
    print(f"  artifact {artifact.short(row.artifact_digest)}, fleet {row.fleet}, updated {data['updated']}")
    print(f"  devices activated {ok}, failed {len(latest) - ok}, rolled back {rolled_back}, bytes pushed {data['bytes_pushed']}"
          + (f" to {data['devices_pushed']} device(s) ({data['bytes_pushed'] / data['devices_pushed'] / data['artifact_bytes']:.2f}x"
             f" the {data['artifact_bytes']}-byte artifact each)" if data["devices_pushed"] and data["artifact_bytes"] else ""))
    for wave, g in gates.items():
        print(f"  gate {g['name']}: {'passed' if g['ok'] else 'FAILED'}: {g['reason']}")
    return 0


def _pause(args, journal, row) -> int:
    if row.state != "running":
        raise RolloutError(f"{row.name} is {row.state}, not running: nothing to pause")
    journal.set_state(row.name, "paused", "paused by an operator")
    print(f"Rollout {row.name}: paused (a running apply stops after the devices in flight)")
    return 0


def _abort(args, journal, row) -> int:
    if row.state in ("done", "aborted", "rolled-back"):
        raise RolloutError(f"{row.name} is {row.state}: nothing to abort")
    journal.set_state(row.name, "aborted", "aborted by an operator")
    print(f"Rollout {row.name}: aborted (devices stay on what they run now; `edgeship rollout rollback {row.name}` to undo)")
    return 0


def _resume(args, journal, row) -> int:
    from edgeship.fleet.rollout.spec import load_rollout

    if row.state not in ("paused", "running"):
        raise RolloutError(f"{row.name} is {row.state}, not paused: run `edgeship apply` to start it again")
    spec = load_rollout(Path(row.manifest), row.name)
    engine = _engine_for(spec, journal)
    if engine.ship.digest != row.artifact_digest or spec.spec_digest != row.spec_digest:
        raise RolloutError(f"{row.name}: {row.manifest} changed since the run was paused: `edgeship apply` it as a new run")
    return print_report(engine.apply(resume=True))


def _rollback(args, journal, row) -> int:
    from edgeship.fleet.inventory import load_fleet
    from edgeship.fleet.rollout.devices import Transports
    from edgeship.fleet.rollout.engine import roll_back_rollout
    from edgeship.fleet.rollout.spec import load_rollout

    spec = load_rollout(Path(row.manifest), row.name)
    fleet = load_fleet(spec.fleet_path)
    transports = Transports(fleet)
    try:
        results = roll_back_rollout(row.name, journal, fleet, transports)
    finally:
        transports.close()
    failed = [r for r in results if not r[1]]
    print(f"Rollout {row.name}: rolled back {len(results) - len(failed)} device(s)"
          + (f", {len(failed)} failed: " + ", ".join(f"{d} ({n})" for d, _, n in failed[:5]) if failed else ""))
    return 1 if failed else 0


def _history(args, journal, row) -> int:
    from edgeship.fleet.rollout.plan import render_table

    runs = journal.runs(row.name)
    body = [(str(r["id"]), _ts(r["started"]), _ts(r["finished"]) if r["finished"] else "-", r["state"],
             artifact.short(r["artifact_digest"]), r["reason"] or "") for r in runs]
    print(render_table(("RUN", "STARTED", "FINISHED", "STATE", "ARTIFACT", "REASON"), body))
    if args.steps:
        steps = [s for s in journal.steps(row.name) if s["phase"] == "end"]
        body = [(str(s["run_id"]), _ts(s["ts"]), s["device"], str(s["wave"]), s["action"],
                 "ok" if s["ok"] else "FAILED", str(s["bytes"] or 0), _detail(s["detail"])) for s in steps]
        print(render_table(("RUN", "TIME", "DEVICE", "WAVE", "ACTION", "RESULT", "BYTES", "DETAIL"), body))
    return 0


_ROLLOUT_ACTIONS = {"status": _status, "pause": _pause, "resume": _resume, "abort": _abort,
                    "rollback": _rollback, "history": _history}


def _size(path: str | None) -> int:
    try:
        return Path(path).stat().st_size if path else 0
    except OSError:
        return 0


def _ts(ts) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else "-"


def _detail(text) -> str:
    try:
        detail = json.loads(text or "{}")
    except ValueError:
        return ""
    return detail.get("reason") or ("skipped" if detail.get("skipped") else "") or ("recovered" if detail.get("recovered") else "")


# --- reconcile --------------------------------------------------------------------------------

def cmd_reconcile(args) -> int:
    from edgeship.fleet.rollout.reconcile import DirSource, GitSource, Reconciler

    if args.interval <= 0:
        raise UsageError("--interval must be > 0 seconds")
    source = GitSource(args.source, args.branch, args.path) if args.branch else DirSource(Path(args.source))
    reconciler = Reconciler(source, engine_for=_engine_for, report=print_report)
    if args.once:
        return 0 if reconciler.run_pass().ok else 1
    while True:
        reconciler.run_pass()
        time.sleep(args.interval)
