CREATE TABLE usage_counters_merged (
    tenant_id      TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    bytes_used     BIGINT NOT NULL DEFAULT 0,
    files_used     BIGINT NOT NULL DEFAULT 0,
    bytes_reserved BIGINT NOT NULL DEFAULT 0,
    files_reserved BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, device_id)
);
INSERT INTO usage_counters_merged
SELECT tenant_id, device_id, SUM(bytes_used), SUM(files_used), SUM(bytes_reserved), SUM(files_reserved)
FROM usage_counters GROUP BY tenant_id, device_id;
DROP TABLE usage_counters;
ALTER TABLE usage_counters_merged RENAME TO usage_counters;
