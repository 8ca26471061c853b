-- Stock per SKU; the level may go negative (backorder).
CREATE TABLE IF NOT EXISTS stock (
    sku        TEXT   PRIMARY KEY,
    level      BIGINT NOT NULL,
    threshold  BIGINT,
    updated_at BIGINT NOT NULL
);
-- Orders seen: 'reserved' (stock taken), 'cancelled' (released, or a tombstone when the cancel came
-- first and the order must not be applied when it arrives).
CREATE TABLE IF NOT EXISTS orders (
    order_id   TEXT   PRIMARY KEY,
    status     TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS order_lines (
    order_id TEXT   NOT NULL,
    sku      TEXT   NOT NULL,
    quantity BIGINT NOT NULL,
    PRIMARY KEY (order_id, sku)
);
-- The transactional outbox: events written with the change, published by the relay with the row
-- id as Nats-Msg-Id, then marked sent.
CREATE TABLE IF NOT EXISTS outbox (
    id          TEXT   PRIMARY KEY,
    subject     TEXT   NOT NULL,
    event       TEXT   NOT NULL,
    traceparent TEXT,
    created_at  BIGINT NOT NULL,
    sent_at     BIGINT
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (sent_at, id);
