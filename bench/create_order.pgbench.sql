-- The statements loms runs for create_order of one item whose shard holds the stock (see
-- functions/loms/adapters/postgres.py), as one transaction: the order and its `new` event, the items, the
-- all-or-nothing reservation, the status change and its event. Keep in step with the adapter.
\set sku random(:first_sku, :first_sku + :sku_count - 1)
\set user_id random(1, 1000000)
BEGIN;
SELECT nextval('order_seq') AS order_id \gset
WITH added AS (INSERT INTO orders (order_id, user_id, status) VALUES (:order_id, :user_id, 'new') RETURNING order_id, user_id, status) INSERT INTO outbox (event_id, order_id, user_id, status, moment) SELECT nextval('outbox_seq'), order_id, user_id, status, clock_timestamp() FROM added;
INSERT INTO order_items (order_id, sku, count) SELECT :order_id, t.sku, t.count FROM unnest(CAST(ARRAY[:sku] AS bigint[]), CAST(ARRAY[1] AS bigint[])) AS t(sku, count);
SAVEPOINT reserve;
SELECT sku, total_count, reserved FROM stocks WHERE sku = ANY(CAST(ARRAY[:sku] AS bigint[])) ORDER BY sku FOR UPDATE;
UPDATE stocks SET reserved = stocks.reserved + t.count FROM unnest(CAST(ARRAY[:sku] AS bigint[]), CAST(ARRAY[1] AS bigint[])) AS t(sku, count) WHERE stocks.sku = t.sku AND stocks.total_count - stocks.reserved >= t.count;
INSERT INTO reservations (order_id, sku, count) SELECT :order_id, t.sku, t.count FROM unnest(CAST(ARRAY[:sku] AS bigint[]), CAST(ARRAY[1] AS bigint[])) AS t(sku, count);
RELEASE SAVEPOINT reserve;
WITH changed AS (UPDATE orders SET status = 'awaiting payment', updated_at = now() WHERE order_id = :order_id RETURNING order_id, user_id, status) INSERT INTO outbox (event_id, order_id, user_id, status, moment) SELECT nextval('outbox_seq'), order_id, user_id, status, clock_timestamp() FROM changed;
COMMIT;
