"""The Fleet manifest's `state:` block: which store every command uses, secrets kept out of the manifest,
and one-line errors that never show the password. Against the real PostgreSQL the tests start."""

from __future__ import annotations

import logging
import sqlite3
import sys

import pytest
import yaml

from edgeship import api, artifact
from edgeship.cli import main
from edgeship.fleet.state import StateStoreError
from edgeship.fleet.state.location import shared_location, state_location
from edgeship.paths import state_dir
from tests.rollout.rollout_kit import current_of, device_ids, write_local_fleet, write_rollout
from tests.support.bundles import make_bundle


@pytest.fixture(autouse=True)
def _no_database_url(monkeypatch):
    """These tests choose the store with the manifest; the environment's choice is tested on its own."""
    for name in ("EDGESHIP_DATABASE_URL", "PGPASSWORD", "PGPASSFILE"):
        monkeypatch.delenv(name, raising=False)


def _query(url: str, sql: str, password: str | None = None):
    import psycopg

    with psycopg.connect(url, autocommit=True, **({"password": password} if password else {})) as con:
        cur = con.execute(sql)
        return cur.fetchall() if cur.description else []


def _fleet_with_state(tmp_path, state: dict, ids=None, name: str = "lab"):
    fleet = write_local_fleet(tmp_path, ids or device_ids(3), name=name)
    doc = yaml.safe_load(fleet.read_text())
    doc["state"] = state
    fleet.write_text(yaml.safe_dump(doc, sort_keys=False))
    return fleet


def _line_of(path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_rollout_with_a_state_url_lands_in_postgresql_for_every_command(tmp_path, postgres_server, capsys):
    url = postgres_server.new_database()
    ids = device_ids(3)
    fleet = _fleet_with_state(tmp_path, {"url": url}, ids)
    bundle = make_bundle(tmp_path, "kws", seed=1)
    rollout = write_rollout(tmp_path, "kws", fleet, bundle, {"canary": {"count": 1}, "waves": [100]})

    code, out, err = _run(capsys, "apply", rollout)
    assert code == 0, err
    assert all(current_of(tmp_path, d) == artifact.bundle_digest(bundle) for d in ids)
    assert _query(url, "SELECT name, state FROM rollouts") == [("kws", "done")]
    assert _query(url, "SELECT count(*) FROM steps WHERE action = 'activate' AND phase = 'end' AND ok = 1")[0][0] == 3
    assert not (state_dir() / "rollouts.db").exists()  # nothing went to the default SQLite file

    assert _run(capsys, "plan", rollout)[0] == 0  # converged, read from PostgreSQL
    code, out, _ = _run(capsys, "rollout", "status", "kws", "--fleet", fleet, "-o", "json")
    assert code == 0 and '"state": "done"' in out
    code, out, _ = _run(capsys, "rollout", "history", "kws", "--fleet", fleet)
    assert code == 0 and "done" in out
    assert "kws" in _run(capsys, "rollout", "list", "--fleet", fleet)[1]
    assert "no rollouts in the journal yet" in _run(capsys, "rollout", "list")[1]  # the default store is empty
    assert _run(capsys, "fleet", "status", fleet)[0] == 0
    assert api.status("kws", fleet=fleet).state == "done"
    assert [r.name for r in api.rollouts(fleet=fleet)] == ["kws"]

    # deploy reads device ownership from the fleet's store: the rollout's devices are refused
    code, _, err = _run(capsys, "deploy", bundle, "--fleet", fleet)
    assert code != 0 and "belong to a rollout" in err

    # reconcile applies a second rollout (other devices) into the same store
    more = device_ids(2, prefix="edge")
    fleet2 = _fleet_with_state(tmp_path, {"url": url}, more, name="edge")
    folder = tmp_path / "gitops"
    folder.mkdir()
    write_rollout(folder, "edge", fleet2, bundle, {"waves": [100]})
    code, _, err = _run(capsys, "reconcile", folder, "--once")
    assert code == 0, err
    assert _query(url, "SELECT name, state FROM rollouts ORDER BY name") == [("edge", "done"), ("kws", "done")]

    # the dashboard reads the same store
    from edgeship.ui.source import StateSource

    source = StateSource([fleet])
    try:
        assert sorted(r.name for r in source.snapshot().rollouts) == ["edge", "kws"]
    finally:
        source.close()


def test_the_same_manifest_with_sqlite_lands_in_the_file(tmp_path, capsys):
    fleet = _fleet_with_state(tmp_path, {"sqlite": "state/fleet.db"})
    (tmp_path / "state").mkdir()
    rollout = write_rollout(tmp_path, "kws", fleet, make_bundle(tmp_path, "kws", seed=1), {"waves": [100]})

    code, _, err = _run(capsys, "apply", rollout)
    assert code == 0, err
    with sqlite3.connect(tmp_path / "state" / "fleet.db") as db:
        assert db.execute("SELECT name, state FROM rollouts").fetchall() == [("kws", "done")]
    assert not (state_dir() / "rollouts.db").exists()
    assert _run(capsys, "rollout", "status", "kws", "--fleet", fleet)[0] == 0


def test_a_password_in_the_manifest_url_is_a_validation_error_at_its_line(tmp_path, capsys):
    fleet = _fleet_with_state(tmp_path, {"url": "postgresql://edgeship:s3cret-pw@127.0.0.1:5432/fleet"})
    query = _fleet_with_state(tmp_path, {"url": "postgresql://edgeship@127.0.0.1/fleet?password=s3cret-pw"}, name="q")
    line = _line_of(fleet, "url:")
    for path, at in ((fleet, line), (query, _line_of(query, "url:"))):
        code, out, err = _run(capsys, "validate", path)
        assert code != 0
        assert f"{path.name}:{at}" in out + err and "password_file" in out + err
        assert "s3cret-pw" not in out + err
    rollout = write_rollout(tmp_path, "kws", fleet, make_bundle(tmp_path, "kws", seed=1))
    code, out, err = _run(capsys, "apply", rollout)
    assert code != 0 and "s3cret-pw" not in out + err and "Traceback" not in err


def test_state_needs_exactly_one_store(tmp_path, capsys):
    fleet = _fleet_with_state(tmp_path, {"sqlite": "a.db", "url": "postgresql://u@h/db"})
    code, out, err = _run(capsys, "validate", fleet)
    assert code != 0 and "exactly one of url, url_env, sqlite" in out + err


def test_wrong_password_unreachable_and_missing_psycopg_are_one_line_without_the_password(
        tmp_path, postgres_server, capsys, monkeypatch):
    postgres_server.password_role("fleetpw", "right-horse-battery")
    url = postgres_server.new_database(owner="fleetpw").replace("edgeship@", "fleetpw@")
    secret = tmp_path / "db.password"
    secret.write_text("wrong-staple-9931\n")
    fleet = _fleet_with_state(tmp_path, {"url": url, "password_file": str(secret)})
    line = _line_of(fleet, "url:")
    rollout = write_rollout(tmp_path, "kws", fleet, make_bundle(tmp_path, "kws", seed=1), {"waves": [100]})

    outputs = []
    for argv in (["apply", rollout], ["plan", rollout], ["rollout", "status", "kws", "--fleet", fleet],
                 ["fleet", "status", fleet]):
        code, out, err = _run(capsys, *argv)
        outputs += [out, err]
        assert code != 0, argv
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert f"{fleet.name}:{line}" in err and "password authentication failed" in err, err
    logged = [p.read_text(errors="replace") for p in state_dir().rglob("*") if p.is_file() and p.suffix != ".db"]
    for text in outputs + logged:
        assert "wrong-staple-9931" not in text and "right-horse-battery" not in text

    secret.write_text("right-horse-battery\n")  # the right one in the file: it works
    code, _, err = _run(capsys, "apply", rollout)
    assert code == 0, err
    assert _query(url, "SELECT state FROM rollouts", password="right-horse-battery") == [("done",)]

    secret.unlink()  # libpq's own PGPASSWORD keeps working without password_file
    doc = yaml.safe_load(fleet.read_text())
    doc["state"].pop("password_file")
    fleet.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("PGPASSWORD", "right-horse-battery")
    assert _run(capsys, "rollout", "status", "kws", "--fleet", fleet)[0] == 0
    monkeypatch.delenv("PGPASSWORD")

    unreachable = _fleet_with_state(tmp_path, {"url": "postgresql://edgeship@127.0.0.1:1/fleet"}, name="gone")
    code, _, err = _run(capsys, "rollout", "list", "--fleet", unreachable)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{unreachable.name}:{_line_of(unreachable, 'url:')}" in err and "cannot connect" in err

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if edgeship[postgres] were not installed
    code, _, err = _run(capsys, "rollout", "list", "--fleet", unreachable)
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert f"{unreachable.name}:" in err and "psycopg is not installed" in err


def test_url_env_names_a_variable_holding_the_url_with_its_password(tmp_path, postgres_server, capsys, monkeypatch):
    postgres_server.password_role("fleetenv", "env-held-pw")
    url = postgres_server.new_database(owner="fleetenv").replace("edgeship@", "fleetenv:env-held-pw@")
    fleet = _fleet_with_state(tmp_path, {"url_env": "FLEET_DB_URL"})
    code, _, err = _run(capsys, "rollout", "list", "--fleet", fleet)
    assert code != 0 and "FLEET_DB_URL is not set" in err and f"{fleet.name}:" in err
    monkeypatch.setenv("FLEET_DB_URL", url)
    rollout = write_rollout(tmp_path, "kws", fleet, make_bundle(tmp_path, "kws", seed=1), {"waves": [100]})
    code, out, err = _run(capsys, "apply", rollout)
    assert code == 0, err
    assert "env-held-pw" not in out + err
    assert _query(url, "SELECT state FROM rollouts") == [("done",)]


def test_edgeship_database_url_overrides_the_manifest_and_says_so(tmp_path, postgres_server, capsys, monkeypatch,
                                                                   caplog):
    from_manifest, from_env = postgres_server.new_database(), postgres_server.new_database()
    fleet = _fleet_with_state(tmp_path, {"url": from_manifest})
    monkeypatch.setenv("EDGESHIP_DATABASE_URL", from_env)
    rollout = write_rollout(tmp_path, "kws", fleet, make_bundle(tmp_path, "kws", seed=1), {"waves": [100]})
    with caplog.at_level(logging.WARNING, logger="edgeship"):
        code, _, err = _run(capsys, "apply", rollout)
    assert code == 0, err
    assert _query(from_env, "SELECT name FROM rollouts") == [("kws",)]
    assert _query(from_manifest, "SELECT to_regclass('rollouts')") == [(None,)]  # never even migrated
    assert f"EDGESHIP_DATABASE_URL overrides the state: block of {fleet}:" in caplog.text


def test_fleets_with_different_stores_are_refused_together(tmp_path):
    a = _fleet_with_state(tmp_path, {"sqlite": "a.db"}, name="a")
    b = _fleet_with_state(tmp_path, {"sqlite": "b.db"}, name="b")
    assert state_location(a).sqlite == tmp_path / "a.db"
    assert shared_location([a, a]).sqlite == tmp_path / "a.db"
    with pytest.raises(StateStoreError, match="different stores.*a.db.*b.db"):
        shared_location([a, b])


def test_a_rollout_name_not_in_the_default_journal_points_at_fleet(tmp_path, capsys):
    fleet = _fleet_with_state(tmp_path, {"sqlite": "own.db"})
    rollout = write_rollout(tmp_path, "kws", fleet, make_bundle(tmp_path, "kws", seed=1), {"waves": [100]})
    assert _run(capsys, "apply", rollout)[0] == 0
    code, _, err = _run(capsys, "rollout", "history", "kws")
    assert code != 0 and "no rollout named 'kws'" in err and "--fleet FLEET.yaml" in err
    assert _run(capsys, "rollout", "history", "kws", "--fleet", fleet)[0] == 0
