"""A real PostgreSQL server for the state-store tests: initdb in a temp folder, a free 127.0.0.1 port,
fsync off, one fresh database per test, stopped at the end of the session.

PostgreSQL refuses to run as root: as root the server runs as the `postgres` system user (runuser)
in a folder that user owns. With CI=true a missing server fails the test (tests/support/require.py).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.mosquitto import free_port
from tests.support.require import require_binary, require_module

SUPERUSER = "edgeship"
_counter = itertools.count()


def _bindir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return str(Path(found[-1]).parent)
    return str(Path(require_binary("initdb (apt-get install postgresql)", "initdb")).parent)


@dataclass
class PostgresServer:
    bindir: str
    folder: Path
    port: int
    run_as: list[str]

    @property
    def admin_url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        done = subprocess.run([*self.run_as, f"{self.bindir}/{argv[0]}", *argv[1:]], capture_output=True, text=True,
                              timeout=timeout, cwd="/")
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> "PostgresServer":
        data = self.folder / "data"
        self._run("initdb", "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync",
                  "--no-instructions", timeout=120)
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "start", "-D", str(data), "-o", options, "-w", "-t", "60", "-l", str(self.folder / "log"),
                  timeout=90)
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "stop", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "-t", "30", timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.folder, ignore_errors=True)

    def new_database(self, owner: str | None = None) -> str:
        """A fresh, empty database (owned by `owner`, a role of password_role); its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(_counter)}"
        with psycopg.connect(self.admin_url, autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else ""))
        return self.url(name)

    def password_role(self, user: str, password: str, deadline_s: float = 30) -> None:
        """A login role that must give `password` (scram-sha-256 over TCP; the rest of the server stays
        trust): pg_hba.conf takes the first matching line, so one line for this user goes on top."""
        import time

        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as con:
            con.execute(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'")
            hba = self.folder / "data" / "pg_hba.conf"
            with open(hba, "r+") as fh:  # rewritten in place: the server's user keeps owning it
                rest = fh.read()
                fh.seek(0)
                fh.write(f"host all {user} 127.0.0.1/32 scram-sha-256\n{rest}")
            con.execute("SELECT pg_reload_conf()")
        end = time.monotonic() + deadline_s  # the postmaster reloads on SIGHUP, a moment later
        for _ in range(300):
            try:
                psycopg.connect(f"postgresql://{user}@127.0.0.1:{self.port}/postgres", connect_timeout=5).close()
            except psycopg.OperationalError:
                return
            if time.monotonic() > end:
                break
            time.sleep(0.1)
        raise RuntimeError(f"pg_hba.conf reload did not take effect for {user} within {deadline_s} s")


def start_server() -> PostgresServer:
    require_module("psycopg")
    bindir = _bindir()
    folder = Path(tempfile.mkdtemp(prefix="edgeship-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres refuses root: run it as the postgres system user, in a folder it owns
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root and no `postgres` user exists to run the server (apt-get install postgresql)")
        os.chown(folder, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    return PostgresServer(bindir, folder, free_port(), run_as).start()


@pytest.fixture(scope="session")
def postgres_server():
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server, monkeypatch) -> str:
    """A fresh database on the session's server, in force for the test (EDGESHIP_DATABASE_URL)."""
    url = postgres_server.new_database()
    monkeypatch.setenv("EDGESHIP_DATABASE_URL", url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def state_store(request, monkeypatch) -> str:
    """Run a test once per state store: SQLite (the default) and PostgreSQL (EDGESHIP_DATABASE_URL)."""
    if request.param == "postgres":
        request.getfixturevalue("postgres_url")
    else:
        monkeypatch.delenv("EDGESHIP_DATABASE_URL", raising=False)
    return request.param
