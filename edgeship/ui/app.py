"""The dashboard's web app (Starlette + Jinja2): pages, the live-update stream, /metrics.

Read-only: every route is a GET. Pages render from the shared snapshot; a page asked with
`X-Partial: 1` returns only its content, which the browser swaps in when the live-update stream
(Server-Sent Events at /events) says the snapshot changed. Assets are files in the package
(no CDN, no build step); the Content-Security-Policy allows nothing else.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edgeship import __version__, artifact
from edgeship.ui.auth import TokenMiddleware
from edgeship.ui.metrics import registry_for, render
from edgeship.ui.snapshots import SnapshotStore
from edgeship.ui.views import HEALTHS

STATIC = Path(__file__).parent / "static"
PAGE_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
MAX_DEVICE_ROWS = 500  # per fleet and page: past that, filter (the counts above the table stay whole)
SSE_POLL_S = 0.5
SSE_KEEPALIVE_S = 15.0


def create_app(store: SnapshotStore, token: str | None = None, allowed_hosts: list[str] | None = None) -> Starlette:
    """The ASGI app. `allowed_hosts` guards against DNS rebinding (a loopback server answers only
    to loopback names); `token`, when set, is required on every request."""
    templates = _templates()
    registry = registry_for(store)

    # Pages are plain functions: Starlette runs them in its thread pool, so a first read of the
    # snapshot or a large render never holds up the event loop (and the live-update streams).
    def page(request: Request, name: str, **context) -> HTMLResponse:
        snap = store.current()
        partial = request.headers.get("x-partial") == "1"
        html = templates.get_template(name).render(
            snap=snap, version=store.version, partial=partial, path=request.url.path,
            interval=store.interval, edgeship_version=__version__, **context)
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store",
                                           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    def fleet(request: Request):
        health = request.query_params.get("health", "")
        return page(request, "fleet.html", title="Fleet", health=health if health in HEALTHS else "",
                    q=request.query_params.get("q", "")[:200], max_rows=MAX_DEVICE_ROWS, healths=HEALTHS)

    def rollouts(request: Request):
        return page(request, "rollouts.html", title="Rollouts")

    def rollout(request: Request):
        name = request.path_params["name"]
        view = store.current().rollout(name)
        if view is None:
            raise HTTPException(404, f"no rollout named {name!r} in the journal")
        return page(request, "rollout.html", title=f"Rollout {name}", rollout=view)

    def builds(request: Request):
        return page(request, "builds.html", title="Builds")

    def report(request: Request):
        path = store.source.report_path(request.path_params["digest"])
        if path is None:
            raise HTTPException(404, "no such artifact report in the store")
        return FileResponse(path, media_type="text/html", headers={"Content-Security-Policy": REPORT_CSP,
                                                                   "X-Content-Type-Options": "nosniff"})

    async def events(request: Request):
        return StreamingResponse(_event_stream(store, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def metrics(request: Request):
        body = await asyncio.to_thread(render, registry)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def not_found(request: Request, exc: HTTPException):
        html = templates.get_template("error.html").render(
            snap=store.current(), version=store.version, partial=False, path=request.url.path, interval=store.interval,
            edgeship_version=__version__, title=f"Error {exc.status_code}", status=exc.status_code, detail=exc.detail)
        return HTMLResponse(html, status_code=exc.status_code, headers={"Content-Security-Policy": PAGE_CSP})

    routes = [
        Route("/", fleet), Route("/fleet", lambda r: RedirectResponse("/", 308)),
        Route("/rollouts", rollouts), Route("/rollouts/{name}", rollout),
        Route("/builds", builds), Route("/artifacts/{digest}/report.html", report),
        Route("/events", events), Route("/metrics", metrics),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or ["*"]),
                  Middleware(TokenMiddleware, token=token)]
    return Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: not_found})


async def _event_stream(store: SnapshotStore, request: Request):
    """`event: changed` with the snapshot version: now (the page compares it with the version it
    was rendered at), then on each change; a comment line keeps proxies from closing it."""
    seen = store.version
    yield f"retry: 2000\nevent: changed\ndata: {json.dumps({'version': seen})}\n\n"
    quiet = 0.0
    while not store.stopped and not await request.is_disconnected():
        await asyncio.sleep(SSE_POLL_S)
        if store.version != seen:
            seen = store.version
            quiet = 0.0
            yield f"event: changed\ndata: {json.dumps({'version': seen})}\n\n"
        else:
            quiet += SSE_POLL_S
            if quiet >= SSE_KEEPALIVE_S:
                quiet = 0.0
                yield ": keep-alive\n\n"


# --- templates ---------------------------------------------------------------------------------

def _templates() -> Environment:
    env = Environment(loader=PackageLoader("edgeship.ui", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(short=_short, ago=_ago, when=_when, bytes=_bytes_text, pct=_pct, num=_num, unit=_unit, figure=_figure)
    return env


def _short(digest: str | None, n: int = 12) -> str:
    return artifact.short(digest, n) if digest else "-"


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    delta = max(0.0, time.time() - float(ts))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if delta >= size:
            return f"{int(delta // size)} {unit} ago"
    return "just now" if delta < 2 else f"{int(delta)} s ago"


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "-"


def _bytes_text(n: int | None) -> str:
    """`60.0 KiB`: binary units, as the CLI prints transfer sizes."""
    value, unit = float(n or 0), "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.0f}%"


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _unit(value, unit: str) -> str:
    """`0.0123 ms`, or `-` when there is no figure."""
    return "-" if value is None else f"{_num(value)}{unit}"


def _figure(value) -> str:
    """A gate figure as text: numbers short, device->reason maps as `dev (reason)`."""
    if isinstance(value, dict):
        return ", ".join(f"{k} ({v})" for k, v in value.items()) or "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _num(value, 4)
