"""`edgeship fleet wheelhouse` and `edgeship fleet bootstrap` (hooked into `edgeship fleet`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgeship.errors import UsageError


def _boards(fleet, selector) -> list:
    devices = [d for d in fleet.select(selector) if d.transport in ("ssh", "mqtt")]
    skipped = [d.id for d in fleet.select(selector) if d.transport not in ("ssh", "mqtt")]
    for device_id in skipped:
        print(f"{device_id}: skipped (local devices run the agent of this install)", file=sys.stderr)
    missing = [d.id for d in devices if not d.address]
    if missing:
        raise UsageError(f"{missing[0]}: bootstrap reaches a board over SSH: give it an address (host[:port])")
    if not devices:
        raise UsageError("no ssh or mqtt device selected: nothing to bootstrap")
    return devices


def _load(args):
    from edgeship.fleet.inventory import load_fleet, parse_selector

    fleet = load_fleet(Path(args.fleet))
    try:
        selector = parse_selector(args.select)
        return fleet, _boards(fleet, selector)
    except ValueError as err:
        raise UsageError(f"--select: {err}") from None


def _wheelhouse(args) -> int:
    from edgeship.fleet.bootstrap import wheelhouse
    from edgeship.fleet.bootstrap.board import Bootstrapper, BoardError
    from edgeship.fleet.bootstrap.probe import PROBE, Board
    from edgeship.fleet.bootstrap.runtime_check import wheelhouse_extras

    if not args.fleet and not args.board:
        raise UsageError("give a Fleet manifest (its boards are asked) or --board PYTHON:ARCH")
    platforms = [wheelhouse.Platform.parse(b) for b in args.board or []]
    fleet, devices = _load(args) if args.fleet else (None, [])
    extras = args.extras or (wheelhouse_extras(devices) if devices else "agent")
    if not platforms:  # ask the boards themselves
        import shlex

        probe = Bootstrapper(fleet, Path(args.out))
        try:
            for device in devices:
                settings = probe.ssh.settings(device)
                python = str(settings.get("bootstrap_python") or "python3")
                try:
                    board = Board.from_json(probe._must(device, f"{shlex.quote(python)} -c {shlex.quote(PROBE)} /",
                                                        "probing the board"))
                except BoardError as err:
                    raise UsageError(f"{device.id}: {err}") from None
                platforms.append(wheelhouse.Platform(board.python_minor, board.arch, board.libc_version or wheelhouse.DEFAULT_GLIBC))
        finally:
            probe.close()
    source = Path(args.source) if args.source else None
    built = wheelhouse.build(Path(args.out), platforms, source=source, extras=extras)
    for tag, manifest in built.items():
        size = sum((Path(args.out) / tag / name).stat().st_size for name in manifest["wheels"])
        print(f"{Path(args.out) / tag}: {len(manifest['wheels'])} wheels, {size / 2**20:.1f} MB "
              f"(edgeship[{manifest['extras']}] for Python {manifest['python']} {manifest['arch']}, glibc {manifest['glibc']}+)")
    return 0


def _bootstrap(args) -> int:
    from edgeship.fleet.bootstrap.board import Bootstrapper

    fleet, devices = _load(args)
    strap = Bootstrapper(fleet, Path(args.wheelhouse), upgrade=args.upgrade, reprovision=args.reprovision)
    outcomes = []
    try:
        for device in devices:
            outcome = strap.run(device)
            outcomes.append(outcome)
            if not args.json:
                print(outcome.line(), file=sys.stdout if outcome.ok else sys.stderr, flush=True)
    finally:
        strap.close()
    if args.json:
        print(json.dumps([o.to_dict() for o in outcomes], indent=2, sort_keys=True))
    return 0 if all(o.ok for o in outcomes) else 1


def add_parsers(fleet_sub) -> None:
    p = fleet_sub.add_parser("wheelhouse", help="download the agent's wheels for the boards' platforms (boards stay offline)",
                             description="Build edgeship[agent] and download its dependencies as wheels for each "
                                         "board's Python version and architecture (asked over SSH, or --board).")
    p.add_argument("fleet", nargs="?", help="Fleet manifest (YAML): its ssh/mqtt boards are probed for their platform")
    p.add_argument("--select", action="append", metavar="SELECTOR", help="label selector (site=lab, ring in (a,b))")
    p.add_argument("--board", action="append", metavar="PY:ARCH[:GLIBC]",
                   help="a platform without asking a board, e.g. 3.11:aarch64:2.31; repeatable")
    p.add_argument("--out", default="wheelhouse", help="wheelhouse folder (default ./wheelhouse)")
    p.add_argument("--source", help="edgeship source checkout to build the wheel from (default: this one)")
    p.add_argument("--extras", default=None,
                   help="extras of edgeship to install on the boards (default: agent plus the runtimes the fleet's "
                        "board targets need, e.g. agent,openvino-runtime for intel-core-ultra-*; agent with --board)")
    p.set_defaults(func=_wheelhouse)

    p = fleet_sub.add_parser("bootstrap", help="install the agent on boards over SSH from the wheelhouse",
                             description="Check each board, push the wheels for its platform, install the agent in its "
                                         "own virtualenv, provision agent.yaml and (MQTT devices) the systemd unit.")
    p.add_argument("fleet", help="Fleet manifest (YAML)")
    p.add_argument("--select", action="append", metavar="SELECTOR", help="label selector (site=lab, ring in (a,b))")
    p.add_argument("--wheelhouse", default="wheelhouse", help="wheelhouse folder (default ./wheelhouse)")
    p.add_argument("--upgrade", action="store_true",
                   help="move a board's agent to the wheelhouse's (self-tested first; the previous one is kept)")
    p.add_argument("--reprovision", action="store_true", help="replace an existing agent.yaml with the fleet's")
    p.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    p.set_defaults(func=_bootstrap)
