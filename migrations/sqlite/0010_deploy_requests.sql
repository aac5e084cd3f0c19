-- Requests to deploy a resource's current desired state even though nothing changed:
-- `protond redeploy` (an operator) or drift healing. The next cycle plans the resource as
-- an update (`UpdateReason::Forced`) through the normal gates; the request is dropped when
-- a deployment of the resource starts. One request per resource: a newer one replaces it.
CREATE TABLE deploy_requests (
    resource_id  TEXT PRIMARY KEY,
    -- `operator` or `drift_heal` (`plan::ForceCause`).
    cause        TEXT NOT NULL,
    -- Who or what asked (an API token's name, `cli`, `drift`), for the history.
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL
);
