DROP INDEX files_sweep_due;
ALTER TABLE files DROP COLUMN sweep_after;
