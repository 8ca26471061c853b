//! Counting an event, once: ledger claim, per-minute count and order revenue in one transaction.

use hookbus_commerce::CommerceEvent;
use hookbus_proto::v1::Event;
use hookbus_store::sqlx::{self, Row};
use hookbus_store::{Migrations, Store, StoreError};
use serde::Serialize;

pub fn migrations() -> Migrations {
    Migrations::new(&[(
        100,
        "analytics",
        include_str!("../migrations/0100_analytics.sql"),
    )])
}

/// Counts `event` for `consumer` unless it was counted before; `true` when counted now.
pub async fn record(
    store: &Store,
    consumer: &str,
    event: &Event,
    stream_sequence: u64,
    latency_ms: i64,
) -> Result<bool, StoreError> {
    let received = event.received_at.as_ref().map_or(0, |t| t.seconds);
    let mut tx = store.begin().await?;
    if !hookbus_store::claim(&mut tx, consumer, &event.id, stream_sequence).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO event_counts (minute, source, type, count, latency_ms_sum) VALUES ($1, $2, $3, 1, $4) \
         ON CONFLICT (minute, source, type) DO UPDATE SET count = event_counts.count + 1, \
         latency_ms_sum = event_counts.latency_ms_sum + $4",
    )
    .bind(received - received.rem_euclid(60))
    .bind(&event.source)
    .bind(&event.r#type)
    .bind(latency_ms.max(0))
    .execute(&mut *tx)
    .await?;
    // Revenue from orders; a payload that is not a readable order is counted, not summed.
    if let Ok(Some(CommerceEvent::OrderCreated(order))) = hookbus_commerce::adapt(event)
        && let Some(total) = order.total
    {
        sqlx::query(
            "INSERT INTO revenue (hour, currency, amount_minor, orders) VALUES ($1, $2, $3, 1) \
             ON CONFLICT (hour, currency) DO UPDATE SET amount_minor = revenue.amount_minor + $3, \
             orders = revenue.orders + 1",
        )
        .bind(received - received.rem_euclid(3600))
        .bind(&total.currency)
        .bind(total.amount_minor)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventCount {
    /// Start of the bucket, unix seconds.
    pub bucket: i64,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub count: i64,
    /// Mean ingest-to-process latency in the bucket, milliseconds.
    pub mean_latency_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revenue {
    pub hour: i64,
    pub currency: String,
    pub amount_minor: i64,
    pub orders: i64,
}

/// Counts in `[from, to)` per `bucket_seconds` (60 or 3600), source and type.
pub async fn event_counts(
    store: &Store,
    from: i64,
    to: i64,
    bucket_seconds: i64,
) -> Result<Vec<EventCount>, StoreError> {
    let rows = sqlx::query(
        "SELECT minute - (minute % $3) AS bucket, source, type, CAST(SUM(count) AS BIGINT) AS count, \
         CAST(SUM(latency_ms_sum) AS BIGINT) AS latency FROM event_counts WHERE minute >= $1 AND minute < $2 \
         GROUP BY bucket, source, type ORDER BY bucket, source, type",
    )
    .bind(from)
    .bind(to)
    .bind(bucket_seconds)
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let count: i64 = row.try_get("count")?;
            let latency: i64 = row.try_get("latency")?;
            Ok(EventCount {
                bucket: row.try_get("bucket")?,
                source: row.try_get("source")?,
                event_type: row.try_get("type")?,
                count,
                mean_latency_ms: if count > 0 { latency / count } else { 0 },
            })
        })
        .collect()
}

/// Revenue per hour and currency in `[from, to)`.
pub async fn revenue(store: &Store, from: i64, to: i64) -> Result<Vec<Revenue>, StoreError> {
    let rows = sqlx::query(
        "SELECT hour, currency, amount_minor, orders FROM revenue WHERE hour >= $1 AND hour < $2 \
         ORDER BY hour, currency",
    )
    .bind(from)
    .bind(to)
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Revenue {
                hour: row.try_get("hour")?,
                currency: row.try_get("currency")?,
                amount_minor: row.try_get("amount_minor")?,
                orders: row.try_get("orders")?,
            })
        })
        .collect()
}
