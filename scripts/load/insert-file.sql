-- pgbench script: one transaction = one new row in valet's own `files` table, shaped
-- like the row POST /v1/files inserts (a pending upload), with random ids.
\set n random(1, 1000000000)
INSERT INTO files (id, tenant_id, device_id, name, size, sha256, content_type, metadata,
                   status, backend, object_key, created_at, updated_at, upload_expires_at)
VALUES (gen_random_uuid()::text, 'pgbench', 'dev-1', 'load-' || :n || '.bin', 1048576,
        md5(random()::text) || md5(random()::text), 'application/octet-stream',
        '{"run":"load"}', 'pending', 'local', md5(random()::text) || '/' || gen_random_uuid()::text,
        now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC',
        now() AT TIME ZONE 'UTC' + interval '15 minutes');
