"""Where the rollout journal lives: SQLite on this machine (the default) or a shared PostgreSQL.

Why a seam: one manager on a laptop wants a file and no server; several managers driving one fleet
need one database they all see (docs/scale.md). The journal (fleet/rollout/journal.py) writes plain
SQL through a Store; the store says which database, how transactions and leases work there.

`EDGESHIP_DATABASE_URL=postgresql://user:pass@host:port/db` selects PostgreSQL, else a Fleet manifest's
`state:` block (fleet/state/location.py resolves which, for every command); anything else keeps SQLite.
"""

from __future__ import annotations

import os
import re

from edgeship.errors import RolloutError

URL_ENV = "EDGESHIP_DATABASE_URL"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class StateStoreError(RolloutError):
    """The state database cannot be reached or used (one line: which database, what went wrong)."""


def database_url(explicit: str | None = None, named: str = URL_ENV) -> str | None:
    """The PostgreSQL URL in force (argument, then EDGESHIP_DATABASE_URL), or None for SQLite."""
    url = (explicit or os.environ.get(URL_ENV, "")).strip()
    if not url or url.startswith("sqlite:"):
        return None
    if not url.startswith(POSTGRES_SCHEMES):
        raise StateStoreError(f"{named}={redact(url)}: only postgresql://... (or sqlite:, the default) is supported")
    return url


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def _credentials(url: str) -> tuple[str, str, str]:
    """(scheme, user[:password] or "", the rest) of a URL: credentials end at the netloc's last '@'."""
    scheme, _, rest = url.partition("://")
    netloc_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    creds, at, host = rest[:netloc_end].rpartition("@")
    return scheme, creds if at else "", (host if at else rest[:netloc_end]) + rest[netloc_end:]


def url_has_password(url: str) -> bool:
    """Does this URL carry a password (user:password@ or ?password=)?"""
    return ":" in _credentials(url)[1] or bool(_QUERY_PASSWORD.search(url))


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    if "://" not in url:
        return url
    scheme, creds, rest = _credentials(url)
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return _QUERY_PASSWORD.sub(r"\1***", f"{scheme}://{creds}@{rest}" if creds else f"{scheme}://{rest}")


def open_store(path=None, url: str | None = None):
    """A Store: PostgreSQL when a URL is in force and no SQLite path was asked for, else SQLite."""
    pg = database_url(url) if path is None or url else None
    if pg:
        from edgeship.fleet.state.postgres import PostgresStore

        return PostgresStore(pg)
    from edgeship.fleet.state.sqlite import SqliteStore

    return SqliteStore(path)
