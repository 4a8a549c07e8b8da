-- An event that must not reach the broker before the events already recorded under
-- another ordering key: a batch's file events wait for the batch's own event, so
-- consumers see the batch first even when several instances relay. NULL for
-- almost every row.
ALTER TABLE outbox ADD COLUMN after_key TEXT;
