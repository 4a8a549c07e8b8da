DROP TABLE file_parts;
DROP INDEX files_verifying;
ALTER TABLE files DROP COLUMN multipart_upload_id;
ALTER TABLE files DROP COLUMN part_size;
-- The previous schema has no `verifying`: such files go back to `pending` (their
-- device completes them again).
UPDATE files SET status = 'pending' WHERE status = 'verifying';
ALTER TABLE files DROP CONSTRAINT files_status_check;
ALTER TABLE files ADD CONSTRAINT files_status_check
    CHECK (status IN ('pending', 'uploaded', 'rejected', 'deleted', 'expired'));
