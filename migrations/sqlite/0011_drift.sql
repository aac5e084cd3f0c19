-- Drift: what the last drift check found different between a recorded stack and live AWS,
-- one row per resource and kind (missing, status, template, parameters, tags, resources).
-- A resource's rows are replaced by each check of it and dropped when it is found in sync
-- or redeployed.
CREATE TABLE drift (
    resource_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    found_at    TEXT NOT NULL,
    PRIMARY KEY (resource_id, kind)
);

-- What the daemon's last cycle found wrong with a resource's desired state (its spec,
-- inputs or template invalid), so that `protond status`, which reads only the store, shows
-- it too. Replaced as a whole by each cycle.
CREATE TABLE spec_findings (
    resource_id TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    template    TEXT NOT NULL,
    detail      TEXT NOT NULL,
    found_at    TEXT NOT NULL
);
