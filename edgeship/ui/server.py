"""Run the dashboard: pick the bind address, settle the token, serve with uvicorn.

Loopback by default. Bound anywhere else it refuses to run without a token: EDGESHIP_UI_TOKEN's, or
a new random one printed once on the terminal (in the sign-in URL). uvicorn's access log stays off,
since a sign-in request carries the token in its query string.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from edgeship.ui.auth import is_loopback, resolve_token
from edgeship.ui.source import StateSource
from edgeship.ui.snapshots import SnapshotStore

# Host headers a loopback server answers to (DNS rebinding: a page of another site whose name
# resolves to 127.0.0.1 sends its own name, and is refused).
LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1", "[::1]"]


def serve(host: str, port: int, fleets: list[Path], interval: float, status_interval: float, out=sys.stdout) -> int:
    import uvicorn

    from edgeship.ui.app import create_app

    token, generated = resolve_token(host)
    store = SnapshotStore(StateSource(fleets, status_interval=status_interval), interval=interval)
    app = create_app(store, token=token, allowed_hosts=[*LOOPBACK_NAMES, host] if is_loopback(host) else ["*"])
    sock = _listen(host, port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, access_log=False, log_level="warning", timeout_graceful_shutdown=2, lifespan="off")
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    store.start()
    try:
        if token is not None and generated:
            print(f"edgeship ui: serving on {url} (read-only); sign in with {url}?token={token}", file=out, flush=True)
            print("edgeship ui: the token is new for this run; set EDGESHIP_UI_TOKEN to keep one", file=out, flush=True)
        elif token is not None:
            print(f"edgeship ui: serving on {url} (read-only); sign in with the token in EDGESHIP_UI_TOKEN "
                  f"({url}?token=...)", file=out, flush=True)
        else:
            print(f"edgeship ui: serving on {url} (read-only, loopback only); metrics at {url}metrics", file=out, flush=True)
        server.run(sockets=[sock])
    finally:
        store.stop()
        sock.close()
    return 0 if server.started else 1


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the URL is printed (so port 0 prints the port it got)."""
    from edgeship.errors import UsageError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock
