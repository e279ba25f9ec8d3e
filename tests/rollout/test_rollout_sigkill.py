"""kill -9 the manager at random steps of a rollout, 10 times, then apply again: the fleet ends
where the manifest says, and the journal shows no device pushed twice."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from edgeship import artifact
from edgeship.fleet.rollout.journal import Journal
from rollout_kit import current_of, device_ids, make_bundle, write_local_fleet, write_rollout

KILLS = 10


def _steps(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def _apply_cmd(rollout: Path) -> list[str]:
    return [sys.executable, "-m", "edgeship", "apply", str(rollout)]


def test_sigkill_at_random_steps_then_resume(tmp_path):
    rng = random.Random(7)
    ids = device_ids(24)
    fleet = write_local_fleet(tmp_path, ids)
    v1 = make_bundle(tmp_path, "kws", seed=1)
    digest = artifact.bundle_digest(v1)
    rollout = write_rollout(tmp_path, "kws", fleet, v1, {"canary": {"count": 2}, "waves": [25, 50, 100], "max_unavailable": 2})
    db = Path(os.environ["EDGESHIP_HOME"]) / "rollouts.db"
    env = dict(os.environ)
    kills = 0
    for _ in range(KILLS):
        before = _steps(db)
        target = before + rng.randint(1, 8)
        proc = subprocess.Popen(_apply_cmd(rollout), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while proc.poll() is None and _steps(db) < target and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        proc.stderr.close()
    assert kills >= KILLS - 2, f"only {kills} kills landed mid-rollout"

    done = subprocess.run(_apply_cmd(rollout), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert all(current_of(tmp_path, d) == digest for d in ids)
    with Journal() as j:
        counts = j.push_counts("kws")
        assert set(d for d, _ in counts) <= set(ids)
        assert all(n == 1 for n in counts.values()), counts  # no device received the bundle twice
        runs = j.runs("kws")
        assert len(runs) == 1 and runs[0]["state"] == "done"  # every restart resumed the same run
        steps = j.steps("kws")
        for d in ids:  # every device: exactly one successful activation recorded, no half-done step left
            ends = [s for s in steps if s["device"] == d and s["action"] == "activate" and s["phase"] == "end"]
            assert [s["ok"] for s in ends] == [1], (d, ends)
    again = subprocess.run(_apply_cmd(rollout), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "unchanged; 0 bytes pushed" in again.stdout
