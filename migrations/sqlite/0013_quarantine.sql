-- Quarantine (issue 18): a halted rollout says what kind of stop it is and who made it.
-- kind: 'halt' (a pause: `protond rollout halt`) or 'quarantine' (a bad release: stopped
-- automatically after failures in its first stage, or by `protond release quarantine`;
-- resources already on it are offered, or given, the previous usable minor).
ALTER TABLE rollouts ADD COLUMN kind TEXT NOT NULL DEFAULT 'halt';
-- Who stopped or released it: 'protond' for the automatic quarantine, 'cli:<user>' otherwise.
ALTER TABLE rollouts ADD COLUMN set_by TEXT;
-- The history of releases: every quarantine, release, halt and resume, never rewritten.
CREATE TABLE release_events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    template  TEXT    NOT NULL,
    major     INTEGER NOT NULL,
    minor     INTEGER NOT NULL,
    event     TEXT    NOT NULL,             -- quarantined | released | halted | resumed
    set_by    TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    at        TEXT    NOT NULL,
    -- Whether the daemon has announced it (release_quarantined / release_released events).
    announced INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX release_events_by_release ON release_events (template, major, minor, id);
