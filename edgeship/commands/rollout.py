"""Rollout commands: `plan`, `apply`, `rollout list|status|pause|resume|abort|rollback|history`, `reconcile`.

Thin: parse flags, call `edgeship.api`, print its typed results as text, a `-o json` document or an
`-o ndjson` event stream. `plan` follows `kubectl diff`: exit 0 nothing to change, 1 changes, 2 error.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from edgeship import artifact
from edgeship.errors import EdgeshipError, ManifestError, UsageError


def register(sub) -> None:
    from edgeship.output import add_output_option

    p = sub.add_parser("plan", help="show what apply would change, per device (exit 0 none, 1 changes, 2 error)")
    p.add_argument("manifest", type=Path, help="Rollout manifest (YAML)")
    p.add_argument("--name", help="the Rollout to plan when the file holds several")
    add_output_option(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("apply", help="converge the fleet to a Rollout: canary, waves, health gates")
    p.add_argument("manifest", type=Path, help="Rollout manifest (YAML)")
    p.add_argument("--name", help="only this Rollout when the file holds several")
    p.add_argument("--take-over", action="store_true",
                   help="move devices that belong to another rollout to this one (refused otherwise)")
    add_output_option(p, ("text", "json", "ndjson"))
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("rollout", help="inspect and control rollouts recorded in the journal")
    rs = p.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)
    q = rs.add_parser("list", help="every rollout in the journal: state, release, last run")
    _add_fleet_option(q)
    add_output_option(q)
    q.set_defaults(func=cmd_rollout_list)
    for action, text in (("status", "state, waves, gates and devices of a rollout"),
                         ("pause", "stop a running rollout after the devices in flight"),
                         ("resume", "continue a paused rollout (retries its failed devices)"),
                         ("abort", "stop a rollout for good; devices stay where they are"),
                         ("rollback", "return every device this rollout switched to its previous release"),
                         ("history", "runs, gates and steps of a rollout")):
        q = rs.add_parser(action, help=text)
        q.add_argument("name", help="the Rollout's metadata.name")
        _add_fleet_option(q)
        if action == "history":
            q.add_argument("--steps", action="store_true", help="list every journaled step")
        if action == "status":
            q.add_argument("--json", action="store_true", help="machine-readable output (the legacy form; prefer -o json)")
        if action in ("status", "history", "rollback", "resume"):
            add_output_option(q)
        q.set_defaults(func=cmd_rollout, rollout_command=action)

    p = sub.add_parser("reconcile", help="GitOps: keep the fleet converged to the Rollouts in a folder or git branch")
    p.add_argument("source", help="a folder of manifests, or a git repository (path or URL) with --branch")
    p.add_argument("--branch", help="git branch to follow (makes SOURCE a git repository)")
    p.add_argument("--path", default=".", help="folder inside the repository holding the manifests (default: its root)")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between passes (default 60)")
    p.add_argument("--once", action="store_true",
                   help="one pass, then exit (for CI): non-zero while any rollout failed or is not converged")
    add_output_option(p, ("text", "ndjson"))
    p.set_defaults(func=cmd_reconcile)


def _add_fleet_option(parser) -> None:
    parser.add_argument("--fleet", type=Path, metavar="FLEET.yaml",
                        help="the Fleet manifest whose state: block says where the journal is "
                             "(default: EDGESHIP_DATABASE_URL, else the state dir's SQLite file)")


# --- plan / apply -----------------------------------------------------------------------------

def _engine_for(spec, journal, log=None, take_over: bool = False, on_event=None):
    """The engine for a spec with the CLI's wiring: human lines on stderr, a built pipeline's progress too."""
    from edgeship.api import engine_for
    from edgeship.fleet.rollout.engine import stderr_log

    return engine_for(spec, journal, log=log or stderr_log, take_over=take_over, on_event=on_event,
                      build_progress=True)


def cmd_plan(args) -> int:
    from edgeship import api
    from edgeship.fleet.rollout import plan as plans
    from edgeship.output import print_document, wants

    try:
        results = api.plan(args.manifest, args.name)
    except ManifestError:
        raise  # exit 2 already
    except EdgeshipError as err:  # kubectl-diff convention: every error is exit 2, whatever its usual code
        raise PlanError(str(err)) from None
    for result in results:
        _say_warnings(result.warnings)
    if wants(args, "json"):
        print_document("Plan", rollouts=results, changes=any(r.changes for r in results),
                       errors=any(r.errors for r in results))
    else:
        for result in results:
            print(f"Rollout {result.rollout}: artifact {_label(result.release)} -> fleet {result.fleet}")
            if result.untrusted_signer:
                print("edgeship: warning: " + result.untrusted_signer, file=sys.stderr)
            body = [(d.device, d.transport, d.wave, _label(d.current), _label(d.desired), d.action, d.note)
                    for d in result.devices]
            print(plans.render_table(("DEVICE", "TRANSPORT", "WAVE", "CURRENT", "DESIRED", "ACTION", "NOTE"), body))
            print(plans.summary(result.devices))
            if result.owned_elsewhere:
                from edgeship.fleet.rollout.ownership import describe

                print(f"Owned elsewhere: {describe(result.owned_elsewhere)}: apply refuses them without --take-over.")
    for result in results:
        for d in result.devices:
            if d.action == plans.WRONG_TARGET:
                print(f"edgeship: error: {d.device}: {d.note}: refused", file=sys.stderr)
    if any(d.action == plans.WRONG_TARGET for r in results for d in r.devices):
        raise PlanError("the artifact is not built for the target of some devices: apply refuses to send it")
    if any(r.errors for r in results):
        raise PlanError("some devices are unreachable; the plan is incomplete")
    return 1 if any(r.changes for r in results) else 0


class PlanError(EdgeshipError):
    """Any failure of `plan`: exit 2, so CI can tell "changes" (1) from "could not tell" (2)."""

    exit_code = 2


def cmd_apply(args) -> int:
    from edgeship import api
    from edgeship.fleet.rollout.journal import journal_for
    from edgeship.output import NdjsonWriter, print_document, wants

    specs = api.load_rollouts(args.manifest, args.name)
    for spec in specs:
        _say_warnings(spec.warnings)
    stream = NdjsonWriter() if wants(args, "ndjson") else None
    worst, results = 0, []
    with journal_for(*(spec.fleet_path for spec in specs)) as journal:
        for spec in specs:
            engine = _engine_for(spec, journal, take_over=args.take_over, on_event=stream)
            _warn_untrusted(engine)
            try:
                report = engine.apply()
            except KeyboardInterrupt:
                print(f"edgeship: apply of {spec.name} interrupted; the journal keeps every finished step: "
                      f"run `edgeship apply {args.manifest}` again to resume", file=sys.stderr)
                return 130
            result = api.apply_result(report, journal, engine.ship.bundle)
            results.append(result)
            worst = max(worst, 0 if result.ok else 1)
            if wants(args, "text"):
                print_report(result)
            elif not result.ok:
                _say_failed(result)
            if any("untrusted-key" in (d.result or "") for d in result.devices):
                _warn_untrusted(engine, prefix="edgeship: hint: ")
    if stream is not None:
        stream.document("ApplyResult", rollouts=results, ok=all(r.ok for r in results))
    elif wants(args, "json"):
        print_document("ApplyResult", rollouts=results, ok=all(r.ok for r in results))
    return worst


def _warn_untrusted(engine, prefix: str = "edgeship: warning: ") -> None:
    """Say, before devices refuse it, that the fleet does not trust the key that signed the artifact."""
    from edgeship.fleet.rollout.artifacts import untrusted_signer

    problem = untrusted_signer(engine.ship, engine.fleet)
    if problem:
        print(prefix + problem, file=sys.stderr)


def _label(release) -> str:
    """A release as tables show it: `kws v2 (sha256:3f2a9c1b7e04)`, or `-` for none."""
    if release is None or not release.digest:
        return "-"
    short = artifact.short(release.digest)
    return f"{release.name} ({short})" if release.name and release.name != short else short


def print_report(result, journal=None) -> int:
    """The final table on stdout (with each failure's full message), the verdict on stderr; returns the exit code.
    `result` is an api ApplyResult (an engine ApplyReport from reconcile is converted with its `journal`)."""
    from edgeship.fleet.rollout.plan import render_table

    if not hasattr(result, "release"):  # an engine ApplyReport (reconcile)
        from edgeship.api import apply_result

        result = apply_result(result, journal)
    body = [(d.device, d.wave, _label(d.before), _label(d.after), d.result,
             f"{d.p95_ms:.3g}" if d.p95_ms is not None else "-", str(d.bytes)) for d in result.devices]
    print(render_table(("DEVICE", "WAVE", "BEFORE", "AFTER", "RESULT", "P95_MS", "BYTES"), body))
    for d in result.devices:
        if d.message:
            print(f"  {d.device}: {d.message}")
    for gate in result.gates:
        print(f"gate {gate.wave}: {'passed' if gate.ok else 'FAILED'}: {gate.reason}")
    ratio = result.per_device_ratio
    print(f"Rollout {result.rollout}: {result.state}; {result.bytes_pushed} bytes pushed"
          + (f" to {result.devices_pushed} device(s), {ratio:.2f}x the {result.artifact_bytes}-byte artifact each"
             if ratio is not None else "")
          + (f" (run {result.run_number})" if result.run_number else ""))
    if result.ok:
        return 0
    _say_failed(result)
    return 1


def _say_failed(result) -> None:
    failed = next((g for g in result.gates if not g.ok), None)
    figures = ""
    if failed is not None:
        shown = {k: v for k, v in failed.figures.items() if k != "failed"}
        figures = " " + json.dumps(shown, sort_keys=True)
    print(f"edgeship: error: rollout {result.rollout} {result.state}: {result.reason}{figures}", file=sys.stderr)


def _say_warnings(warnings) -> None:
    for warning in warnings:
        print(warning, file=sys.stderr)


# --- rollout list / status / pause / resume / abort / rollback / history ----------------------

def cmd_rollout_list(args) -> int:
    from edgeship import api
    from edgeship.fleet.rollout.plan import render_table
    from edgeship.output import print_document, wants

    rows = api.rollouts(fleet=args.fleet)
    if wants(args, "json"):
        print_document("RolloutList", rollouts=rows)
        return 0
    if not rows:
        print("no rollouts in the journal yet (`edgeship apply ROLLOUT.yaml` starts one)")
        return 0
    body = [(r.name, r.state, _label(r.release), r.fleet, str(r.run_number or "-"), _ts(r.updated), r.reason)
            for r in rows]
    print(render_table(("NAME", "STATE", "RELEASE", "FLEET", "RUN", "UPDATED", "REASON"), body))
    return 0


def cmd_rollout(args) -> int:
    from edgeship.api import _row
    from edgeship.fleet.rollout.journal import journal_for

    with journal_for(args.fleet) as journal:
        _row(journal, args.name)  # the rollout exists (else one line naming the journal and the known ones)
    return _ROLLOUT_ACTIONS[args.rollout_command](args)


def _legacy_status(st) -> dict:
    """`rollout status --json` as it was before -o json (kept for scripts that read it)."""
    data = {"name": st.name, "state": st.state, "reason": st.reason, "run": st.run,
            "artifact": st.release.digest, "manifest": st.manifest, "fleet": st.fleet,
            "updated": _ts(st.updated), "activated": st.activated, "failed": st.failed, "rolled_back": st.rolled_back,
            "bytes_pushed": st.bytes_pushed, "devices_pushed": st.devices_pushed, "artifact_bytes": st.artifact_bytes,
            "gates": [{"wave": g.wave, "ok": g.ok, "reason": g.reason, "figures": g.figures} for g in st.gates],
            "live": st._live.to_dict() if st._live else None, "live_error": st.live_error}
    if st._live is not None:
        data.update(sync=st.sync, health=st.health)
    return data


def _status(args) -> int:
    from edgeship import api
    from edgeship.fleet.rollout.plan import render_table
    from edgeship.fleet.rollout.status import summary
    from edgeship.output import print_document, wants

    st = api.status(args.name, fleet=args.fleet)
    if getattr(args, "json", False):
        print(json.dumps(_legacy_status(st), indent=2))
        return 0
    if wants(args, "json"):
        print_document("RolloutStatus", **st.to_dict())
        return 0
    short = lambda d: artifact.short(d) if d else "-"  # noqa: E731
    if st._live is not None:
        print(f"Rollout {st.name}: {st.sync}, {st.health}: {summary(st._live, short)}")
    else:
        print(f"Rollout {st.name}: fleet state unknown ({st.live_error})")
    print(f"  last run {st.run_number}: {st.state}" + (f" ({st.reason})" if st.reason else ""))
    print(f"  artifact {_label(st.release)}, fleet {st.fleet}, updated {_ts(st.updated)}")
    print(f"  devices activated {st.activated}, failed {st.failed}, rolled back {st.rolled_back}, bytes pushed {st.bytes_pushed}"
          + (f" to {st.devices_pushed} device(s) ({st.bytes_pushed / st.devices_pushed / st.artifact_bytes:.2f}x"
             f" the {st.artifact_bytes}-byte artifact each)" if st.devices_pushed and st.artifact_bytes else ""))
    for g in st.gates:
        print(f"  gate {g.wave}: {'passed' if g.ok else 'FAILED'}: {g.reason}")
    if st.releases:
        print("  releases: " + ", ".join(f"{_label(c.release)}: {c.devices} device{'s' if c.devices != 1 else ''}"
                                         for c in st.releases))
    if st.devices:
        body = [(d.device, d.state, _label(d.release), _ago(d.last_seen),
                 f"{d.reason}: {d.message}" if d.reason and d.message else d.reason or d.message) for d in st.devices]
        table = render_table(("DEVICE", "STATE", "RELEASE", "LAST SEEN", "PROBLEM"), body)
        print("\n".join("  " + line for line in table.splitlines()))  # under the rollout, like its other lines
    return 0


def _pause(args) -> int:
    from edgeship import api

    api.pause(args.name, fleet=args.fleet)
    print(f"Rollout {args.name}: paused (a running apply stops after the devices in flight)")
    return 0


def _abort(args) -> int:
    from edgeship import api

    api.abort(args.name, fleet=args.fleet)
    print(f"Rollout {args.name}: aborted (devices stay on what they run now; `edgeship rollout rollback {args.name}` to undo)")
    return 0


def _resume(args) -> int:
    from edgeship import api
    from edgeship.fleet.rollout.engine import stderr_log
    from edgeship.output import print_document, wants

    result = api.resume(args.name, fleet=args.fleet, log=stderr_log)
    if wants(args, "json"):
        print_document("ApplyResult", rollouts=[result], ok=result.ok)
        if not result.ok:
            _say_failed(result)
        return 0 if result.ok else 1
    return print_report(result)


def _rollback(args) -> int:
    from edgeship import api
    from edgeship.fleet.rollout.engine import stderr_log
    from edgeship.output import print_document, wants

    result = api.rollback(args.name, fleet=args.fleet, log=stderr_log)
    failed = [d for d in result.devices if not d.ok]
    if wants(args, "json"):
        print_document("RollbackResult", **result.to_dict())
    else:
        print(f"Rollout {args.name}: rolled back {len(result.devices) - len(failed)} device(s)"
              + (f", {len(failed)} failed: " + ", ".join(f"{d.device} ({d.note})" for d in failed[:5]) if failed else ""))
    return 1 if failed else 0


def _history(args) -> int:
    from edgeship import api
    from edgeship.fleet.rollout.plan import render_table
    from edgeship.output import print_document, wants

    hist = api.history(args.name, fleet=args.fleet)
    if wants(args, "json"):
        data = hist.to_dict()
        if not args.steps:
            data.pop("steps")
        print_document("RolloutHistory", **data)
        return 0
    body = [(str(r.number), str(r.run), _ts(r.started), _ts(r.finished) if r.finished else "-", r.state,
             _label(r.release), r.reason) for r in hist.runs]
    print(render_table(("RUN", "ID", "STARTED", "FINISHED", "STATE", "RELEASE", "REASON"), body))
    if args.steps:
        body = [(str(s.number), _ts(s.ts), s.device, str(s.wave), s.action, "ok" if s.ok else "FAILED", str(s.bytes),
                 f"{s.reason}: {s.message}" if s.reason and s.message else s.reason or s.message) for s in hist.steps]
        print(render_table(("RUN", "TIME", "DEVICE", "WAVE", "ACTION", "RESULT", "BYTES", "DETAIL"), body))
    return 0


_ROLLOUT_ACTIONS = {"status": _status, "pause": _pause, "resume": _resume, "abort": _abort,
                    "rollback": _rollback, "history": _history}


def _ts(ts) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else "-"


def _ago(ts) -> str:
    from edgeship.commands.fleet import _ago as ago

    return ago(ts) if ts else "-"


# --- reconcile --------------------------------------------------------------------------------

def cmd_reconcile(args) -> int:
    from edgeship.fleet.rollout.reconcile import DirSource, GitSource, Reconciler
    from edgeship.output import wants

    if args.interval <= 0:
        raise UsageError("--interval must be > 0 seconds")
    source = GitSource(args.source, args.branch, args.path) if args.branch else DirSource(Path(args.source))
    run_pass = _ndjson_reconciler(source) if wants(args, "ndjson") else \
        Reconciler(source, engine_for=_engine_for, report=print_report).run_pass
    if args.once:
        return 0 if run_pass().ok else 1
    while True:
        run_pass()
        time.sleep(args.interval)


def _ndjson_reconciler(source):
    """A reconciler whose events (and its own lines, as Notice events) go to stdout as NDJSON; each pass
    ends with a ReconcilePass document. Human lines stay on stderr."""
    from dataclasses import asdict

    from edgeship import api
    from edgeship.events import Notice
    from edgeship.fleet.rollout.engine import stderr_log
    from edgeship.fleet.rollout.reconcile import Reconciler
    from edgeship.output import NdjsonWriter

    stream = NdjsonWriter()

    def log(line: str) -> None:
        stream(Notice(line))
        stderr_log(line)

    def report(engine_report, journal) -> None:
        result = api.apply_result(engine_report, journal)
        stream.document("ApplyResult", rollouts=[result], ok=result.ok)

    reconciler = Reconciler(source, engine_for=lambda spec, journal, _log=None: _engine_for(spec, journal, on_event=stream),
                            report=report, log=log)

    def run_pass():
        result = reconciler.run_pass()
        stream.document("ReconcilePass", **asdict(result), ok=result.ok)
        return result

    return run_pass
