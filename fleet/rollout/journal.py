"""The rollout journal: every step written to the state store before and after it happens.

Why: a manager killed at any instant (kill -9, power loss of the laptop running it) must resume
with a plain `edgeship apply` and neither leave a device half-done nor push anything twice. Each
push/activate/rollback is a `begin` row committed before the transport is called and an `end` row
committed after it returns; a `begin` without an `end` tells the next run exactly which step was
interrupted. Gate verdicts and the last release applied to each device (ownership and drift) live
here too.

Where it lives is the store's business (fleet/state/): by default one SQLite file,
`state_dir()/rollouts.db`, refused when damaged and backed up before each apply; with
EDGESHIP_DATABASE_URL=postgresql://... a PostgreSQL database shared by several managers, each rollout
leased to one of them at a time. The SQL below is written once for both.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from edgeship.fleet.state import open_store
from edgeship.fleet.state.sqlite import (  # noqa: F401  (the journal's public names, kept importable here)
    BACKUPS_KEPT, FORMAT, JournalCorrupt, backup_dir, default_path, latest_backup)

STATES = ("running", "paused", "aborted", "failed", "done", "rolled-back")


@dataclass(frozen=True)
class RolloutRow:
    name: str
    manifest: str
    fleet: str
    spec_digest: str
    artifact_digest: str
    bundle: str
    state: str
    reason: str
    run_id: int
    updated: float


@dataclass(frozen=True)
class StepEnd:
    device: str
    wave: int
    action: str
    digest: str
    ok: bool
    bytes: int
    detail: dict
    ts: float


class Journal:
    """Thread-safe handle on the journal. `state` (the fleet's resolved location) or `path` (a SQLite
    file); without either, EDGESHIP_DATABASE_URL (or `url`) selects PostgreSQL, else the default file."""

    def __init__(self, path: Path | None = None, url: str | None = None, *, state=None):
        """`state`: a StateLocation (fleet/state/location.py), as every command resolves it for its fleet."""
        self._store = state.open() if state is not None else open_store(path, url)
        self.path = self._store.path  # None for PostgreSQL
        self.where = self._store.where  # the file, or the database URL without its password
        self.kind = self._store.kind

    def backup(self, keep: int = BACKUPS_KEPT) -> Path | None:
        """SQLite: a consistent copy in journal-backups/ keeping the newest `keep` (taken before each
        apply). PostgreSQL: None (the database's own backups cover it)."""
        return self._store.backup(keep)

    def lease(self, name: str):
        """A context manager that makes this manager the only one driving rollout `name`."""
        return self._store.lease(name)

    def close(self) -> None:
        self._store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _exec(self, sql: str, args: tuple = ()) -> None:
        self._store.run(sql, args)

    def _all(self, sql: str, args: tuple = ()) -> list[dict]:
        return self._store.all(sql, args)

    # --- rollouts and runs ------------------------------------------------------------------

    def rollout(self, name: str) -> RolloutRow | None:
        rows = self._all("SELECT * FROM rollouts WHERE name = ?", (name,))
        return RolloutRow(**dict(rows[0])) if rows else None

    def rollouts(self) -> list[RolloutRow]:
        return [RolloutRow(**dict(r)) for r in self._all("SELECT * FROM rollouts ORDER BY name")]

    def new_run(self, name: str, manifest: str, fleet: str, spec_digest: str, artifact_digest: str, bundle: str) -> int:
        now = time.time()
        with self._store.transaction() as execute:
            run_id = execute(
                "INSERT INTO runs (rollout, spec_digest, artifact_digest, state, reason, started) VALUES (?,?,?,?,?,?)"
                " RETURNING id", (name, spec_digest, artifact_digest, "running", "", now))[0]["id"]
            execute(
                "INSERT INTO rollouts (name, manifest, fleet, spec_digest, artifact_digest, bundle, state, reason, run_id, updated)"
                " VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET manifest=excluded.manifest,"
                " fleet=excluded.fleet, spec_digest=excluded.spec_digest, artifact_digest=excluded.artifact_digest,"
                " bundle=excluded.bundle, state=excluded.state, reason=excluded.reason, run_id=excluded.run_id,"
                " updated=excluded.updated",
                (name, manifest, fleet, spec_digest, artifact_digest, bundle, "running", "", run_id, now))
        return int(run_id)

    def set_state(self, name: str, state: str, reason: str = "") -> None:
        assert state in STATES, state
        now = time.time()
        finished = now if state in ("done", "failed", "aborted", "rolled-back") else None
        with self._store.transaction() as execute:
            execute("UPDATE rollouts SET state = ?, reason = ?, updated = ? WHERE name = ?", (state, reason, now, name))
            execute("UPDATE runs SET state = ?, reason = ?, finished = ? WHERE id = (SELECT run_id FROM rollouts WHERE name = ?)",
                    (state, reason, finished, name))

    def state(self, name: str) -> str | None:
        rows = self._all("SELECT state FROM rollouts WHERE name = ?", (name,))
        return rows[0]["state"] if rows else None

    def runs(self, name: str) -> list[dict]:
        return [dict(r) for r in self._all("SELECT * FROM runs WHERE rollout = ? ORDER BY id", (name,))]

    def run_number(self, name: str, run_id: int | None) -> int | None:
        """The run's number within its rollout (1 = its first run); run ids count across all rollouts."""
        if run_id is None:
            return None
        rows = self._all("SELECT COUNT(*) AS n FROM runs WHERE rollout = ? AND id <= ?", (name, run_id))
        return int(rows[0]["n"]) or None

    # --- steps ------------------------------------------------------------------------------

    def begin(self, run_id: int, rollout: str, device: str, wave: int, action: str, digest: str) -> None:
        self._exec("INSERT INTO steps (run_id, rollout, device, wave, action, digest, phase, ts) VALUES (?,?,?,?,?,?,'begin',?)",
                   (run_id, rollout, device, wave, action, digest, time.time()))

    def end(self, run_id: int, rollout: str, device: str, wave: int, action: str, digest: str,
            ok: bool, nbytes: int = 0, detail: dict | None = None) -> None:
        self._exec(
            "INSERT INTO steps (run_id, rollout, device, wave, action, digest, phase, ok, bytes, detail, ts)"
            " VALUES (?,?,?,?,?,?,'end',?,?,?,?)",
            (run_id, rollout, device, wave, action, digest, int(ok), int(nbytes), json.dumps(detail or {}, default=str), time.time()))

    def last_end(self, run_id: int, device: str, action: str, digest: str) -> StepEnd | None:
        rows = self._all(
            "SELECT * FROM steps WHERE run_id = ? AND device = ? AND action = ? AND digest = ? AND phase = 'end'"
            " ORDER BY id DESC LIMIT 1", (run_id, device, action, digest))
        return _step_end(rows[0]) if rows else None

    def interrupted(self, run_id: int, device: str, action: str, digest: str) -> bool:
        """True when the last record of this step is a `begin`: the manager died while doing it."""
        rows = self._all(
            "SELECT phase FROM steps WHERE run_id = ? AND device = ? AND action = ? AND digest = ? ORDER BY id DESC LIMIT 1",
            (run_id, device, action, digest))
        return bool(rows) and rows[0]["phase"] == "begin"

    def pushed_and_untried(self, run_id: int, device: str, digest: str) -> bool:
        """True when this run's last record for the device's push/activate of `digest` is a finished,
        successful push: the bundle is on the device and nothing has consumed it since."""
        rows = self._all(
            "SELECT action, phase, ok FROM steps WHERE run_id = ? AND device = ? AND digest = ?"
            " AND action IN ('push', 'activate') ORDER BY id DESC LIMIT 1", (run_id, device, digest))
        return bool(rows) and rows[0]["action"] == "push" and rows[0]["phase"] == "end" and bool(rows[0]["ok"])

    def wave_results(self, run_id: int, wave: int, action: str = "activate") -> dict[str, StepEnd]:
        """The latest `end` per device for one action in one wave of a run (what the gate counts)."""
        rows = self._all(
            "SELECT * FROM steps WHERE run_id = ? AND wave = ? AND action = ? AND phase = 'end' ORDER BY id",
            (run_id, wave, action))
        return {r["device"]: _step_end(r) for r in rows}

    def steps(self, rollout: str, run_id: int | None = None) -> list[dict]:
        if run_id is None:
            rows = self._all("SELECT * FROM steps WHERE rollout = ? ORDER BY id", (rollout,))
        else:
            rows = self._all("SELECT * FROM steps WHERE rollout = ? AND run_id = ? ORDER BY id", (rollout, run_id))
        return [dict(r) for r in rows]

    def push_counts(self, rollout: str | None = None) -> dict[tuple[str, str], int]:
        """(device, digest) -> number of completed pushes that sent bytes. Above 1 is a double push."""
        sql = "SELECT device, digest, COUNT(*) AS n FROM steps WHERE action = 'push' AND phase = 'end' AND ok = 1 AND bytes > 0"
        args: tuple = ()
        if rollout is not None:
            sql += " AND rollout = ?"
            args = (rollout,)
        rows = self._all(sql + " GROUP BY device, digest", args)
        return {(r["device"], r["digest"]): r["n"] for r in rows}

    def bytes_pushed(self, run_id: int) -> int:
        rows = self._all("SELECT COALESCE(SUM(bytes), 0) AS b FROM steps WHERE run_id = ? AND action = 'push' AND phase = 'end'", (run_id,))
        return int(rows[0]["b"])

    # --- gates ------------------------------------------------------------------------------

    def record_gate(self, run_id: int, wave: int, ok: bool, reason: str, figures: dict, name: str = "") -> None:
        self._exec("INSERT INTO gates (run_id, wave, name, ok, reason, figures, ts) VALUES (?,?,?,?,?,?,?)"
                   " ON CONFLICT(run_id, wave) DO UPDATE SET name=excluded.name, ok=excluded.ok, reason=excluded.reason,"
                   " figures=excluded.figures, ts=excluded.ts",
                   (run_id, wave, name or f"wave {wave}", int(ok), reason, json.dumps(figures, default=str), time.time()))

    def gates(self, run_id: int) -> dict[int, dict]:
        rows = self._all("SELECT * FROM gates WHERE run_id = ? ORDER BY wave", (run_id,))
        return {r["wave"]: {"name": r["name"], "ok": bool(r["ok"]), "reason": r["reason"],
                            "figures": json.loads(r["figures"] or "{}"), "ts": r["ts"]} for r in rows}

    # --- the release each device was last given (drift detection) -------------------------

    def set_applied(self, fleet: str, device: str, digest: str | None, previous: str | None, rollout: str) -> None:
        self._exec(
            "INSERT INTO applied (fleet, device, digest, previous, rollout, ts) VALUES (?,?,?,?,?,?)"
            " ON CONFLICT(fleet, device) DO UPDATE SET digest=excluded.digest, previous=excluded.previous,"
            " rollout=excluded.rollout, ts=excluded.ts",
            (fleet, device, digest, previous, rollout, time.time()))

    def applied(self, fleet: str) -> dict[str, dict]:
        rows = self._all("SELECT * FROM applied WHERE fleet = ?", (fleet,))
        return {r["device"]: dict(r) for r in rows}


def _step_end(row: dict) -> StepEnd:
    return StepEnd(row["device"], row["wave"], row["action"], row["digest"], bool(row["ok"]), int(row["bytes"] or 0),
                   json.loads(row["detail"] or "{}"), row["ts"])


def journal_for(*fleets) -> Journal:
    """The journal where these Fleet manifests keep their state (EDGESHIP_DATABASE_URL, else their
    `state:` block, else the default file: fleet/state/location.py); no fleet given: the environment's
    or the default. Every command and the API open the journal through this."""
    from edgeship.fleet.state.location import shared_location

    return Journal(state=shared_location([f for f in fleets if f is not None]))
