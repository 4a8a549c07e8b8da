DROP TABLE outbox;
DROP TABLE files;
