DROP INDEX files_status_updated;
ALTER TABLE files DROP COLUMN reconcile_after;
-- The previous schema has no `expired`: such files become `rejected` (also final).
UPDATE files SET status = 'rejected' WHERE status = 'expired';
ALTER TABLE files DROP CONSTRAINT files_status_check;
ALTER TABLE files ADD CONSTRAINT files_status_check
    CHECK (status IN ('pending', 'uploaded', 'rejected', 'deleted'));
