"""The state store seam: PostgreSQL migrations, one-line errors, and the lease a manager holds."""

from __future__ import annotations

import threading

import pytest

from edgeship.cli import main
from edgeship.fleet.rollout.journal import Journal
from edgeship.fleet.state import StateStoreError
from edgeship.fleet.state.lease import DbLease, LeaseHeld, LeaseLost
from tests.mqtt.test_faults import wait_until


def _query(url: str, sql: str):
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        cur = con.execute(sql)
        return cur.fetchall() if cur.description else []


def test_migrations_are_recorded_once_and_a_newer_schema_is_refused(postgres_url):
    opened: list = []
    threads = [threading.Thread(target=lambda: opened.append(Journal().close())) for _ in range(4)]
    for t in threads:  # four managers starting at once migrate the database once
        t.start()
    for t in threads:
        t.join(60)
    assert len(opened) == 4
    assert [r[0] for r in _query(postgres_url, "SELECT version FROM schema_migrations ORDER BY version")] == [1, 2]
    _query(postgres_url, "INSERT INTO schema_migrations (version, name) VALUES (999, 'from_the_future')")
    with pytest.raises(StateStoreError, match="schema version 999, newer than this edgeship knows"):
        Journal()


def test_an_unreachable_database_is_one_line_without_its_password(monkeypatch, capsys):
    monkeypatch.setenv("EDGESHIP_DATABASE_URL", "postgresql://edgeship:hunter2@127.0.0.1:1/fleet")
    assert main(["rollout", "history", "kws"]) != 0
    err = capsys.readouterr().err.strip()
    assert "cannot connect" in err and "edgeship:***@127.0.0.1:1/fleet" in err
    assert "hunter2" not in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_an_unknown_database_scheme_is_refused(monkeypatch):
    monkeypatch.setenv("EDGESHIP_DATABASE_URL", "mysql://db/fleet")
    with pytest.raises(StateStoreError, match="only postgresql://"):
        Journal()


def test_a_lease_that_stops_being_renewed_is_taken_over_and_its_holder_fenced(postgres_url, monkeypatch):
    with Journal() as first_journal, Journal() as second_journal:
        monkeypatch.setenv("EDGESHIP_MANAGER_NAME", "manager-a")
        first = DbLease(first_journal._store, "kws", ttl=1.0).__enter__()
        first._stop.set()  # its heartbeat stops, as when the process hangs or dies on another host
        monkeypatch.setenv("EDGESHIP_MANAGER_NAME", "manager-b")
        second = DbLease(second_journal._store, "kws", ttl=5.0)
        with pytest.raises(LeaseHeld, match="driven by manager manager-a"):
            second.__enter__()
        wait_until(lambda: second._acquire(), 30, "the lease to expire and be taken")
        with pytest.raises(LeaseLost):  # the stalled holder learns it before touching another device
            first.check()
        second.check()
        assert _query(postgres_url, "SELECT manager, takeovers FROM leases WHERE name = 'kws'") == [("manager-b", 1)]
