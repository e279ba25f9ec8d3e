"""`edgeship agent ...`: the device side. Runs on the device (Jetson, Kria, Pi, or this machine for
local fleets); the SSH transport calls `python3 -m edgeship agent activate ... --json` remotely.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgeship.errors import UsageError


def _agent(args):
    from edgeship.fleet.agent import Agent
    from edgeship.fleet.agent_config import config_for_root

    root = Path(args.root)
    config = config_for_root(root, Path(args.config) if args.config else None)
    return Agent(root, config, device_id=args.device_id or "")


def _print_result(result, as_json: bool) -> int:
    if as_json:
        print(json.dumps(result.to_dict(), sort_keys=True))
        return 0 if result.ok else 1
    if result.ok:
        figs = result.figures or {}
        extra = f" (smoke p95 {figs['p95_ms']} ms, limit {figs.get('limit_ms')} ms)" if "p95_ms" in figs else ""
        print(f"{result.device_id}: {result.message} {result.digest}{extra}")
        return 0
    figs = f" {json.dumps(result.figures, sort_keys=True)}" if result.figures else ""
    print(f"edgeship: error: {result.device_id}: {result.message} [{result.reason}]{figs}", file=sys.stderr)
    return 1


def _activate(args) -> int:
    return _print_result(_agent(args).activate(args.bundle), args.json)


def _rollback(args) -> int:
    return _print_result(_agent(args).rollback(), args.json)


def _trust(args) -> int:
    """Take a trust chain: FILE, or the one pushed into incoming/ (SSH transport)."""
    agent = _agent(args)
    if args.file:
        try:
            data = Path(args.file).read_bytes()
        except OSError as err:
            raise UsageError(f"{args.file}: {err.strerror}") from None
        return _print_result(agent.accept_trust(data), args.json)
    return _print_result(agent.accept_pending_trust(), args.json)


def _status(args) -> int:
    from edgeship.fleet.device_info import device_info

    status = {**_agent(args).status(), "device": device_info(Path(args.root))}
    print(json.dumps(status, indent=None if args.compact else 2, sort_keys=True))
    return 0


def _gc(args) -> int:
    report = _agent(args).gc()
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        for item in report["removed"]:
            print(f"removed {item}")
        print(f"freed {report['freed_bytes']} bytes")
    return 0


def _init(args) -> int:
    """Provision a device root: layout plus agent.yaml trusting the given public keys (copied in)."""
    import shutil

    from edgeship.artifact import load_public_key
    from edgeship.fleet.agent import Agent
    from edgeship.fleet.agent_config import CONFIG_NAME, AgentConfig, SmokeConfig, write_config

    root = Path(args.root)
    if (root / CONFIG_NAME).exists() and not args.force:
        raise UsageError(f"{root / CONFIG_NAME}: already exists (use --force to replace it)")
    if args.root_threshold < 1 or args.root_threshold > max(1, len(args.trust_root or [])):
        raise UsageError(f"--root-threshold {args.root_threshold}: must be from 1 to the "
                         f"{len(args.trust_root or [])} --trust-root key(s)")
    trust_dir = root / "trust"
    trust_dir.mkdir(parents=True, exist_ok=True)

    def copy_keys(names, prefix):
        copied = []
        for i, key in enumerate(names or []):
            load_public_key(Path(key))  # refuse a file that is not an ed25519 public key
            dest = trust_dir / f"{prefix}{i:02d}-{Path(key).name}"
            shutil.copyfile(key, dest)
            copied.append(dest)
        return copied

    keys = copy_keys(args.trust, "")
    roots = copy_keys(args.trust_root, "root-")
    config = AgentConfig(trusted_keys=keys, keep_releases=args.keep, trust_root=roots, root_threshold=args.root_threshold,
                         target=args.target,
                         smoke=SmokeConfig(latency_tolerance=args.latency_tolerance, max_latency_ms=args.max_latency_ms),
                         max_bundle_mb=args.max_bundle_mb or AgentConfig.max_bundle_mb, min_free_mb=args.min_free_mb)
    path = write_config(root, config)
    agent = Agent(root, config)
    agent.ensure_layout()
    if args.trust_chain:
        result = agent.accept_trust(Path(args.trust_chain).read_bytes())
        if not result.ok:
            raise UsageError(f"{args.trust_chain}: {result.message}")
    roots_note = f", root of trust {args.root_threshold} of {len(roots)} key(s)" if roots else ""
    print(f"wrote {path} (trusting {len(keys)} key(s){roots_note}{', target ' + args.target if args.target else ''})")
    for note in config.warnings():
        print(f"edgeship: warning: {note}", file=sys.stderr)
    return 0


def _common(parser: argparse.ArgumentParser, json_flag: bool = True) -> None:
    parser.add_argument("--root", required=True, help="the device root (releases/, current, state.json, agent.yaml)")
    parser.add_argument("--config", help="agent config file (default: ROOT/agent.yaml)")
    parser.add_argument("--device-id", help="name used in results (default: the root folder's name)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print the result as one JSON line")


def register(sub) -> None:
    """All `edgeship agent` subcommands. Keep the subparser creation here, in this one function."""
    agent = sub.add_parser("agent", help="device agent: activate, rollback, status, gc (runs on the device)",
                           description="The device agent: verify, unpack, smoke-test and atomically switch releases.")
    agent_sub = agent.add_subparsers(dest="agent_command", metavar="ACTION")
    agent.set_defaults(func=lambda args: (agent.print_help(), 2)[1])

    p = agent_sub.add_parser("activate", help="verify, unpack, smoke-test and switch to a bundle")
    p.add_argument("bundle", help="bundle .tar, or sha256:<hex> of a bundle in incoming/ or an unpacked release")
    _common(p)
    p.set_defaults(func=_activate)

    p = agent_sub.add_parser("rollback", help="switch back to the previous release")
    _common(p)
    p.set_defaults(func=_rollback)

    p = agent_sub.add_parser("status", help="print the device state as JSON")
    _common(p, json_flag=False)
    p.add_argument("--compact", action="store_true", help="one line of JSON")
    p.set_defaults(func=_status)

    p = agent_sub.add_parser("gc", help="remove crash leftovers, used bundles and releases past keep_releases")
    _common(p)
    p.set_defaults(func=_gc)

    p = agent_sub.add_parser("init", help="provision a device root: agent.yaml trusting the given public keys")
    p.add_argument("--root", required=True)
    p.add_argument("--trust", action="append", metavar="PUBKEY", help="ed25519 public key (PEM) to trust; repeatable")
    p.add_argument("--keep", type=int, default=3, help="releases to keep (default 3)")
    p.add_argument("--latency-tolerance", type=float, default=1.5)
    p.add_argument("--max-latency-ms", type=float, default=None)
    p.add_argument("--max-bundle-mb", type=float, default=None)
    p.add_argument("--min-free-mb", type=float, default=None)
    p.add_argument("--trust-root", action="append", metavar="ROOT.pub",
                   help="root public key of the fleet's trust chain (repeatable); without it: legacy trust")
    p.add_argument("--root-threshold", type=int, default=1, help="root signatures a trust document needs (default 1)")
    p.add_argument("--trust-chain", metavar="TRUST.json", help="accept this trust chain now (checked against the root)")
    p.add_argument("--target", help="the target profile this device runs (artifacts for others are refused)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_init)

    p = agent_sub.add_parser("trust", help="take a trust chain (FILE, or the one pushed into incoming/)")
    p.add_argument("file", nargs="?", help="a trust chain file (default: ROOT/incoming/trust-chain.json)")
    _common(p)
    p.set_defaults(func=_trust)

    # --- MQTT area: add `agent serve` here (agent_sub.add_parser("serve", ...)) -----------------
    from edgeship.fleet.mqtt.serve_cli import add_serve_parser

    add_serve_parser(agent_sub)
    from edgeship.fleet.device_info import add_selftest_parser  # run by `fleet bootstrap` before a switch

    add_selftest_parser(agent_sub)
    # ------------------------------------------------------------------------------------------
