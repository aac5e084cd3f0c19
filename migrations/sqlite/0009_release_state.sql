-- Immutable releases: git_commit is the commit recorded at first sight (or accepted by
-- `protond release accept`); tag_state says whether the tag still names it (current), was
-- moved (moved, to tag_commit) or was deleted (withdrawn).
ALTER TABLE template_versions ADD COLUMN tag_state TEXT NOT NULL DEFAULT 'current';
ALTER TABLE template_versions ADD COLUMN tag_commit TEXT;
