-- Where each stack lives, so that updates and deletes address the recorded stack with the
-- recorded identity: its name (NULL: written before this migration, the legacy name
-- derived from the resource id), its StackId once known, its region and the role assumed
-- for its calls.
ALTER TABLE resources ADD COLUMN stack_name TEXT;
ALTER TABLE resources ADD COLUMN stack_id TEXT;
ALTER TABLE resources ADD COLUMN region TEXT;
ALTER TABLE resources ADD COLUMN role_arn TEXT;
ALTER TABLE deployments ADD COLUMN stack_name TEXT;
ALTER TABLE deployments ADD COLUMN stack_id TEXT;
ALTER TABLE deployments ADD COLUMN region TEXT;
ALTER TABLE deployments ADD COLUMN role_arn TEXT;

-- Facts about this installation, e.g. its name (recorded at first start).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
