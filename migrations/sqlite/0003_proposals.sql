-- Pull requests proposing a major upgrade: at most one per spec file.
CREATE TABLE proposals (
    repo        TEXT    NOT NULL,             -- spec repo name
    path        TEXT    NOT NULL,             -- spec file path in the repo
    template    TEXT    NOT NULL,
    from_major  INTEGER NOT NULL,
    to_major    INTEGER NOT NULL,
    branch      TEXT    NOT NULL,
    forge       TEXT    NOT NULL,             -- github | gitlab | gitea | git
    number      INTEGER,                      -- PR / MR number; NULL for the git forge
    url         TEXT,
    state       TEXT    NOT NULL,             -- open | merged | closed | declined
    head        TEXT,                         -- commit protond last pushed to the branch
    content     TEXT    NOT NULL,             -- hash of what was proposed (spec, release, body)
    edited      INTEGER NOT NULL DEFAULT 0,   -- someone else pushed to the branch
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (repo, path)
);
CREATE INDEX proposals_created ON proposals (created_at);
