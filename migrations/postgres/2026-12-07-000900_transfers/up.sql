-- Transfers between devices of a tenant. A device's inbox says whom it accepts
-- files from (accept_from: JSON, "*" or an array of device ids; no row = accept
-- nobody). A transfer offers one uploaded file to its recipients until it expires
-- or is revoked; each recipient has its own state. Ids are UUIDv7 as text, so the
-- id is the keyset cursor; a purged file takes its transfers with it.
CREATE TABLE inboxes (
    tenant_id   TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    accept_from TEXT NOT NULL,
    updated_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (tenant_id, device_id)
);
CREATE TABLE transfers (
    id             TEXT COLLATE "C" PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    file_id        TEXT COLLATE "C" NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    sender_device  TEXT,
    sender_service TEXT,
    state          TEXT NOT NULL CHECK (state IN ('offered', 'received', 'revoked', 'expired')),
    created_at     TIMESTAMP NOT NULL,
    expires_at     TIMESTAMP NOT NULL,
    updated_at     TIMESTAMP NOT NULL
);
CREATE INDEX transfers_sender ON transfers (tenant_id, sender_device, id DESC);
CREATE INDEX transfers_tenant ON transfers (tenant_id, id DESC);
CREATE INDEX transfers_file ON transfers (file_id);
CREATE INDEX transfers_live_by_expiry ON transfers (expires_at) WHERE state IN ('offered', 'received');
CREATE TABLE transfer_recipients (
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers (id) ON DELETE CASCADE,
    tenant_id   TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('offered', 'received', 'revoked', 'expired')),
    updated_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (transfer_id, device_id)
);
CREATE INDEX transfer_recipients_inbox ON transfer_recipients (tenant_id, device_id, transfer_id DESC);
