-- Operator holds (`protond hold`): automatic version moves (with all_changes = 1, every
-- change) of the resources a target covers wait until `until` (RFC 3339, UTC). One hold per
-- target; setting it again replaces it.
CREATE TABLE holds (
    target_kind  TEXT    NOT NULL,             -- resource | environment | stage | template
    target_name  TEXT    NOT NULL,
    all_changes  INTEGER NOT NULL DEFAULT 0,
    until        TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    set_by       TEXT    NOT NULL,
    set_at       TEXT    NOT NULL,
    PRIMARY KEY (target_kind, target_name)
);
-- Operator pins (`protond rollback --to`): the target's resources of `template` ('' for
-- any) and of the pin's major are held on major.minor until `protond unpin`.
CREATE TABLE pins (
    target_kind  TEXT    NOT NULL,             -- resource | environment | stage
    target_name  TEXT    NOT NULL,
    template     TEXT    NOT NULL DEFAULT '',
    major        INTEGER NOT NULL,
    minor        INTEGER NOT NULL,
    set_by       TEXT    NOT NULL,
    set_at       TEXT    NOT NULL,
    PRIMARY KEY (target_kind, target_name, template)
);
