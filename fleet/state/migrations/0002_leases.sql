-- Which manager drives each rollout, until when (fleet/state/lease.py). Expiry in the database's clock.
CREATE TABLE leases (
    name TEXT PRIMARY KEY, holder TEXT NOT NULL, manager TEXT NOT NULL, pid INTEGER,
    acquired TIMESTAMPTZ NOT NULL, expires TIMESTAMPTZ NOT NULL, takeovers INTEGER NOT NULL DEFAULT 0);
