"""The embedded journal store: one SQLite file, refused (never recreated) when damaged.

Why the care: a journal that silently starts over would make `apply` redo a fleet it already rolled
out. A new journal is built aside and linked into place with a `meta` header row, so a file without
that row (truncated to 0 bytes, say) is a lost journal, not a new one; every open runs SQLite's
`quick_check`; `backup()` (before each apply) keeps the last BACKUPS_KEPT copies made with SQLite's
online backup API (docs/rollouts.md, 'Restoring the journal').

WAL mode, so `edgeship rollout status` (another process) reads while an apply writes; every write is
its own committed transaction. One apply per rollout at a time is a flock (fleet/state/lease.py).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path

from edgeship.errors import RolloutError
from edgeship.fleet.state.lease import FileLease
from edgeship.paths import state_dir

FORMAT = "edgeship-journal/1"
BACKUPS_KEPT = 5

SCHEMA = """
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


def default_path() -> Path:
    return state_dir() / "rollouts.db"


def _create(path: Path) -> None:
    """A new journal, built aside and linked into place (never over an existing file), so that a file
    at `path` always has its tables and header row: one without them is damage, not a fresh start."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    db = sqlite3.connect(str(tmp), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
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


class SqliteStore:
    """One connection, one lock (SQLite serialises writers anyway); rows come back as dicts."""

    kind = "sqlite"

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else default_path()
        self.where = str(self.path)
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
                self._db.executescript(SCHEMA)
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

    # --- statements -------------------------------------------------------------------------

    def all(self, sql: str, args: tuple = ()) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]

    def run(self, sql: str, args: tuple = ()) -> None:
        with self._lock:
            self._db.execute(sql, args)

    @contextlib.contextmanager
    def transaction(self):
        """Statements that commit together; yields `execute(sql, args) -> rows`."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield lambda sql, args=(): [dict(r) for r in self._db.execute(sql, args).fetchall()]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # --- safety -----------------------------------------------------------------------------

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

    def lease(self, name: str) -> FileLease:
        """One apply per rollout at a time on this machine (a file here is never shared by managers)."""
        return FileLease(name)

    def close(self) -> None:
        with self._lock:
            self._db.close()
