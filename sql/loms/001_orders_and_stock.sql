-- loms: orders (sharded by order id) and stock (used in shard 0 only). Every shard gets the same schema.

-- Order ids are `nextval * shard_count + shard_index`, so the shard is `order_id % shard_count`.
CREATE SEQUENCE IF NOT EXISTS order_seq;

CREATE TABLE IF NOT EXISTS orders (
    order_id    bigint      PRIMARY KEY CHECK (order_id > 0),
    user_id     bigint      NOT NULL CHECK (user_id > 0),
    status      text        NOT NULL CHECK (status IN ('new', 'awaiting payment', 'failed', 'paid', 'cancelled')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS order_items (
    order_id  bigint NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    sku       bigint NOT NULL CHECK (sku > 0),
    count     bigint NOT NULL CHECK (count BETWEEN 1 AND 4294967295),
    PRIMARY KEY (order_id, sku)
);

-- Stock as the seed states it; `reserved` may exceed `total_count` there, so availability is clamped at 0.
CREATE TABLE IF NOT EXISTS stocks (
    sku          bigint PRIMARY KEY CHECK (sku > 0),
    total_count  bigint NOT NULL CHECK (total_count >= 0),
    reserved     bigint NOT NULL CHECK (reserved >= 0)
);

-- What each order holds of the stock. Pay and cancel consume or release exactly these rows and delete them,
-- which makes both idempotent. No foreign key to orders: the order may live in another shard.
CREATE TABLE IF NOT EXISTS reservations (
    order_id    bigint      NOT NULL,
    sku         bigint      NOT NULL REFERENCES stocks (sku),
    count       bigint      NOT NULL CHECK (count > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, sku)
);
