-- High availability on PostgreSQL (issue 19). The same tables exist on SQLite so both
-- schemas stay equal, but a SQLite store has one writer (the lock file) and never uses them.

-- One row per lease: the leader lease of each shard (`shard-0`, `shard-1`, …). `epoch`
-- grows by one at every change of holder; writes carry it (the fence, PostgreSQL only).
-- Times are milliseconds since 1970 on the database's clock.
CREATE TABLE leases (
    name        TEXT    PRIMARY KEY,
    holder      TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    renewed_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- Every running replica, refreshed while it runs: who serves, which shard it belongs to.
CREATE TABLE replicas (
    id          TEXT    PRIMARY KEY,
    shard       INTEGER NOT NULL,
    listen      TEXT,
    started_at  TEXT    NOT NULL,
    seen_at     INTEGER NOT NULL
);

-- Webhooks a follower received, for the leader to act on (and NOTIFY protond_wakeup).
CREATE TABLE wakeups (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    repo        TEXT,
    received_by TEXT    NOT NULL,
    at          INTEGER NOT NULL
);
