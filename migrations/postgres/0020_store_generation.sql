-- The store's write generation (issue 20): one counter every write to a table the cycle
-- reads (resources, deployments, rollouts, deploy_requests, holds, pins, approvals) bumps in
-- the same transaction, whichever process or replica writes. A cycle that finds the counter
-- where it was reuses what it read then instead of decoding every row again. Never copied
-- (a target's own triggers count the copy's writes). Matches
-- migrations/sqlite/0020_store_generation.sql, with one bump per statement here.
CREATE TABLE store_generation (
    id INTEGER PRIMARY KEY,
    n BIGINT NOT NULL
);
INSERT INTO store_generation (id, n) VALUES (1, 0);
CREATE FUNCTION store_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE store_generation SET n = n + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;
CREATE TRIGGER store_generation_resources AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON resources
    FOR EACH STATEMENT EXECUTE FUNCTION store_generation_bump();
CREATE TRIGGER store_generation_deployments AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON deployments
    FOR EACH STATEMENT EXECUTE FUNCTION store_generation_bump();
CREATE TRIGGER store_generation_rollouts AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON rollouts
    FOR EACH STATEMENT EXECUTE FUNCTION store_generation_bump();
CREATE TRIGGER store_generation_deploy_requests AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON deploy_requests
    FOR EACH STATEMENT EXECUTE FUNCTION store_generation_bump();
CREATE TRIGGER store_generation_holds AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON holds
    FOR EACH STATEMENT EXECUTE FUNCTION store_generation_bump();
CREATE TRIGGER store_generation_pins AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pins
    FOR EACH STATEMENT EXECUTE FUNCTION store_generation_bump();
CREATE TRIGGER store_generation_approvals AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON approvals
    FOR EACH STATEMENT EXECUTE FUNCTION store_generation_bump();
