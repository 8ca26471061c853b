-- One row per (rule, event) that was sent: a redelivered event is not sent again.
CREATE TABLE IF NOT EXISTS notifications_sent (
    rule       TEXT   NOT NULL,
    event_id   TEXT   NOT NULL,
    channel    TEXT   NOT NULL,
    recipient  TEXT   NOT NULL,
    sent_at    BIGINT NOT NULL,
    PRIMARY KEY (rule, event_id)
);
