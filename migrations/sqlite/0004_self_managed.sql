-- Resources provisioned through pull requests to the infrastructure repo (Terraform), and
-- the deployment each one waits on.
CREATE TABLE self_managed (
    resource_id    TEXT    PRIMARY KEY,
    deployment_id  INTEGER NOT NULL,
    folder         TEXT    NOT NULL,
    branch         TEXT    NOT NULL,
    number         INTEGER,
    url            TEXT,
    state          TEXT    NOT NULL,       -- waiting | done
    updated_at     TEXT    NOT NULL
);
