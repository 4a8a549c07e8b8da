-- Usage per tenant and per device root, kept exact in the same transaction as every
-- status change, so quotas hold under concurrency across instances without a scan:
-- a quota check locks one counter row. `device_id` '' is the tenant's total; files
-- in the shared root count only there. Used = uploaded, reserved = pending or
-- verifying.
CREATE TABLE usage_counters (
    tenant_id      TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    bytes_used     BIGINT NOT NULL DEFAULT 0,
    files_used     BIGINT NOT NULL DEFAULT 0,
    bytes_reserved BIGINT NOT NULL DEFAULT 0,
    files_reserved BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, device_id)
);
INSERT INTO usage_counters (tenant_id, device_id, bytes_used, files_used, bytes_reserved, files_reserved)
SELECT tenant_id, '',
       SUM(CASE WHEN status = 'uploaded' THEN size ELSE 0 END),
       SUM(CASE WHEN status = 'uploaded' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status IN ('pending', 'verifying') THEN size ELSE 0 END),
       SUM(CASE WHEN status IN ('pending', 'verifying') THEN 1 ELSE 0 END)
FROM files WHERE status IN ('pending', 'verifying', 'uploaded') GROUP BY tenant_id;
INSERT INTO usage_counters (tenant_id, device_id, bytes_used, files_used, bytes_reserved, files_reserved)
SELECT tenant_id, device_id,
       SUM(CASE WHEN status = 'uploaded' THEN size ELSE 0 END),
       SUM(CASE WHEN status = 'uploaded' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status IN ('pending', 'verifying') THEN size ELSE 0 END),
       SUM(CASE WHEN status IN ('pending', 'verifying') THEN 1 ELSE 0 END)
FROM files WHERE device_id IS NOT NULL AND status IN ('pending', 'verifying', 'uploaded')
GROUP BY tenant_id, device_id;
