-- The store's write generation (issue 20): one counter every write to a table the cycle
-- reads (resources, deployments, rollouts, deploy_requests, holds, pins, approvals) bumps in
-- the same transaction, whichever process or replica writes. A cycle that finds the counter
-- where it was reuses what it read then instead of decoding every row again. Never copied
-- (a target's own triggers count the copy's writes).
CREATE TABLE store_generation (
    id INTEGER PRIMARY KEY,
    n BIGINT NOT NULL
);
INSERT INTO store_generation (id, n) VALUES (1, 0);
CREATE TRIGGER store_generation_resources_i AFTER INSERT ON resources
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_resources_u AFTER UPDATE ON resources
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_resources_d AFTER DELETE ON resources
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_deployments_i AFTER INSERT ON deployments
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_deployments_u AFTER UPDATE ON deployments
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_deployments_d AFTER DELETE ON deployments
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_rollouts_i AFTER INSERT ON rollouts
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_rollouts_u AFTER UPDATE ON rollouts
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_rollouts_d AFTER DELETE ON rollouts
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_deploy_requests_i AFTER INSERT ON deploy_requests
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_deploy_requests_u AFTER UPDATE ON deploy_requests
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_deploy_requests_d AFTER DELETE ON deploy_requests
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_holds_i AFTER INSERT ON holds
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_holds_u AFTER UPDATE ON holds
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_holds_d AFTER DELETE ON holds
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_pins_i AFTER INSERT ON pins
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_pins_u AFTER UPDATE ON pins
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_pins_d AFTER DELETE ON pins
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_approvals_i AFTER INSERT ON approvals
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_approvals_u AFTER UPDATE ON approvals
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER store_generation_approvals_d AFTER DELETE ON approvals
BEGIN UPDATE store_generation SET n = n + 1 WHERE id = 1; END;
