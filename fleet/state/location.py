"""Which state store a command uses for a fleet: the one resolver every command and the API call.

Order: EDGESHIP_DATABASE_URL when set (an operator's or a CI job's explicit choice for this process
wins over the file, as environment overrides usually do; a logged warning says so when it shadows a
manifest's block), else the Fleet manifest's `state:` block, else the SQLite file in the state dir.
The password of a manifest's database is never in the manifest: `password_file` is read when the
connection is made, `url_env` names a variable, or libpq finds it (PGPASSWORD, ~/.pgpass).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from edgeship.fleet.state import URL_ENV, StateStoreError, database_url, redact

_noted: set[str] = set()  # manifests whose state: block EDGESHIP_DATABASE_URL shadowed (noted once)


@dataclass(frozen=True)
class StateLocation:
    """A state store: PostgreSQL `url`, a SQLite file, or (neither) the default SQLite file."""

    url: str | None = None  # may hold a password only when it came from the environment
    sqlite: Path | None = None
    password_file: Path | None = None
    origin: str = ""  # where it was chosen, for messages: "fleet.yaml:7", "EDGESHIP_DATABASE_URL" or ""

    @property
    def key(self) -> tuple:
        return (self.url, str(self.sqlite.resolve()) if self.sqlite else None)

    def describe(self) -> str:
        if self.url:
            return f"PostgreSQL {redact(self.url)}"
        from edgeship.fleet.state.sqlite import default_path

        return f"SQLite {self.sqlite or default_path()}"

    def exists(self) -> bool:
        """False only for a SQLite file not created yet (read-only commands then create nothing)."""
        if self.url:
            return True
        from edgeship.fleet.state.sqlite import default_path

        return (self.sqlite or default_path()).exists()

    def open(self):
        """The Store this location names (fleet/state/postgres.py or sqlite.py)."""
        if self.url:
            from edgeship.fleet.state.postgres import PostgresStore

            return PostgresStore(self.url, password=self._password(), origin=self.origin)
        from edgeship.fleet.state.sqlite import SqliteStore

        return SqliteStore(self.sqlite)

    def _password(self) -> str | None:
        if self.password_file is None:
            return None
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise StateStoreError(f"{self.origin}: state.password_file {self.password_file}: "
                                  f"{err.strerror or err}") from None


def state_location(fleet: str | os.PathLike | None = None) -> StateLocation:
    """Where the state of `fleet` (a Fleet manifest path; None: no fleet known) is kept."""
    from_env = os.environ.get(URL_ENV, "").strip()
    if from_env:
        location = StateLocation(url=database_url(from_env), origin=URL_ENV)
        if fleet is not None and str(fleet) not in _noted:
            block = _manifest_location(Path(fleet))
            if block is not None and block.key != location.key:
                _noted.add(str(fleet))
                logging.getLogger("edgeship").warning("edgeship: note: %s overrides the state: block of %s",
                                                      URL_ENV, block.origin)
        return location
    if fleet is None:
        return StateLocation()
    return _manifest_location(Path(fleet)) or StateLocation()


def shared_location(fleets: Iterable[str | os.PathLike], what: str = "these rollouts") -> StateLocation:
    """The one location of several fleets (a Rollout file or a reconcile folder may name more than one);
    different ones are refused: one command drives one journal."""
    found: dict[tuple, tuple[StateLocation, str]] = {}
    for fleet in fleets:
        location = state_location(fleet)
        found.setdefault(location.key, (location, str(fleet)))
    if len(found) > 1:
        listed = "; ".join(f"{fleet}: {loc.describe()}" for loc, fleet in found.values())
        raise StateStoreError(f"{what} keep their state in different stores ({listed}): run them separately")
    return next(iter(found.values()))[0] if found else state_location(None)


def _manifest_location(path: Path) -> StateLocation | None:
    """The Fleet manifest's `state:` block (schema- and secret-checked by the manifest loader), or None."""
    from edgeship.pipelines.manifest import expand_env, load_documents, resolve_path

    doc = load_documents(path, kinds={"Fleet"})[0]
    state = doc.data.get("state")
    if not isinstance(state, dict):
        return None
    field = next(k for k in ("url", "url_env", "sqlite") if k in state)
    line, _ = doc.where(("state", field))
    origin = f"{doc.display or doc.source}:{line}"
    if field == "sqlite":
        return StateLocation(sqlite=resolve_path(doc, state["sqlite"]), origin=origin)
    if field == "url_env":
        url = os.environ.get(state["url_env"], "").strip()
        if not url:
            raise StateStoreError(f"{origin}: state.url_env: environment variable {state['url_env']} is not set "
                                  "(it should hold postgresql://USER:PASSWORD@HOST:PORT/DATABASE)")
        if database_url(url, named=state["url_env"]) is None:
            return StateLocation(origin=origin)
    else:
        url = state["url"]
    password_file = None
    if state.get("password_file"):
        password_file = resolve_path(doc, expand_env(state["password_file"]))
    return StateLocation(url=url, password_file=password_file, origin=origin)
