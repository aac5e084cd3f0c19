-- Spec repos a person retired with `protond forget <repo>`: the resources recorded from
-- them are deleted by the next cycles, within the deletion budget, as if the repo's config
-- entry said `retired = true`. A repo that is in the config again is read as usual, and
-- the daemon drops its mark; so it does once the repo has no resources left.
CREATE TABLE retired_repos (
    repo         TEXT    PRIMARY KEY,
    forgotten_at TEXT    NOT NULL,
    -- How many resources were recorded from the repo when it was forgotten.
    resources    INTEGER NOT NULL
);
