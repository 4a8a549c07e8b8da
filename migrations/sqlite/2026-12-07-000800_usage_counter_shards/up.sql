-- Each metadata writer adds its reservations to its own shard of a counter (one
-- writer on SQLite, so one shard in practice); a counter's value is the sum of its
-- shards. SQLite cannot change a primary key in place: the table is rebuilt.
CREATE TABLE usage_counters_sharded (
    tenant_id      TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    shard          SMALLINT NOT NULL DEFAULT 0,
    bytes_used     BIGINT NOT NULL DEFAULT 0,
    files_used     BIGINT NOT NULL DEFAULT 0,
    bytes_reserved BIGINT NOT NULL DEFAULT 0,
    files_reserved BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, device_id, shard)
);
INSERT INTO usage_counters_sharded (tenant_id, device_id, shard, bytes_used, files_used, bytes_reserved, files_reserved)
SELECT tenant_id, device_id, 0, bytes_used, files_used, bytes_reserved, files_reserved FROM usage_counters;
DROP TABLE usage_counters;
ALTER TABLE usage_counters_sharded RENAME TO usage_counters;
