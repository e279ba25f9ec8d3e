"""The rollout journal: every step written to SQLite before and after it happens.

Why: a manager killed at any instant (kill -9, power loss of the laptop running it) must resume
with a plain `edgeship apply` and neither leave a device half-done nor push anything twice. Each
push/activate/rollback is a `begin` row committed before the transport is called and an `end` row
committed after it returns; a `begin` without an `end` tells the next run exactly which step was
interrupted. Gate verdicts and the last release applied to each device (for drift) live here too.

One file, `state_dir()/rollouts.db`, in WAL mode so `edgeship rollout status` (another process) can
read while an apply writes. Every write is its own committed transaction.

A journal that silently starts over would make `apply` redo a fleet it already rolled out, so a damaged
one is refused, never recreated: a new journal is built aside and renamed into place with a `meta` row,
so a file that exists without that row (truncated to 0 bytes, say) is a lost journal, not a new one;
every open runs SQLite's `quick_check`; and `backup()` (called before each apply) keeps the last
BACKUPS_KEPT copies, made with SQLite's online backup API, to restore from (docs/rollouts.md).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edgeship.errors import RolloutError
from edgeship.paths import state_dir

FORMAT = "edgeship-journal/1"
BACKUPS_KEPT = 5

STATES = ("running", "paused", "aborted", "failed", "done", "rolled-back")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    name TEXT PRIMARY KEY, manifest TEXT, fleet TEXT, spec_digest TEXT, artifact_digest TEXT,
    bundle TEXT, state TEXT, reason TEXT, run_id INTEGER, updated REAL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rollout TEXT, spec_digest TEXT, artifact_digest TEXT,
    state TEXT, reason TEXT, started REAL, finished REAL);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER, rollout TEXT, device TEXT, wave INTEGER,
    action TEXT, digest TEXT, phase TEXT, ok INTEGER, bytes INTEGER, detail TEXT, ts REAL);
CREATE INDEX IF NOT EXISTS steps_by_run_device ON steps(run_id, device, action);
CREATE INDEX IF NOT EXISTS steps_by_rollout ON steps(rollout);
CREATE TABLE IF NOT EXISTS gates (
    run_id INTEGER, wave INTEGER, name TEXT, ok INTEGER, reason TEXT, figures TEXT, ts REAL,
    PRIMARY KEY (run_id, wave));
CREATE TABLE IF NOT EXISTS applied (
    fleet TEXT, device TEXT, digest TEXT, previous TEXT, rollout TEXT, ts REAL,
    PRIMARY KEY (fleet, device));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


class JournalCorrupt(RolloutError):
    """The journal file is damaged or lost: refused (using it would restart every rollout from zero)."""

    def __init__(self, path: Path, what: str):
        backup = latest_backup(path)
        fix = (f"restore the latest backup: mv {path} {path}.damaged; rm -f {path}-wal {path}-shm; cp {backup} {path}"
               if backup else "no backup exists; move it aside to start a new, empty journal")
        super().__init__(f"rollout journal {path} {what}: refusing to use it ({fix}; see docs/rollouts.md, "
                         "'Restoring the journal')")


def backup_dir(path: Path) -> Path:
    return Path(path).parent / "journal-backups"


def latest_backup(path: Path) -> Path | None:
    backups = sorted(backup_dir(path).glob(f"{Path(path).stem}-*.db"))
    return backups[-1] if backups else None


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


def default_path() -> Path:
    return state_dir() / "rollouts.db"


def _create(path: Path) -> None:
    """A new journal, built aside and linked into place (never over an existing file), so that a file
    at `path` always has its tables and header row: one without them is damage, not a fresh start."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    db = sqlite3.connect(str(tmp), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        db.execute("INSERT INTO meta VALUES ('format', ?), ('created', ?)", (FORMAT, str(time.time())))
    finally:
        db.close()
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process created it first: use theirs
    except OSError:  # a file system without hard links: rename (the race above is then last-wins)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Journal:
    """Thread-safe handle on the journal (one connection, one lock; SQLite serialises writers anyway)."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        if not self.path.exists():
            _create(self.path)
        elif self.path.stat().st_size == 0:
            raise JournalCorrupt(self.path, "is empty (0 bytes): its history is lost")
        self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        try:
            with self._lock:
                self._db.execute("PRAGMA busy_timeout=30000")
                self._check()
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")  # WAL+NORMAL: durable across a killed process
                self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise JournalCorrupt(self.path, f"is not a readable SQLite database ({err})") from None
        except BaseException:
            self._db.close()
            raise

    def _check(self) -> None:
        """quick_check (page and b-tree structure), then the meta row every journal gets at creation."""
        problems = [r[0] for r in self._db.execute("PRAGMA quick_check(5)").fetchall()]
        if problems != ["ok"]:
            raise JournalCorrupt(self.path, f"is corrupt (SQLite quick_check: {'; '.join(problems)})")
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" in tables:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None or row[0] != FORMAT:
                raise JournalCorrupt(self.path, f"has no valid header row (format {row[0] if row else 'missing'!r})")
        elif "rollouts" in tables:  # written before journals had a header: adopt it
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?), ('created', ?)", (FORMAT, str(time.time())))
        else:
            raise JournalCorrupt(self.path, "is a SQLite file without journal tables (lost, or not a journal)")

    def backup(self, keep: int = BACKUPS_KEPT) -> Path:
        """A consistent copy (SQLite online backup: safe while others write) in journal-backups/,
        keeping the newest `keep`. Taken before each apply, so a damaged journal loses at most one run."""
        folder = backup_dir(self.path)
        folder.mkdir(parents=True, exist_ok=True)
        now = time.time_ns()
        dest = folder / f"{self.path.stem}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now // 10**9))}.{now % 10**9:09d}.db"
        tmp = dest.with_suffix(".part")
        target = sqlite3.connect(str(tmp))
        try:
            with self._lock:
                self._db.backup(target)
        finally:
            target.close()
        os.replace(tmp, dest)
        for old in sorted(folder.glob(f"{self.path.stem}-*.db"))[:-keep]:
            old.unlink(missing_ok=True)
        return dest

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _exec(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def _all(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- rollouts and runs ------------------------------------------------------------------

    def rollout(self, name: str) -> RolloutRow | None:
        rows = self._all("SELECT * FROM rollouts WHERE name = ?", (name,))
        return RolloutRow(**dict(rows[0])) if rows else None

    def rollouts(self) -> list[RolloutRow]:
        return [RolloutRow(**dict(r)) for r in self._all("SELECT * FROM rollouts ORDER BY name")]

    def new_run(self, name: str, manifest: str, fleet: str, spec_digest: str, artifact_digest: str, bundle: str) -> int:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT INTO runs (rollout, spec_digest, artifact_digest, state, reason, started) VALUES (?,?,?,?,?,?)",
                    (name, spec_digest, artifact_digest, "running", "", now))
                run_id = cur.lastrowid
                self._db.execute(
                    "INSERT INTO rollouts (name, manifest, fleet, spec_digest, artifact_digest, bundle, state, reason, run_id, updated)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET manifest=excluded.manifest,"
                    " fleet=excluded.fleet, spec_digest=excluded.spec_digest, artifact_digest=excluded.artifact_digest,"
                    " bundle=excluded.bundle, state=excluded.state, reason=excluded.reason, run_id=excluded.run_id,"
                    " updated=excluded.updated",
                    (name, manifest, fleet, spec_digest, artifact_digest, bundle, "running", "", run_id, now))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return int(run_id)

    def set_state(self, name: str, state: str, reason: str = "") -> None:
        assert state in STATES, state
        now = time.time()
        finished = now if state in ("done", "failed", "aborted", "rolled-back") else None
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("UPDATE rollouts SET state = ?, reason = ?, updated = ? WHERE name = ?", (state, reason, now, name))
                self._db.execute(
                    "UPDATE runs SET state = ?, reason = ?, finished = ? WHERE id = (SELECT run_id FROM rollouts WHERE name = ?)",
                    (state, reason, finished, name))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

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
        self._exec("INSERT OR REPLACE INTO gates (run_id, wave, name, ok, reason, figures, ts) VALUES (?,?,?,?,?,?,?)",
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


def _step_end(row: sqlite3.Row) -> StepEnd:
    return StepEnd(row["device"], row["wave"], row["action"], row["digest"], bool(row["ok"]), int(row["bytes"] or 0),
                   json.loads(row["detail"] or "{}"), row["ts"])
