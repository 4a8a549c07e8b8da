-- Uploads in parts: a multipart file records its part size and the store's upload
-- id; the SHA-256 declared for each part when its URL was signed is kept in
-- file_parts. Completed multipart files are `verifying` until valet has assembled
-- and hashed them off the request path (reconcile_after is the worker's lease).
ALTER TABLE files DROP CONSTRAINT files_status_check;
ALTER TABLE files ADD CONSTRAINT files_status_check
    CHECK (status IN ('pending', 'verifying', 'uploaded', 'rejected', 'deleted', 'expired'));
ALTER TABLE files ADD COLUMN part_size BIGINT CHECK (part_size > 0);
ALTER TABLE files ADD COLUMN multipart_upload_id TEXT;
CREATE INDEX files_verifying ON files (reconcile_after) WHERE status = 'verifying';
CREATE TABLE file_parts (
    file_id TEXT COLLATE "C" NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    number  INTEGER NOT NULL CHECK (number > 0),
    sha256  TEXT NOT NULL,
    PRIMARY KEY (file_id, number)
);
