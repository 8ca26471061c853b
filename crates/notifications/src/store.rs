//! The ledger of sent notifications: one row per (rule, event).

use hookbus_store::sqlx::{self, Row};
use hookbus_store::{Migrations, Store, StoreError};
use serde::Serialize;

pub fn migrations() -> Migrations {
    Migrations::new(&[(
        100,
        "notifications",
        include_str!("../migrations/0100_notifications.sql"),
    )])
}

/// Whether `rule` was sent for `event_id`.
pub async fn was_sent(store: &Store, rule: &str, event_id: &str) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT 1 FROM notifications_sent WHERE rule = $1 AND event_id = $2")
        .bind(rule)
        .bind(event_id)
        .fetch_optional(store.pool())
        .await?;
    Ok(row.is_some())
}

/// Records that `rule` was sent for `event_id` (a second record of the same pair is a no-op).
pub async fn record_sent(store: &Store, sent: &Sent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO notifications_sent (rule, event_id, channel, recipient, sent_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (rule, event_id) DO NOTHING",
    )
    .bind(&sent.rule)
    .bind(&sent.event_id)
    .bind(&sent.channel)
    .bind(&sent.recipient)
    .bind(sent.sent_at)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Records that every rule for the event is done, with its stream sequence (where a recreated
/// consumer resumes).
pub async fn finish(
    store: &Store,
    consumer: &str,
    event_id: &str,
    stream_sequence: u64,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    hookbus_store::claim(&mut tx, consumer, event_id, stream_sequence).await?;
    tx.commit().await?;
    Ok(())
}

/// One sent notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sent {
    pub rule: String,
    pub event_id: String,
    pub channel: String,
    pub recipient: String,
    pub sent_at: i64,
}

/// The most recent sends, newest first, optionally for one event.
pub async fn recent(
    store: &Store,
    event_id: Option<&str>,
    limit: i64,
) -> Result<Vec<Sent>, StoreError> {
    let rows = sqlx::query(
        "SELECT rule, event_id, channel, recipient, sent_at FROM notifications_sent \
         WHERE ($1 = '' OR event_id = $1) ORDER BY sent_at DESC, rule LIMIT $2",
    )
    .bind(event_id.unwrap_or_default())
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Sent {
                rule: row.try_get("rule")?,
                event_id: row.try_get("event_id")?,
                channel: row.try_get("channel")?,
                recipient: row.try_get("recipient")?,
                sent_at: row.try_get("sent_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}
