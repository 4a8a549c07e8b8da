ALTER TABLE outbox DROP COLUMN after_key;
