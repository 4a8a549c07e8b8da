-- Each metadata writer adds its reservations to its own shard of a counter, so
-- writers committing new files for the same tenant never wait for each other's
-- row lock (and commit together). A counter's value is the sum of its shards.
ALTER TABLE usage_counters ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE usage_counters DROP CONSTRAINT usage_counters_pkey;
ALTER TABLE usage_counters ADD PRIMARY KEY (tenant_id, device_id, shard);
