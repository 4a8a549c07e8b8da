CREATE TABLE usage_counters_merged AS
SELECT tenant_id, device_id,
       SUM(bytes_used)::BIGINT AS bytes_used, SUM(files_used)::BIGINT AS files_used,
       SUM(bytes_reserved)::BIGINT AS bytes_reserved, SUM(files_reserved)::BIGINT AS files_reserved
FROM usage_counters GROUP BY tenant_id, device_id;
DELETE FROM usage_counters;
ALTER TABLE usage_counters DROP CONSTRAINT usage_counters_pkey;
ALTER TABLE usage_counters DROP COLUMN shard;
ALTER TABLE usage_counters ADD PRIMARY KEY (tenant_id, device_id);
INSERT INTO usage_counters SELECT tenant_id, device_id, bytes_used, files_used, bytes_reserved, files_reserved
FROM usage_counters_merged;
DROP TABLE usage_counters_merged;
