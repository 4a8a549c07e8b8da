DROP TABLE file_parts;
UPDATE files SET status = 'pending' WHERE status = 'verifying';
CREATE TABLE files_rebuilt (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    device_id         TEXT,
    name              TEXT NOT NULL,
    size              BIGINT NOT NULL CHECK (size > 0),
    sha256            TEXT NOT NULL,
    content_type      TEXT NOT NULL,
    metadata          TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'uploaded', 'rejected', 'deleted', 'expired')),
    backend           TEXT NOT NULL,
    object_key        TEXT NOT NULL,
    created_at        TIMESTAMP NOT NULL,
    updated_at        TIMESTAMP NOT NULL,
    uploaded_at       TIMESTAMP,
    upload_expires_at TIMESTAMP NOT NULL,
    reconcile_after   TIMESTAMP
);
INSERT INTO files_rebuilt (id, tenant_id, device_id, name, size, sha256, content_type, metadata, status, backend, object_key, created_at, updated_at, uploaded_at, upload_expires_at, reconcile_after) SELECT id, tenant_id, device_id, name, size, sha256, content_type, metadata, status, backend, object_key, created_at, updated_at, uploaded_at, upload_expires_at, reconcile_after FROM files;
DROP TABLE files;
ALTER TABLE files_rebuilt RENAME TO files;
CREATE INDEX files_tenant_device_id ON files (tenant_id, device_id, id DESC);
CREATE INDEX files_tenant_id ON files (tenant_id, id DESC);
CREATE INDEX files_pending_by_age ON files (upload_expires_at) WHERE status = 'pending';
CREATE INDEX files_status_updated ON files (status, updated_at);
