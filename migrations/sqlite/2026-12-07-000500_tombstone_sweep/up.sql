-- Tombstones: a file that ends (deleted, rejected) while its upload URL is still
-- valid can have an object put under its key afterwards by anyone holding that URL
-- (S3 and Azure cannot revoke a signed URL). `sweep_after` is when that URL stops
-- working; once it has passed (plus the reconciler's grace) the key is checked and
-- any object found is removed. NULL: nothing to sweep. While set, it also serves as
-- the sweeping instance's lease, and the record is not purged.
ALTER TABLE files ADD COLUMN sweep_after TIMESTAMP;
CREATE INDEX files_sweep_due ON files (sweep_after) WHERE sweep_after IS NOT NULL;
