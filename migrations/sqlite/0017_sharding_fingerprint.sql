-- Sharding agreement (issue 19): each replica records the sharding config it runs with
-- (`[ha] shards` and every `[[spec_repos]] shard`, as a JSON object), and a replica refuses
-- to lead while another live replica reports a different one. NULL: a replica of an
-- earlier version, which says nothing. SQLite never uses it (one writer).
ALTER TABLE replicas ADD COLUMN sharding TEXT;
