"""One manager drives a rollout at a time: a flock on one machine, a database lease across machines.

Why leases: several managers share a PostgreSQL journal (for availability and load). A row lock held
for a whole rollout would die with its connection but also block readers and tie the lease to one TCP
session; instead a `leases` row names the holder and an expiry in the database's clock, renewed by a
heartbeat every ttl/3. A manager SIGKILLed mid-wave stops renewing; after at most `ttl` another manager
takes the rollout over and resumes the same run from the journal (a `begin` without `end` says which
step was cut). A holder that misses its renewal learns it lost the lease and stops before its next
push or activation (`check()`), so two managers never push the same step.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import uuid

from edgeship.errors import RolloutError
from edgeship.paths import state_dir

TTL_ENV = "EDGESHIP_LEASE_TTL_S"
NAME_ENV = "EDGESHIP_MANAGER_NAME"
DEFAULT_TTL_S = 15.0


class LeaseHeld(RolloutError):
    """Another manager is driving this rollout now."""


class LeaseLost(RolloutError):
    """This manager's lease expired (it stalled longer than the ttl) and another may have taken over."""


def lease_ttl() -> float:
    raw = os.environ.get(TTL_ENV, "")
    try:
        ttl = float(raw) if raw else DEFAULT_TTL_S
    except ValueError:
        raise RolloutError(f"{TTL_ENV}={raw!r}: not a number of seconds") from None
    if not 1.0 <= ttl <= 3600:
        raise RolloutError(f"{TTL_ENV}={raw!r}: must be between 1 and 3600 seconds")
    return ttl


def manager_name() -> str:
    """How this manager names itself in leases: EDGESHIP_MANAGER_NAME, else the host name."""
    return os.environ.get(NAME_ENV, "").strip() or socket.gethostname()


class FileLease:
    """flock on state_dir()/locks/rollout-NAME.lock: released by the kernel when the holder dies."""

    def __init__(self, name: str):
        self.name = name
        self._fh = None

    def __enter__(self) -> "FileLease":
        folder = state_dir() / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.name)
        fh = open(folder / f"rollout-{safe}.lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise LeaseHeld(f"{self.name}: another apply of this rollout is running; "
                            f"`edgeship rollout status {self.name}` to watch it") from None
        self._fh = fh
        return self

    def check(self) -> None:
        """A flock cannot be lost while this process lives."""

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class DbLease:
    """A row of the `leases` table, renewed by a heartbeat thread; expiry in the database's clock
    (managers' clocks may disagree; the database's is the one they share)."""

    def __init__(self, store, name: str, ttl: float | None = None):
        self.store, self.name = store, name
        self.ttl = ttl if ttl is not None else lease_ttl()
        self.manager, self.pid = manager_name(), os.getpid()
        self.holder = f"{self.manager}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "DbLease":
        if not self._acquire():
            raise LeaseHeld(f"{self.name}: driven by manager {self._describe_holder()}; it is taken over "
                            f"if that manager stops renewing its lease for {self.ttl:g}s")
        self._thread = threading.Thread(target=self._heartbeat, name=f"lease-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _acquire(self) -> bool:
        rows = self.store.all(
            "INSERT INTO leases (name, holder, manager, pid, acquired, expires)"
            " VALUES (?, ?, ?, ?, now(), now() + make_interval(secs => ?))"
            " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, manager = excluded.manager,"
            " pid = excluded.pid, acquired = excluded.acquired, expires = excluded.expires,"
            " takeovers = leases.takeovers + CASE WHEN leases.holder = '' THEN 0 ELSE 1 END"
            " WHERE leases.expires < now() OR leases.holder = '' OR leases.holder = excluded.holder"
            " RETURNING holder", (self.name, self.holder, self.manager, self.pid, self.ttl))
        if rows:
            return True
        held = self.store.all("SELECT holder, manager, pid FROM leases WHERE name = ?", (self.name,))
        if held and held[0]["manager"] == self.manager and not _alive(held[0]["pid"]):
            # the holder ran here under this manager name and is gone: no need to wait for expiry
            rows = self.store.all(
                "UPDATE leases SET holder = ?, pid = ?, acquired = now(), expires = now() + make_interval(secs => ?),"
                " takeovers = takeovers + 1 WHERE name = ? AND holder = ? RETURNING holder",
                (self.holder, self.pid, self.ttl, self.name, held[0]["holder"]))
            return bool(rows)
        return False

    def _describe_holder(self) -> str:
        rows = self.store.all("SELECT manager, pid, GREATEST(0, EXTRACT(EPOCH FROM expires - now())) AS left_s"
                              " FROM leases WHERE name = ?", (self.name,))
        if not rows:
            return "(unknown, just released)"
        r = rows[0]
        return f"{r['manager']} (pid {r['pid']}, lease {float(r['left_s']):.0f}s left)"

    def _renew(self) -> bool:
        rows = self.store.all("UPDATE leases SET expires = now() + make_interval(secs => ?) WHERE name = ? AND holder = ?"
                              " AND expires >= now() RETURNING holder", (self.ttl, self.name, self.holder))
        return bool(rows)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self._renew():
                    self._lost.set()
                    return
            except RolloutError:
                continue  # the database blinked: retry; the lease expires if it stays away

    def check(self) -> None:
        """Raise LeaseLost unless this manager still holds the lease (asked of the database, so a
        manager that stalled past its expiry never acts on a device another one now drives)."""
        if self._lost.is_set() or not self.store.all(
                "SELECT 1 FROM leases WHERE name = ? AND holder = ? AND expires >= now()", (self.name, self.holder)):
            self._lost.set()
            raise LeaseLost(f"{self.name}: this manager's lease expired (stalled for more than {self.ttl:g}s); "
                            "another manager may be driving it now: stopped without touching more devices")

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl)
        try:
            self.store.run("UPDATE leases SET holder = '', expires = now() WHERE name = ? AND holder = ?",
                           (self.name, self.holder))
        except RolloutError:
            pass  # unreachable database: the lease simply expires


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return True
