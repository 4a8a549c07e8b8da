-- Batches: files uploaded into a batch are announced together when it is
-- committed. A batch lives in one root (device_id NULL: the tenant's shared
-- root); created_by names the principal that opened it ("device:<id>" or
-- "service:<name>"), the only one that lists its files while it is open. Ids are
-- UUIDv7 as text, so the id is the keyset cursor.
CREATE TABLE batches (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    device_id    TEXT,
    created_by   TEXT NOT NULL,
    name         TEXT,
    metadata     TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('open', 'committed', 'abandoned')),
    created_at   TIMESTAMP NOT NULL,
    expires_at   TIMESTAMP NOT NULL,
    committed_at TIMESTAMP,
    updated_at   TIMESTAMP NOT NULL
);
CREATE INDEX batches_tenant ON batches (tenant_id, id DESC);
CREATE INDEX batches_open_by_expiry ON batches (expires_at) WHERE state = 'open';
-- NULL for the (usual) file outside any batch: no other column or index changes
-- for those rows.
ALTER TABLE files ADD COLUMN batch_id TEXT;
CREATE INDEX files_batch ON files (batch_id) WHERE batch_id IS NOT NULL;
