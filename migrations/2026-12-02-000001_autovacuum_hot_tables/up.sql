-- Autovacuum settings for the tables the chat writes at its own rate
-- (deploy/postgres/README.md says why, with the server-wide settings).
--
-- messages only grows. Without insert-triggered vacuums its pages would be
-- frozen all at once by an anti-wraparound vacuum reading the whole table,
-- at a time of PostgreSQL's choosing; vacuumed every 1 % of new rows (and at
-- least every 10,000), each run sets the visibility map and freezes a
-- little, and later runs skip the pages already done. Its statistics go
-- stale fastest at the newest ids, which is where `since` replays and
-- history pages read: analyze it as often.
ALTER TABLE messages SET (
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_analyze_scale_factor = 0.01
);
-- Every message updates its conversation (a HOT update, pruned on its page,
-- migration 000006) and every mark_read its read mark: dead versions that
-- pruning misses are cleaned at 2 % of the table rather than 20 %.
ALTER TABLE conversations SET (autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE conversation_reads SET (autovacuum_vacuum_scale_factor = 0.02);
