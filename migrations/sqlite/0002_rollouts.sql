-- Operator and automatic decisions about minor-version rollouts.
CREATE TABLE rollouts (
    template    TEXT    NOT NULL,
    major       INTEGER NOT NULL,
    minor       INTEGER NOT NULL,
    status      TEXT    NOT NULL,             -- halted | resumed
    reason      TEXT,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (template, major, minor)
);
