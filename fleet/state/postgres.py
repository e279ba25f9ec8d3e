"""The shared journal store: PostgreSQL through psycopg 3, schema versioned by migrations.

Why: several managers (replicas of `reconcile`, operators' `apply`) drive one fleet and must see one
journal. Migrations are SQL files shipped in the package (fleet/state/migrations/NNNN_name.sql),
applied in order at connect under an advisory lock (N managers starting at once apply each exactly
once) and recorded in `schema_migrations`; a database migrated by a newer edgeship is refused rather
than written with an older idea of its tables. Backups are the database's (pg_dump, PITR): `backup()`
is a no-op here. Rollouts are leased (fleet/state/lease.py), not flocked.
"""

from __future__ import annotations

import contextlib
import re
import threading
from importlib import resources

from edgeship.fleet.state import URL_ENV, StateStoreError, redact
from edgeship.fleet.state.lease import DbLease

MIGRATION_LOCK = 0x6564_6765  # pg_advisory_xact_lock key: "edge"
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration shipped with this edgeship, in order."""
    found = []
    for entry in resources.files("edgeship.fleet.state").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _sql(statement: str) -> str:
    """The journal writes SQLite's `?` placeholders; psycopg wants `%s`."""
    return statement.replace("?", "%s")


class PostgresStore:
    kind = "postgres"

    def __init__(self, url: str, connect_timeout: float = 10, *, password: str | None = None, origin: str = ""):
        """`password` (from a manifest's password_file) is handed to libpq, never put in the URL; `origin`
        (the manifest's file:line, or the variable) leads every error line."""
        self.url, self.where = url, redact(url)
        self._prefix = f"{origin}: " if origin and origin != URL_ENV else ""
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            raise StateStoreError(f"{origin or URL_ENV} names PostgreSQL ({redact(url)}) but psycopg is not installed: "
                                  "pip install 'edgeship[postgres]'") from None
        self._psycopg = psycopg
        self.path = None
        self._lock = threading.Lock()
        secret = {"password": password} if password is not None else {}
        try:
            self._db = psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=int(connect_timeout),
                                       application_name="edgeship", **secret)
        except psycopg.Error as err:
            why = _first_line(err)
            if "password authentication failed" in why or "no password supplied" in why:
                why += " (the password comes from state.password_file, the URL in EDGESHIP_DATABASE_URL or url_env, " \
                       "PGPASSWORD or ~/.pgpass)"
            raise StateStoreError(f"{self._prefix}state database {self.where}: cannot connect: {why}") from None
        try:
            self.schema_version = self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> int:
        known = migrations()
        with self._guard("migrating"), self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            self._db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                             " applied TIMESTAMPTZ NOT NULL DEFAULT now())")
            done = {r["version"] for r in self._db.execute("SELECT version FROM schema_migrations").fetchall()}
            newest = max((v for v, _, _ in known), default=0)
            if done and max(done) > newest:
                raise StateStoreError(f"{self._prefix}state database {self.where} has schema version {max(done)}, newer than this "
                                      f"edgeship knows ({newest}): upgrade edgeship on this manager")
            for version, name, sql in known:
                if version not in done:
                    self._db.execute(sql)
                    self._db.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
        return newest

    @contextlib.contextmanager
    def _guard(self, doing: str):
        """psycopg errors become one line naming the database (never a traceback)."""
        try:
            yield
        except self._psycopg.Error as err:
            raise StateStoreError(f"{self._prefix}state database {self.where}: {doing}: {_first_line(err)}") from None

    # --- statements -------------------------------------------------------------------------

    def all(self, sql: str, args: tuple = ()) -> list[dict]:
        with self._lock, self._guard("query"):
            cur = self._db.execute(_sql(sql), args)
            return cur.fetchall() if cur.description else []

    def run(self, sql: str, args: tuple = ()) -> None:
        with self._lock, self._guard("write"):
            self._db.execute(_sql(sql), args)

    @contextlib.contextmanager
    def transaction(self):
        with self._lock, self._guard("transaction"), self._db.transaction():
            def execute(sql, args=()):
                cur = self._db.execute(_sql(sql), args)
                return cur.fetchall() if cur.description else []
            yield execute

    def backup(self, keep: int = 0) -> None:
        """PostgreSQL's own backups (pg_dump, base backups with WAL archiving) cover a shared journal."""
        return None

    def lease(self, name: str) -> DbLease:
        return DbLease(self, name)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
