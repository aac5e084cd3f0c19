-- The last pipeline execution protond started (or tried to) per service.
CREATE TABLE pipeline_runs (
    service       TEXT PRIMARY KEY,
    pipeline      TEXT,                 -- CodePipeline pipeline name, when found
    execution_id  TEXT,
    result        TEXT NOT NULL,        -- started | not_available | failed
    message       TEXT,
    triggered_by  TEXT NOT NULL,        -- the instance whose deployment started it
    updated_at    TEXT NOT NULL
);
