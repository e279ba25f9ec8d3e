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
    return [sys.executable, "-m", "edgeship", "apply", str(rollout), "--take-over"]  # v2 takes v1's devices


def _apply_killed_at_step(rollout: Path, db: Path, target: int, env: dict) -> int:
    """Run `edgeship apply` in a subprocess and SIGKILL it once the journal reaches `target` steps
    (bounded: 120 s). Returns 1 when the kill landed mid-rollout, 0 when apply ended first."""
    proc = subprocess.Popen(_apply_cmd(rollout), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and _steps(db) < target and time.monotonic() < deadline:
        time.sleep(0.002)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return int(killed)


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
        kills += _apply_killed_at_step(rollout, db, target, env)
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


def test_sigkill_during_a_failing_canary_finishes_the_rollback(tmp_path):
    """Kills land around the canary's activations, its gate and its rollback; the resumed apply
    finishes the same run: the canary is back on v1, nothing outside it was touched."""
    from edgeship.cli import main
    from rollout_kit import make_failing, releases_of

    rng = random.Random(11)
    ids = device_ids(10)
    fleet = write_local_fleet(tmp_path, ids)
    v1, v2 = make_bundle(tmp_path, "kws", seed=1), make_bundle(tmp_path, "kws", seed=2)
    d1, d2 = artifact.bundle_digest(v1), artifact.bundle_digest(v2)
    strategy = {"canary": {"count": 6}, "waves": [100], "max_unavailable": 1}
    assert main(["apply", str(write_rollout(tmp_path, "v1", fleet, v1, strategy))]) == 0
    make_failing(tmp_path, [ids[2], ids[4]])
    rollout = write_rollout(tmp_path, "v2", fleet, v2, strategy)
    db = Path(os.environ["EDGESHIP_HOME"]) / "rollouts.db"
    kills = 0
    for _ in range(4):
        start = _steps(db)
        target = start + rng.randint(3, 7)
        kills += _apply_killed_at_step(rollout, db, target, dict(os.environ))
        with Journal() as j:
            if j.state("v2") != "running":
                break
    assert kills >= 1
    with Journal() as j:
        state = j.state("v2")
    if state == "running":
        done = subprocess.run(_apply_cmd(rollout), env=dict(os.environ), capture_output=True, text=True, timeout=300)
        assert done.returncode == 1 and "gate failed at canary" in done.stderr, done.stderr
    with Journal() as j:
        assert j.state("v2") == "failed" and len(j.runs("v2")) == 1
        assert {s["device"] for s in j.steps("v2")} <= set(ids[:6])
        assert all(n == 1 for n in j.push_counts("v2").values())
    assert all(current_of(tmp_path, d) == d1 for d in ids)
    assert all(artifact.short(d2, 64) not in releases_of(tmp_path, d) for d in ids[6:])
