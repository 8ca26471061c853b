-- Events per minute (of received_at) per source and type, with the summed ingest-to-process latency.
CREATE TABLE IF NOT EXISTS event_counts (
    minute         BIGINT NOT NULL,
    source         TEXT   NOT NULL,
    type           TEXT   NOT NULL,
    count          BIGINT NOT NULL,
    latency_ms_sum BIGINT NOT NULL,
    PRIMARY KEY (minute, source, type)
);
-- Order revenue per hour (of received_at) per currency, in minor units.
CREATE TABLE IF NOT EXISTS revenue (
    hour         BIGINT NOT NULL,
    currency     TEXT   NOT NULL,
    amount_minor BIGINT NOT NULL,
    orders       BIGINT NOT NULL,
    PRIMARY KEY (hour, currency)
);
