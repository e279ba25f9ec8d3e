"""Several managers on one fleet: two real `edgeship reconcile` replicas share a real PostgreSQL
journal; the one driving the rollout is SIGKILLed mid-wave; the other takes the rollout over once the
lease expires and finishes the same run: every device converged, none pushed twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from edgeship import artifact
from edgeship.fleet.rollout.journal import Journal
from rollout_kit import current_of, device_ids, make_bundle, write_local_fleet, write_rollout
from tests.mqtt.test_faults import wait_until

TTL_S = 3


def _query(url: str, sql: str):
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        return con.execute(sql).fetchall()


def _replica(repo, name: str, tmp_path, url: str) -> subprocess.Popen:
    env = dict(os.environ, EDGESHIP_DATABASE_URL=url, EDGESHIP_MANAGER_NAME=name, EDGESHIP_LEASE_TTL_S=str(TTL_S),
               EDGESHIP_HOME=str(tmp_path / f"home-{name}"))  # another machine: nothing shared but the database
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "edgeship", "reconcile", str(repo), "--interval", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def test_sigkilled_manager_is_taken_over_by_another(tmp_path, postgres_url):
    ids = device_ids(16)
    repo = tmp_path / "gitops"
    repo.mkdir()
    fleet = write_local_fleet(tmp_path, ids, folder=repo)
    bundle = make_bundle(tmp_path, "kws", seed=1)
    digest = artifact.bundle_digest(bundle)
    write_rollout(repo, "kws", fleet.name, bundle, {"canary": {"count": 2}, "waves": [50, 100], "max_unavailable": 1})

    replicas = {name: _replica(repo, name, tmp_path, postgres_url) for name in ("replica-a", "replica-b")}
    try:
        # the replica that got the lease has begun rolling out: kill it mid-wave
        wait_until(lambda: _query(postgres_url, "SELECT COUNT(*) FROM steps WHERE action = 'activate' AND phase = 'end'")
                   [0][0] >= 5 if _query(postgres_url, "SELECT to_regclass('steps')")[0][0] else False, 120, "5 activations")
        (holder, pid), = _query(postgres_url, "SELECT manager, pid FROM leases WHERE name = 'kws'")
        assert replicas[holder].pid == pid
        os.kill(pid, signal.SIGKILL)
        replicas[holder].wait(timeout=30)
        steps_at_kill = _query(postgres_url, "SELECT COUNT(*) FROM steps")[0][0]
        survivor = next(n for n in replicas if n != holder)

        wait_until(lambda: _query(postgres_url, "SELECT state FROM rollouts WHERE name = 'kws'")[0][0] == "done", 180,
                   "the survivor to finish the rollout")
        (manager, takeovers), = _query(postgres_url, "SELECT manager, takeovers FROM leases WHERE name = 'kws'")
        assert manager == survivor and takeovers >= 1
    finally:
        for proc in replicas.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)

    assert all(current_of(tmp_path, d) == digest for d in ids)  # no device left behind
    with Journal() as j:
        assert len(j.runs("kws")) == 1  # the survivor resumed the killed manager's run
        assert all(n == 1 for n in j.push_counts("kws").values())  # no device pushed twice
        steps = j.steps("kws")
        assert len(steps) > steps_at_kill  # the survivor did the rest
        for d in ids:
            ends = [s for s in steps if s["device"] == d and s["action"] == "activate" and s["phase"] == "end"]
            assert [s["ok"] for s in ends] == [1], (d, ends)
    log = (tmp_path / f"{survivor}.log").read_text()
    assert "driven by manager" in log and "resuming run" in log
