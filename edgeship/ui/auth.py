"""The dashboard's access token: required when the server listens beyond loopback.

A browser signs in once with `/?token=...` (the server sets an HttpOnly cookie and redirects to a
URL without the token, so it stays out of history); scripts and Prometheus send
`Authorization: Bearer <token>`. Tokens are compared in constant time and never logged (the access
log is off: a query string would carry the token).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from edgeship.errors import UsageError

TOKEN_ENV = "EDGESHIP_UI_TOKEN"
COOKIE = "edgeship_ui_token"
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, environ: dict | None = None) -> tuple[str | None, bool]:
    """(token, generated). No token on loopback unless EDGESHIP_UI_TOKEN sets one; elsewhere the
    variable's token, or a new random one (generated=True: the caller prints it once)."""
    environ = os.environ if environ is None else environ
    given = environ.get(TOKEN_ENV, "")
    if given:
        if len(given) < MIN_TOKEN_CHARS:
            raise UsageError(f"{TOKEN_ENV} is too short: use at least {MIN_TOKEN_CHARS} random characters")
        return given, False
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(32), True


def token_matches(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


class TokenMiddleware:
    """ASGI middleware: every request carries the token (header, cookie, or a one-time `?token=`
    that is exchanged for the cookie), else 401."""

    def __init__(self, app, token: str | None):
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send):
        if self.token is None or scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no credential
            cookie = SimpleCookie()
        from_cookie = cookie[COOKIE].value if COOKIE in cookie else None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        from_query = next((v for k, v in query if k == "token"), None)
        if token_matches(bearer, self.token) or token_matches(from_cookie, self.token):
            return await self.app(scope, receive, send)
        if token_matches(from_query, self.token):
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = scope.get("path", "/") + (f"?{rest}" if rest else "")
            return await _redirect_with_cookie(send, location, self.token, secure=scope.get("scheme") == "https")
        return await _unauthorized(send)


async def _redirect_with_cookie(send, location: str, token: str, secure: bool) -> None:
    cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode("latin-1")),
                            (b"cache-control", b"no-store"), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


async def _unauthorized(send) -> None:
    body = (b"401 Unauthorized: this dashboard needs its access token. Open the URL `edgeship ui` printed "
            b"(with ?token=...), or send Authorization: Bearer <token>.\n")
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"www-authenticate", b"Bearer"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
