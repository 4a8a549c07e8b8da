-- Reconciliation: files whose upload was never completed end `expired`; a lease
-- (reconcile_after) lets one instance at a time work a pending file; finished
-- records are found by status and age for retention and purging.
ALTER TABLE files DROP CONSTRAINT files_status_check;
ALTER TABLE files ADD CONSTRAINT files_status_check
    CHECK (status IN ('pending', 'uploaded', 'rejected', 'deleted', 'expired'));
ALTER TABLE files ADD COLUMN reconcile_after TIMESTAMP;
CREATE INDEX files_status_updated ON files (status, updated_at);
