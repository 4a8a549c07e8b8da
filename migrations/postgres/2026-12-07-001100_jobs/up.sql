-- Jobs: copies and moves of a file's object between backends, worked by the
-- Mover of any instance. A worker claims a job with a lease (lease_owner,
-- lease_until) and renews it while it copies; a job whose lease ran out is
-- claimed again. run_after holds back a retry (backoff). A succeeded move keeps
-- source_delete_after until its source object is removed. Ids are UUIDv7 as
-- text, so the id is the keyset cursor.
CREATE TABLE jobs (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    tenant_id           TEXT NOT NULL,
    group_id            TEXT COLLATE "C",
    kind                TEXT NOT NULL CHECK (kind IN ('copy', 'move')),
    file_id             TEXT NOT NULL,
    source_backend      TEXT NOT NULL,
    target_backend      TEXT NOT NULL,
    object_key          TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('created', 'scheduled', 'copying',
                            'verifying', 'succeeded', 'failed', 'cancelled')),
    bytes_total         BIGINT NOT NULL,
    bytes_done          BIGINT NOT NULL,
    attempts            INTEGER NOT NULL,
    error               TEXT,
    cancel_requested    BOOLEAN NOT NULL DEFAULT FALSE,
    lease_owner         TEXT,
    lease_until         TIMESTAMP,
    run_after           TIMESTAMP NOT NULL,
    source_delete_after TIMESTAMP,
    created_at          TIMESTAMP NOT NULL,
    updated_at          TIMESTAMP NOT NULL
);
CREATE INDEX jobs_tenant ON jobs (tenant_id, id DESC);
CREATE INDEX jobs_group ON jobs (group_id, id DESC) WHERE group_id IS NOT NULL;
CREATE INDEX jobs_file ON jobs (file_id);
CREATE INDEX jobs_waiting ON jobs (run_after) WHERE state = 'created';
CREATE INDEX jobs_running ON jobs (lease_until)
    WHERE state IN ('scheduled', 'copying', 'verifying');
CREATE INDEX jobs_source_due ON jobs (source_delete_after)
    WHERE source_delete_after IS NOT NULL;
-- One line per step of a job, in order.
CREATE TABLE job_log (
    id     BIGSERIAL PRIMARY KEY,
    job_id TEXT NOT NULL,
    at     TIMESTAMP NOT NULL,
    line   TEXT NOT NULL
);
CREATE INDEX job_log_job ON job_log (job_id, id);
-- The copies of a file's object on other backends, as a JSON array of
-- {"backend", "key"}; NULL for the (usual) file without any.
ALTER TABLE files ADD COLUMN replicas TEXT;
