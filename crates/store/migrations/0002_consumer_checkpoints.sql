-- The consumer runtime's checkpoint: the server's ack floor as last seen, per consumer. Every
-- event at or below it was settled, so a consumer recreated after it was deleted resumes there
-- without skipping events that were still waiting for a retry.
CREATE TABLE IF NOT EXISTS consumer_checkpoints (
    consumer        TEXT   NOT NULL PRIMARY KEY,
    stream_sequence BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
