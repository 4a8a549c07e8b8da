-- The outbox relay: a claim (claimed_until) keeps other instances off rows being
-- published; per-file lookups keep each file's events in order; published rows
-- are pruned by age.
ALTER TABLE outbox ADD COLUMN claimed_until TIMESTAMP;
CREATE INDEX outbox_unpublished_by_file ON outbox (file_id, seq) WHERE published_at IS NULL;
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;
