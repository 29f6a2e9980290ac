-- Carts: one row per (user, SKU) holding the count. No cart row: the cart is empty.
CREATE TABLE IF NOT EXISTS cart_items (
    user_id   bigint      NOT NULL CHECK (user_id > 0),
    sku       bigint      NOT NULL CHECK (sku > 0),
    count     bigint      NOT NULL CHECK (count BETWEEN 1 AND 4294967295),
    added_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, sku)
);
