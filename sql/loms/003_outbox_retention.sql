-- loms: sent outbox rows are kept for a while (to look into, to replay by hand) and then pruned by the
-- stale sweep (cancel_stale_orders, LOMS_OUTBOX_RETENTION_SECONDS); this index finds the oldest sent rows.
-- On a large existing outbox, build it first by hand with CREATE INDEX CONCURRENTLY to avoid blocking writes.
CREATE INDEX IF NOT EXISTS outbox_sent_by_age ON outbox (sent_at) WHERE sent_at IS NOT NULL;
