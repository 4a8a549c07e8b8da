ALTER TABLE files DROP COLUMN replicas;
DROP TABLE job_log;
DROP TABLE jobs;
