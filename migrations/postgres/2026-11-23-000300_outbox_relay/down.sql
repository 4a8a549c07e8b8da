DROP INDEX outbox_published_at;
DROP INDEX outbox_unpublished_by_file;
ALTER TABLE outbox DROP COLUMN claimed_until;
