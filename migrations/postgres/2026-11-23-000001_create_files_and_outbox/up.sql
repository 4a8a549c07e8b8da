-- Files and the transactional outbox. Ids are UUIDv7 stored as text (hyphenated,
-- lowercase), so text order is creation order and the keyset cursor is the id;
-- the "C" collation makes that order bytewise whatever the database's locale.
CREATE TABLE files (
    id                TEXT COLLATE "C" PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    device_id         TEXT,
    name              TEXT NOT NULL,
    size              BIGINT NOT NULL CHECK (size > 0),
    sha256            TEXT NOT NULL,
    content_type      TEXT NOT NULL,
    metadata          TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'uploaded', 'rejected', 'deleted')),
    backend           TEXT NOT NULL,
    object_key        TEXT NOT NULL,
    created_at        TIMESTAMP NOT NULL,
    updated_at        TIMESTAMP NOT NULL,
    uploaded_at       TIMESTAMP,
    upload_expires_at TIMESTAMP NOT NULL
);
CREATE INDEX files_tenant_device_id ON files (tenant_id, device_id, id DESC);
CREATE INDEX files_tenant_id ON files (tenant_id, id DESC);
CREATE INDEX files_pending_by_age ON files (upload_expires_at) WHERE status = 'pending';

CREATE TABLE outbox (
    seq          BIGSERIAL PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    event_type   TEXT NOT NULL,
    file_id      TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    device_id    TEXT,
    payload      TEXT NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    published_at TIMESTAMP,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
