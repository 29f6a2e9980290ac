-- The statements loms runs for create_order of one item whose shard holds the stock (see
-- functions/loms/adapters/pg_unit_of_work.py), as one transaction: the order with its `new` event and items,
-- the row lock and check, the reservation, the status change with its event. Keep in step with the adapter.
\set sku random(:first_sku, :first_sku + :sku_count - 1)
\set user_id random(1, 1000000)
BEGIN;
WITH added AS (INSERT INTO orders (order_id, user_id, status) VALUES (nextval('order_seq'), :user_id, 'new') RETURNING order_id, user_id, status), event AS (INSERT INTO outbox (event_id, order_id, user_id, status, moment) SELECT nextval('outbox_seq'), order_id, user_id, status, clock_timestamp() FROM added), lines AS (INSERT INTO order_items (order_id, sku, count) SELECT added.order_id, t.sku, t.count FROM added, unnest(CAST(ARRAY[:sku] AS bigint[]), CAST(ARRAY[1] AS bigint[])) AS t(sku, count)) SELECT order_id FROM added \gset
SELECT sku, total_count, reserved FROM stocks WHERE sku = ANY(CAST(ARRAY[:sku] AS bigint[])) ORDER BY sku FOR UPDATE;
WITH wanted AS (SELECT * FROM unnest(CAST(ARRAY[:sku] AS bigint[]), CAST(ARRAY[1] AS bigint[])) AS t(sku, count)), taken AS (UPDATE stocks SET reserved = stocks.reserved + wanted.count FROM wanted WHERE stocks.sku = wanted.sku AND stocks.total_count - stocks.reserved >= wanted.count RETURNING stocks.sku, wanted.count), held AS (INSERT INTO reservations (order_id, sku, count) SELECT :order_id, sku, count FROM taken) SELECT count(*) FROM taken;
WITH changed AS (UPDATE orders SET status = 'awaiting payment', updated_at = now() WHERE order_id = :order_id RETURNING order_id, user_id, status) INSERT INTO outbox (event_id, order_id, user_id, status, moment) SELECT nextval('outbox_seq'), order_id, user_id, status, clock_timestamp() FROM changed;
COMMIT;
