"""Where the rollout journal lives: SQLite on this machine (the default) or a shared PostgreSQL.

Why a seam: one manager on a laptop wants a file and no server; several managers driving one fleet
need one database they all see (docs/scale.md). The journal (fleet/rollout/journal.py) writes plain
SQL through a Store; the store says which database, how transactions and leases work there.

`EDGESHIP_DATABASE_URL=postgresql://user:pass@host:port/db` selects PostgreSQL (or a Fleet
manifest's `state: {url: ...}`, passed in by the caller); anything else keeps SQLite.
"""

from __future__ import annotations

import os

from edgeship.errors import RolloutError

URL_ENV = "EDGESHIP_DATABASE_URL"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class StateStoreError(RolloutError):
    """The state database cannot be reached or used (one line: which database, what went wrong)."""


def database_url(explicit: str | None = None) -> str | None:
    """The PostgreSQL URL in force (argument, then EDGESHIP_DATABASE_URL), or None for SQLite."""
    url = (explicit or os.environ.get(URL_ENV, "")).strip()
    if not url or url.startswith("sqlite:"):
        return None
    if not url.startswith(POSTGRES_SCHEMES):
        raise StateStoreError(f"{URL_ENV}={redact(url)}: only postgresql://... (or sqlite:, the default) is supported")
    return url


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def open_store(path=None, url: str | None = None):
    """A Store: PostgreSQL when a URL is in force and no SQLite path was asked for, else SQLite."""
    pg = database_url(url) if path is None or url else None
    if pg:
        from edgeship.fleet.state.postgres import PostgresStore

        return PostgresStore(pg)
    from edgeship.fleet.state.sqlite import SqliteStore

    return SqliteStore(path)
