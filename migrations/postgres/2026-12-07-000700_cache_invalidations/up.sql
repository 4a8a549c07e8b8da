-- Invalidations of the shared cache requested by instances whose write-through never
-- reached Redis: every instance reads the count and, when it grows, stops trusting
-- the entries cached so far (it raises the cache generation).
CREATE TABLE cache_invalidations (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    requested BIGINT NOT NULL
);
INSERT INTO cache_invalidations (id, requested) VALUES (1, 0);
