"""A damaged journal is refused with a clear error, never silently started over; every apply first
takes a rotating backup (SQLite backup API) that restores the history. Real SQLite files, damaged
the way disks and people damage them: truncated to 0 bytes, and pages overwritten mid-file."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet.rollout.journal import BACKUPS_KEPT, Journal, JournalCorrupt, backup_dir
from rollout_kit import current_of, device_ids, make_bundle, write_local_fleet, write_rollout


def _apply(rollout: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeship", "apply", str(rollout)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def applied(tmp_path):
    """A fleet of 3 local devices on v1 through one apply: the journal holds a finished run."""
    ids = device_ids(3)
    fleet = write_local_fleet(tmp_path, ids)
    v1 = make_bundle(tmp_path, "kws", seed=1)
    rollout = write_rollout(tmp_path, "kws", fleet, v1, {"waves": [100]})
    done = _apply(rollout)
    assert done.returncode == 0, done.stderr
    db = Path(os.environ["EDGESHIP_HOME"]) / "rollouts.db"
    return rollout, db, ids, artifact.bundle_digest(v1)


def test_journal_truncated_to_zero_bytes_is_refused_and_restored_from_backup(applied):
    rollout, db, ids, digest = applied
    assert _apply(rollout).returncode == 0  # unchanged; takes a backup holding the finished run
    os.truncate(db, 0)
    for sidecar in ("-wal", "-shm"):
        Path(f"{db}{sidecar}").unlink(missing_ok=True)

    again = _apply(rollout)
    assert again.returncode == 1
    lines = [line for line in again.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is empty (0 bytes)" in lines[0] and "restore the latest backup" in lines[0], again.stderr
    assert os.path.getsize(db) == 0  # refused: nothing was written over it
    status = subprocess.run([sys.executable, "-m", "edgeship", "rollout", "history", "kws"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 1 and "is empty (0 bytes)" in status.stderr and "Traceback" not in status.stderr

    backups = sorted(backup_dir(db).glob("rollouts-*.db"))
    assert backups
    shutil.copy(backups[-1], db)  # the documented restore
    with Journal(db) as j:
        (run,) = j.runs("kws")
        assert run["state"] == "done"
    restored = _apply(rollout)
    assert restored.returncode == 0 and "unchanged" in restored.stdout, restored.stderr
    assert all(current_of(rollout.parent, d) == digest for d in ids)


def test_garbage_overwritten_mid_file_is_detected(applied, tmp_path):
    rollout, db, _, _ = applied
    with sqlite3.connect(db) as con:  # fold the WAL into the main file so the damage hits real pages
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = con.execute("PRAGMA page_size").fetchone()[0]
        pages = con.execute("PRAGMA page_count").fetchone()[0]
    assert pages >= 3
    with open(db, "r+b") as fh:  # page 2 onwards: b-tree pages of the tables
        fh.seek(page + page // 4)
        fh.write(os.urandom(page))
    with pytest.raises(JournalCorrupt) as err:
        Journal(db)
    assert "is corrupt" in str(err.value) or "not a readable SQLite database" in str(err.value)
    run = _apply(rollout)
    assert run.returncode == 1 and "refusing to use it" in run.stderr and "Traceback" not in run.stderr


def test_backups_rotate(tmp_path):
    path = tmp_path / "j.db"
    with Journal(path) as j:
        made = [j.backup() for _ in range(BACKUPS_KEPT + 3)]
    kept = sorted(backup_dir(path).glob("j-*.db"))
    assert kept == made[-BACKUPS_KEPT:]
    with Journal(kept[-1]) as copy:  # a backup is itself a valid journal
        assert copy.rollouts() == []


def test_a_journal_from_before_the_header_is_adopted(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE rollouts (name TEXT PRIMARY KEY, manifest TEXT, fleet TEXT, spec_digest TEXT,"
                    " artifact_digest TEXT, bundle TEXT, state TEXT, reason TEXT, run_id INTEGER, updated REAL)")
    with Journal(path) as j:
        assert j.rollouts() == []
    with Journal(path):
        pass  # the header written on adoption makes it a journal like any other


def test_an_unrelated_sqlite_file_is_not_taken_for_a_journal(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE t (x)")
    with pytest.raises(JournalCorrupt, match="without journal tables"):
        Journal(path)
