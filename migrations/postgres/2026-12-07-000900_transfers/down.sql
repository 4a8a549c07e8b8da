DROP TABLE transfer_recipients;
DROP TABLE transfers;
DROP TABLE inboxes;
