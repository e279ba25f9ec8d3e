"""`edgeship deploy ARTIFACT --fleet FLEET.yaml`: push and activate on selected devices, now.

The direct path: no waves, no gates (that is `edgeship apply`). Prints one row per device and exits
1 if any device failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgeship import artifact
from edgeship.errors import UsageError


def resolve_bundle(value: str) -> Path:
    """A .tar bundle, an artifact folder (its sibling DIR.tar, else packed into the store), or
    `sha256:<hex>` from the artifact store."""
    from edgeship.paths import state_dir

    store = state_dir() / "artifacts"
    if value.startswith("sha256:"):
        hexd = value.split(":", 1)[1]
        for cand in (store / f"{hexd}.tar", *store.glob(f"{hexd}*.tar")):
            if cand.is_file():
                return cand
        raise UsageError(f"{value}: not in the artifact store ({store})")
    path = Path(value)
    if path.is_file():
        return path
    if path.is_dir():
        sibling = path.with_name(path.name + ".tar")
        if sibling.is_file() and artifact.bundle_digest(sibling) == artifact.bundle_digest(path):
            return sibling
        store.mkdir(parents=True, exist_ok=True)
        hexd = artifact.bundle_digest(path).split(":", 1)[1]
        target = store / f"{hexd}.tar"
        return target if target.is_file() else artifact.pack(path, target)
    raise UsageError(f"{value}: no such artifact (a .tar bundle, an artifact folder or sha256:<digest>)")


def _table(outcomes) -> str:
    rows = [("DEVICE", "TRANSPORT", "RESULT", "PUSHED", "SMOKE P95", "TIME", "DETAIL")]
    for o in outcomes:
        pushed = "-" if o.push is None else ("skipped" if o.push.skipped else f"{o.push.bytes_sent / 1e6:.2f} MB")
        if o.push is not None and o.push.resumed_from:
            pushed += f" (resumed at {o.push.resumed_from})"
        p95 = o.figures.get("p95_ms")
        detail = o.message if not o.ok else (o.message if o.message != "activated" else "")
        rows.append((o.device_id, o.transport, "ok" if o.ok else f"FAILED:{o.reason or 'error'}", pushed,
                     f"{p95:.3f} ms" if isinstance(p95, (int, float)) else "-", f"{o.seconds:.1f}s", detail))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def _deploy(args) -> int:
    from edgeship.fleet.deploy import Progress, deploy
    from edgeship.fleet.inventory import load_fleet, parse_selector
    from edgeship.fleet.transports import close_transports

    if args.parallel < 1:
        raise UsageError("--parallel must be at least 1")
    fleet = load_fleet(args.fleet)
    selector = parse_selector(args.select)
    try:
        devices = fleet.select(selector)
    except ValueError as err:
        raise UsageError(f"--select: {err}") from None
    if not devices:
        raise UsageError(f"no device of fleet {fleet.name} matches --select {' '.join(args.select or [])}")
    bundle = resolve_bundle(args.artifact)
    # Fail fast on this side: a tampered or unsigned bundle never leaves the manager.
    from edgeship.fleet.trust_delivery import fleet_document

    document = fleet_document(fleet)  # the trust document's artifact keys, when the fleet has one
    digest = artifact.verify_bundle(bundle, fleet.trusted_keys, require_signature=bool(fleet.trusted_keys) or bool(document),
                                    keyring=document.ring("artifacts") if document else None)
    _refuse_wrong_targets(bundle, devices)
    if args.timeout:
        for kind in ("ssh",):
            fleet.transports.setdefault(kind, {})["command_timeout_s"] = args.timeout
    _check_owners(fleet, devices, args.take_over)
    progress = Progress(len(devices), enabled=not args.no_progress)
    try:
        outcomes = deploy(fleet, devices, bundle, digest, parallel=args.parallel, progress=progress,
                          activate=not args.push_only)
    finally:
        close_transports(fleet)
    if args.take_over and not args.push_only:
        _detach(fleet, {o.device_id: digest for o in outcomes if o.ok})
    rows = [{"device_id": o.device_id, "transport": o.transport, "ok": o.ok, "stage": o.stage,
             "reason": o.reason, "message": o.message, "seconds": round(o.seconds, 3),
             "push": o.push.to_dict() if o.push else None, "figures": o.figures} for o in outcomes]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.output_format == "json":
        from edgeship.output import print_document

        print_document("DeployResult", fleet=fleet.name, digest=digest, devices=rows, ok=all(o.ok for o in outcomes))
    else:
        print(f"deploy {artifact.short(digest)} to {len(devices)} device(s) of fleet {fleet.name}")
        print(_table(outcomes))
    failed = [o for o in outcomes if not o.ok]
    if failed:
        print(f"edgeship: error: {len(failed)} of {len(outcomes)} device(s) failed: "
              + ", ".join(f"{o.device_id} ({o.reason})" for o in failed), file=sys.stderr)
        return 1
    return 0


def _refuse_wrong_targets(bundle, devices) -> None:
    """Target binding (fleet/target_binding.py): one line per device of another target, nothing sent."""
    from edgeship.fleet.target_binding import refused_devices

    refused = refused_devices(artifact.read_json_member(bundle, "bundle.json"), devices)
    for device_id, why in refused.items():
        print(f"edgeship: error: {device_id}: {why}: refused", file=sys.stderr)
    if refused:
        raise UsageError(f"the artifact is not built for the target of {len(refused)} selected device(s); nothing was sent")


def _check_owners(fleet, devices, take_over: bool) -> None:
    """A device that belongs to a rollout is that rollout's: refuse (its rollout, or reconcile, would
    move it back) unless --take-over, which detaches it. Warn either way."""
    from edgeship.errors import RolloutError
    from edgeship.fleet.rollout.journal import journal_for
    from edgeship.fleet.rollout.ownership import describe, owners

    with journal_for(fleet.source) as journal:
        owned = owners(journal, fleet.name, [d.id for d in devices])
    if not owned:
        return
    if not take_over:
        raise RolloutError(f"deploy: {describe(owned)} belong to a rollout, which would move them back; "
                           "`--take-over` detaches them from it")
    print(f"edgeship: warning: deploy takes over {describe(owned)}: they leave their rollout", file=sys.stderr)


def _detach(fleet, deployed: dict[str, str]) -> None:
    from edgeship.fleet.rollout.journal import journal_for
    from edgeship.fleet.rollout.ownership import release

    with journal_for(fleet.source) as journal:
        release(journal, fleet.name, deployed)


def register(sub) -> None:
    p = sub.add_parser("deploy", help="push and activate an artifact on fleet devices now (no waves)",
                       description="Push an artifact to the selected devices and activate it; one row per device.")
    p.add_argument("artifact", help="bundle .tar, artifact folder, or sha256:<digest> from the artifact store")
    p.add_argument("--fleet", required=True, help="Fleet manifest (YAML)")
    p.add_argument("--select", action="append", metavar="SELECTOR",
                   help="label selector: key=value, key!=value, 'key in (a,b)', key (exists), !key; repeatable (ANDed)")
    p.add_argument("--parallel", type=int, default=4, help="devices worked on at once (default 4)")
    p.add_argument("--timeout", type=float, default=None, help="per-device remote command timeout in seconds (ssh)")
    p.add_argument("--push-only", action="store_true", help="upload but do not activate")
    p.add_argument("--take-over", action="store_true",
                   help="deploy even to devices that belong to a rollout, detaching them from it")
    p.add_argument("--json", action="store_true", help="the legacy JSON list of outcomes (prefer -o json)")
    from edgeship.output import add_output_option

    add_output_option(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_deploy)
