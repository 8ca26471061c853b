-- The ledger of the consumer runtime's idempotency helper: one row per (consumer, event id),
-- written in the same transaction as the event's effect.
CREATE TABLE IF NOT EXISTS processed_events (
    consumer        TEXT   NOT NULL,
    event_id        TEXT   NOT NULL,
    stream_sequence BIGINT NOT NULL,
    processed_at    BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS processed_events_sequence ON processed_events (consumer, stream_sequence);
CREATE INDEX IF NOT EXISTS processed_events_age ON processed_events (processed_at);
