DROP INDEX files_batch;
ALTER TABLE files DROP COLUMN batch_id;
DROP TABLE batches;
