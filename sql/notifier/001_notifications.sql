-- notifier: events claimed exactly once, the newest event applied per order, notifications, history versions.

-- Every loms.order-events event ever handled, claimed by its CloudEvents identity (source, id) in the same
-- transaction as its effect: a redelivery or a duplicate finds its row and changes nothing.
CREATE TABLE IF NOT EXISTS processed_events (
    event_source  text        NOT NULL,
    event_id      bigint      NOT NULL CHECK (event_id > 0),
    order_id      bigint      NOT NULL CHECK (order_id > 0),
    outcome       text        NOT NULL CHECK (outcome IN ('notified', 'out_of_order')),
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_source, event_id)
);

-- The highest event id applied per order (loms' outbox ids grow per order): an older event is out of order.
-- Its row lock serialises the events of one order.
CREATE TABLE IF NOT EXISTS order_progress (
    order_id       bigint PRIMARY KEY CHECK (order_id > 0),
    last_event_id  bigint NOT NULL
);

-- One notification per applied event; delivered_at is set once the sink took it (or refused it for good).
CREATE TABLE IF NOT EXISTS notifications (
    event_source    text        NOT NULL,
    event_id        bigint      NOT NULL,
    order_id        bigint      NOT NULL CHECK (order_id > 0),
    user_id         bigint      NOT NULL CHECK (user_id > 0),
    status          text        NOT NULL CHECK (status IN ('new', 'awaiting payment', 'failed', 'paid', 'cancelled')),
    message         text        NOT NULL,
    created_at      timestamptz NOT NULL,  -- the event's moment: when the status changed
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    delivery_error  text,                  -- set when the sink refused it for good
    PRIMARY KEY (event_source, event_id),
    FOREIGN KEY (event_source, event_id) REFERENCES processed_events (event_source, event_id)
);
CREATE INDEX IF NOT EXISTS notifications_by_user_and_time ON notifications (user_id, created_at, event_id);
CREATE INDEX IF NOT EXISTS notifications_undelivered ON notifications (recorded_at) WHERE delivered_at IS NULL;

-- Bumped in the same transaction as every new notification of the user. Cached histories carry the version
-- in their key, so one bump makes every cached period of that user stale, whatever the cache's state.
CREATE TABLE IF NOT EXISTS history_versions (
    user_id  bigint PRIMARY KEY CHECK (user_id > 0),
    version  bigint NOT NULL
);
