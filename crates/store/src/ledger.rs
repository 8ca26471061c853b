//! The `processed_events` ledger: claim an event id inside the transaction that applies its
//! effect. A redelivery, or a republish with another message id but the same event id, finds the
//! claim and does nothing; a rolled-back effect leaves no claim behind.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Any, AnyPool, Transaction};

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
}

/// Claims `event_id` for `consumer` in `tx`. `true`: first time, apply the effect in the same
/// transaction and commit; `false`: already processed, apply nothing.
pub async fn claim(
    tx: &mut Transaction<'_, Any>,
    consumer: &str,
    event_id: &str,
    stream_sequence: u64,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO processed_events (consumer, event_id, stream_sequence, processed_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(stream_sequence as i64)
    .bind(unix_now())
    .execute(&mut **tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The highest stream sequence `consumer` recorded: where a recreated consumer resumes.
pub async fn last_sequence(pool: &AnyPool, consumer: &str) -> Result<Option<u64>, sqlx::Error> {
    let row: (Option<i64>,) =
        sqlx::query_as("SELECT MAX(stream_sequence) FROM processed_events WHERE consumer = $1")
            .bind(consumer)
            .fetch_one(pool)
            .await?;
    Ok(row.0.map(|s| s as u64))
}

/// [`last_sequence`] as a closure, for `ConsumerSpec::resume_point`: where a recreated consumer
/// resumes (`None` when the read fails or nothing is recorded).
pub fn resume_point(
    pool: AnyPool,
    consumer: String,
) -> impl Fn() -> futures_util::future::BoxFuture<'static, Option<u64>> + Send + Sync {
    move || {
        let (pool, consumer) = (pool.clone(), consumer.clone());
        Box::pin(async move { last_sequence(&pool, &consumer).await.ok().flatten() })
    }
}

/// Deletes ledger rows older than `keep` (keep at least 3 days: Stripe retries that long).
pub async fn prune(pool: &AnyPool, keep: Duration) -> Result<u64, sqlx::Error> {
    let cutoff = unix_now() - keep.as_secs() as i64;
    let result = sqlx::query("DELETE FROM processed_events WHERE processed_at < $1")
        .bind(cutoff)
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
}
