-- The change-set gate (`[gate]`): approvals of one version of one resource, and the
-- resources the last cycle held as needing one.
-- An approval: `protond approve` (via 'cli'), `POST /api/v1/resources/{id}/approve` (via
-- 'api'), or a spec repo's `.protond/approvals.yaml` the daemon used (via 'spec repo <name>').
-- A newer approval of the same version replaces the older one.
CREATE TABLE approvals (
    resource_id TEXT NOT NULL,
    template TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    approved_at TEXT NOT NULL,
    via TEXT NOT NULL,
    reason TEXT,
    PRIMARY KEY (resource_id, version)
);
-- What the last cycle held as `needs approval`, for `protond approvals`, `status` and the
-- metrics (another process than the daemon reads them): the version waiting and the
-- predicted effects (a JSON list of text).
CREATE TABLE needs_approval (
    resource_id TEXT PRIMARY KEY,
    template TEXT NOT NULL,
    version TEXT NOT NULL,
    changes TEXT NOT NULL,
    since TEXT NOT NULL
);
