"""`edgeship ui`: the local web dashboard (fleet, rollouts, builds) with Prometheus metrics."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edgeship.errors import UsageError

DEFAULT_PORT = 8765
NEEDS = ("starlette", "jinja2", "uvicorn", "prometheus_client")  # the `ui` extra


def register(sub) -> None:
    p = sub.add_parser("ui", help="serve a read-only web dashboard of the fleet, rollouts and builds (and /metrics)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs a token: EDGESHIP_UI_TOKEN or a printed one)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--fleet", action="append", type=Path, default=[], metavar="FLEET.yaml",
                   help="a Fleet manifest to show (repeatable; its state: block says where the journal is); "
                        "fleets of the journal's rollouts show anyway")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between reads of the rollout journal (default 2)")
    p.add_argument("--status-interval", type=float, default=10.0,
                   help="seconds between asking the devices for their status (default 10; over SSH each ask is a connection)")
    p.set_defaults(func=cmd_ui)


def cmd_ui(args) -> int:
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"edgeship ui needs its extra: pip install 'edgeship[ui]' (missing: {', '.join(missing)})")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: not a port number")
    if args.interval <= 0 or args.status_interval < 0:
        raise UsageError("--interval must be > 0 seconds and --status-interval >= 0")
    for path in args.fleet:
        if not path.is_file():
            raise UsageError(f"--fleet {path}: no such file")
    from edgeship.ui.server import serve

    return serve(args.host, args.port, args.fleet, args.interval, args.status_interval)
