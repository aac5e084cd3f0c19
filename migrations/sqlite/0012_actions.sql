-- Manual actions (`protond redeploy`, `retry`, `cancel` and their API endpoints) and the
-- progress of deployments in flight.
-- Who or what asked for a deployment: copied from the deploy request it satisfied
-- (`cli:<user>`, `api:<name>`, `drift`, `retry by ...`); NULL when the cycle started it on its
-- own (a spec change, an upgrade).
ALTER TABLE deployments ADD COLUMN requested_by TEXT;
-- Who asked to cancel this deployment while it was in flight; the lifecycle sees it, calls the
-- provisioner's cancel and records the outcome as cancelled.
ALTER TABLE deployments ADD COLUMN cancel_requested_by TEXT;
-- The last progress the provisioner reported for a deployment in flight (JSON: stack, stack
-- status, last event, elapsed seconds), for `protond wait` and `protond status`.
ALTER TABLE deployments ADD COLUMN progress TEXT;
