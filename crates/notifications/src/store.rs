//! The ledger of sent notifications: one row per (rule, event).

use std::collections::{HashMap, HashSet};

use hookbus_store::batch::{Params, ROWS_PER_STATEMENT};
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

/// The rules the ledger shows sent for each of `event_ids` (those with any).
pub async fn sent_among(
    store: &Store,
    event_ids: &[&str],
) -> Result<HashMap<String, HashSet<String>>, StoreError> {
    let params = Params::of(store.backend());
    let mut sent: HashMap<String, HashSet<String>> = HashMap::new();
    for chunk in event_ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT rule, event_id FROM notifications_sent WHERE event_id IN ({})",
            params.list(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(store.pool()).await? {
            sent.entry(row.try_get("event_id")?)
                .or_default()
                .insert(row.try_get("rule")?);
        }
    }
    Ok(sent)
}

/// Records sends in one statement per [`ROWS_PER_STATEMENT`] (a pair recorded before is left
/// as it was).
pub async fn record_sent(store: &Store, sends: &[Sent]) -> Result<(), StoreError> {
    let params = Params::of(store.backend());
    for chunk in sends.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO notifications_sent (rule, event_id, channel, recipient, sent_at) \
             VALUES {} ON CONFLICT (rule, event_id) DO NOTHING",
            params.rows(chunk.len(), 5, 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for sent in chunk {
            query = query
                .bind(&sent.rule)
                .bind(&sent.event_id)
                .bind(&sent.channel)
                .bind(&sent.recipient)
                .bind(sent.sent_at);
        }
        query.execute(store.pool()).await?;
    }
    Ok(())
}

/// Records that every rule for these events is done, with their stream sequences (where a
/// recreated consumer resumes), in one transaction.
pub async fn finish(
    store: &Store,
    consumer: &str,
    events: &[(&str, u64)],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut tx = store.begin().await?;
    hookbus_store::claim_all(&mut tx, consumer, events).await?;
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
