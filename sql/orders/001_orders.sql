-- order viewer: orders from the `orders` topic, normalised; stored once, never overwritten.

-- One row per order. fingerprint is the SHA-256 of the order's canonical JSON: a redelivery carries the same
-- one (nothing changes), another body under the same order_uid does not (a conflict, dead-lettered).
CREATE TABLE IF NOT EXISTS orders (
    order_uid           text        PRIMARY KEY,
    track_number        text        NOT NULL,
    entry               text        NOT NULL,
    locale              text        NOT NULL,
    internal_signature  text        NOT NULL,
    customer_id         text        NOT NULL,
    delivery_service    text        NOT NULL,
    shardkey            text        NOT NULL,
    sm_id               bigint      NOT NULL CHECK (sm_id >= 0),
    date_created        timestamptz NOT NULL,
    oof_shard           text        NOT NULL,
    fingerprint         text        NOT NULL,
    ingested_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- the page's list of recent orders
CREATE INDEX IF NOT EXISTS orders_recent ON orders (ingested_at DESC, order_uid);

CREATE TABLE IF NOT EXISTS deliveries (
    order_uid  text PRIMARY KEY REFERENCES orders (order_uid) ON DELETE CASCADE,
    name       text NOT NULL,
    phone      text NOT NULL,
    zip        text NOT NULL,
    city       text NOT NULL,
    address    text NOT NULL,
    region     text NOT NULL,
    email      text NOT NULL
);

CREATE TABLE IF NOT EXISTS payments (
    order_uid      text   PRIMARY KEY REFERENCES orders (order_uid) ON DELETE CASCADE,
    transaction    text   NOT NULL,
    request_id     text   NOT NULL,
    currency       text   NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    provider       text   NOT NULL,
    amount         bigint NOT NULL CHECK (amount >= 0),
    payment_dt     bigint NOT NULL CHECK (payment_dt >= 0),
    bank           text   NOT NULL,
    delivery_cost  bigint NOT NULL CHECK (delivery_cost >= 0),
    goods_total    bigint NOT NULL CHECK (goods_total >= 0),
    custom_fee     bigint NOT NULL CHECK (custom_fee >= 0)
);

-- An order's items in their original order (position): the primary key is also the index get_order reads.
CREATE TABLE IF NOT EXISTS order_items (
    order_uid     text    NOT NULL REFERENCES orders (order_uid) ON DELETE CASCADE,
    position      integer NOT NULL CHECK (position >= 0),
    chrt_id       bigint  NOT NULL CHECK (chrt_id >= 0),
    track_number  text    NOT NULL,
    price         bigint  NOT NULL CHECK (price >= 0),
    rid           text    NOT NULL,
    name          text    NOT NULL,
    sale          integer NOT NULL CHECK (sale BETWEEN 0 AND 100),
    size          text    NOT NULL,
    total_price   bigint  NOT NULL CHECK (total_price >= 0),
    nm_id         bigint  NOT NULL CHECK (nm_id >= 0),
    brand         text    NOT NULL,
    status        bigint  NOT NULL CHECK (status >= 0),
    PRIMARY KEY (order_uid, position)
);
