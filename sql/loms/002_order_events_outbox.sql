-- loms: the transactional outbox of order status events, one per shard, and what the stale sweep reads.
-- Rows are written in the same transaction as the status change and published by the relay after commit.

-- Event ids are `nextval * shard_count + shard_index`, as order ids are, so they are unique across shards.
CREATE SEQUENCE IF NOT EXISTS outbox_seq;

CREATE TABLE IF NOT EXISTS outbox (
    event_id     bigint      PRIMARY KEY CHECK (event_id > 0),
    order_id     bigint      NOT NULL,
    user_id      bigint      NOT NULL,
    status       text        NOT NULL,
    moment       timestamptz NOT NULL,
    traceparent  text,                              -- W3C trace context of the change, when there is one
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz                        -- NULL until the broker acknowledged the event
);

-- What the relay reads: unsent rows in id order. Small, because sent rows leave it.
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (event_id) WHERE sent_at IS NULL;

-- Wake listening relays when rows arrive. Delivered at commit; one per transaction (NOTIFY folds duplicates).
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('loms_outbox', '');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- What the stale sweep reads: orders still open (`new` or `awaiting payment`), oldest change first.
CREATE INDEX IF NOT EXISTS orders_open_by_age ON orders (updated_at) WHERE status IN ('new', 'awaiting payment');

-- What the orphan sweep reads: reservations by age (an order whose create died between its two commits).
CREATE INDEX IF NOT EXISTS reservations_by_age ON reservations (created_at);
