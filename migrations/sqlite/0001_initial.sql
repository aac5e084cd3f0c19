-- Registered (and rejected) template versions, one row per release tag.
CREATE TABLE template_versions (
    template      TEXT    NOT NULL,
    major         INTEGER NOT NULL,
    minor         INTEGER NOT NULL,
    kind          TEXT    NOT NULL,             -- environment | service
    repo          TEXT    NOT NULL,
    tag           TEXT    NOT NULL,
    git_commit    TEXT    NOT NULL,
    status        TEXT    NOT NULL,             -- registered | rejected
    reason        TEXT,                         -- why rejected
    release_notes TEXT,                         -- annotated tag message
    recorded_at   TEXT    NOT NULL,
    PRIMARY KEY (template, major, minor)
);

-- Every resource protond manages, with what is deployed now.
CREATE TABLE resources (
    id             TEXT    PRIMARY KEY,         -- e.g. service_instance/payments/payments-dev
    kind           TEXT    NOT NULL,
    repo           TEXT    NOT NULL,
    environment    TEXT,                        -- the environment it lives in
    template       TEXT    NOT NULL,
    major          INTEGER NOT NULL,
    minor          INTEGER NOT NULL,
    input_hash     TEXT    NOT NULL,
    rendered_hash  TEXT    NOT NULL,
    outputs        TEXT    NOT NULL DEFAULT '{}', -- JSON object of stack outputs
    status         TEXT    NOT NULL,            -- deployed | failed | deleting | ...
    spec_commit    TEXT,
    updated_at     TEXT    NOT NULL
);

-- Append-only deployment history: rows are inserted once and only move from
-- in_progress to a final status.
CREATE TABLE deployments (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    resource_id   TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    repo          TEXT    NOT NULL,
    environment   TEXT,
    action        TEXT    NOT NULL,             -- create | update | delete
    reason        TEXT,                         -- spec_change | minor_upgrade | ...
    template      TEXT    NOT NULL,
    from_version  TEXT,
    to_version    TEXT    NOT NULL,
    input_hash    TEXT    NOT NULL,             -- what this deployment applies
    rendered_hash TEXT    NOT NULL,
    spec_commit   TEXT,
    status        TEXT    NOT NULL,             -- in_progress | succeeded | failed
    error         TEXT,
    retryable     INTEGER NOT NULL DEFAULT 0,   -- a failure worth retrying without a change
    started_at    TEXT    NOT NULL,
    finished_at   TEXT
);
CREATE INDEX deployments_by_resource ON deployments (resource_id, id);
-- At most one deployment in flight per resource.
CREATE UNIQUE INDEX deployments_one_in_flight ON deployments (resource_id) WHERE status = 'in_progress';
