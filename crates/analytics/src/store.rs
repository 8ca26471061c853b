//! Counting events, once: a batch's ledger claims, per-minute counts and order revenue in one
//! transaction.

use std::collections::{BTreeMap, HashSet};

use hookbus_commerce::CommerceEvent;
use hookbus_proto::v1::Event;
use hookbus_store::batch::{Params, Value, Writes};
use hookbus_store::sqlx::{self, Any, Row, Transaction};
use hookbus_store::{Migrations, Store, StoreError};
use serde::Serialize;

pub fn migrations() -> Migrations {
    Migrations::new(&[(
        100,
        "analytics",
        include_str!("../migrations/0100_analytics.sql"),
    )])
}

/// One event to count, with its stream sequence and its ingest-to-process latency.
#[derive(Debug, Clone)]
pub struct Counted {
    pub event: Event,
    pub stream_sequence: u64,
    pub latency_ms: i64,
}

/// Counts each event for `consumer` unless it was counted before, in `tx`: the ledger claims in
/// one statement, then the counts and the revenue summed per row in memory and added in one
/// statement each (rows in key order, so concurrent batches lock them in one order). Per event,
/// whether it was counted now.
pub async fn record_batch(
    tx: &mut Transaction<'static, Any>,
    consumer: &str,
    events: &[Counted],
) -> Result<Vec<bool>, StoreError> {
    let ids: Vec<(&str, u64)> = events
        .iter()
        .map(|c| (c.event.id.as_str(), c.stream_sequence))
        .collect();
    let mut writes = Writes::new(Params::of_connection(tx));
    let claimed = hookbus_store::claim_into(tx, consumer, &ids, &mut writes).await?;
    let mut first = HashSet::with_capacity(events.len());
    let mut counts: BTreeMap<(i64, &str, &str), (i64, i64)> = BTreeMap::new();
    let mut revenue: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
    let mut fresh = Vec::with_capacity(events.len());
    for counted in events {
        let event = &counted.event;
        let now = claimed.contains(&event.id) && first.insert(event.id.as_str());
        fresh.push(now);
        if !now {
            continue;
        }
        let received = event.received_at.as_ref().map_or(0, |t| t.seconds);
        let count = counts
            .entry((
                received - received.rem_euclid(60),
                event.source.as_str(),
                event.r#type.as_str(),
            ))
            .or_default();
        count.0 += 1;
        count.1 += counted.latency_ms.max(0);
        // Revenue from orders; a payload that is not a readable order is counted, not summed.
        if let Ok(Some(CommerceEvent::OrderCreated(order))) = hookbus_commerce::adapt(event)
            && let Some(total) = order.total
        {
            let sum = revenue
                .entry((received - received.rem_euclid(3600), total.currency))
                .or_default();
            sum.0 = sum.0.saturating_add(total.amount_minor);
            sum.1 += 1;
        }
    }
    let values = counts
        .into_iter()
        .flat_map(|((minute, source, event_type), (count, latency))| {
            [
                Value::Int(minute),
                Value::from(source),
                Value::from(event_type),
                Value::Int(count),
                Value::Int(latency),
            ]
        });
    writes.insert(
        "INSERT INTO event_counts (minute, source, type, count, latency_ms_sum)",
        "ON CONFLICT (minute, source, type) DO UPDATE SET count = event_counts.count + excluded.count, \
         latency_ms_sum = event_counts.latency_ms_sum + excluded.latency_ms_sum",
        5,
        values.collect(),
    );
    let values = revenue
        .into_iter()
        .flat_map(|((hour, currency), (amount, orders))| {
            [
                Value::Int(hour),
                Value::Text(currency),
                Value::Int(amount),
                Value::Int(orders),
            ]
        });
    writes.insert(
        "INSERT INTO revenue (hour, currency, amount_minor, orders)",
        "ON CONFLICT (hour, currency) DO UPDATE SET amount_minor = revenue.amount_minor + excluded.amount_minor, \
         orders = revenue.orders + excluded.orders",
        4,
        values.collect(),
    );
    writes.run(tx).await?;
    Ok(fresh)
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
