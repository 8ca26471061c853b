//! The `processed_events` ledger: claim an event id inside the transaction that applies its
//! effect. A redelivery, or a republish with another message id but the same event id, finds the
//! claim and does nothing; a rolled-back effect leaves no claim behind.

use std::time::Duration;

use sqlx::{Any, AnyPool, Transaction};

pub(crate) use hookbus_bus::unix_seconds as unix_now;

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

/// Saves the server's ack floor for `consumer` (kept only when higher than the saved one).
pub async fn save_checkpoint(
    pool: &AnyPool,
    consumer: &str,
    stream_sequence: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO consumer_checkpoints (consumer, stream_sequence, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer) DO UPDATE SET stream_sequence = excluded.stream_sequence, \
         updated_at = excluded.updated_at \
         WHERE excluded.stream_sequence > consumer_checkpoints.stream_sequence",
    )
    .bind(consumer)
    .bind(stream_sequence as i64)
    .bind(unix_now())
    .execute(pool)
    .await?;
    Ok(())
}

/// The saved ack floor of `consumer`.
pub async fn checkpoint(pool: &AnyPool, consumer: &str) -> Result<Option<u64>, sqlx::Error> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT stream_sequence FROM consumer_checkpoints WHERE consumer = $1")
            .bind(consumer)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(s,)| s as u64))
}

/// Where a recreated consumer resumes: after the saved ack floor (no gaps below it), else after
/// the highest sequence in the ledger. As a closure for `ConsumerSpec::resume_point` (`None` when
/// the read fails or nothing is recorded).
pub fn resume_point(
    pool: AnyPool,
    consumer: String,
) -> impl Fn() -> futures_util::future::BoxFuture<'static, Option<u64>> + Send + Sync {
    move || {
        let (pool, consumer) = (pool.clone(), consumer.clone());
        Box::pin(async move {
            match checkpoint(&pool, &consumer).await {
                Ok(Some(floor)) => Some(floor),
                _ => last_sequence(&pool, &consumer).await.ok().flatten(),
            }
        })
    }
}

/// [`save_checkpoint`] as a closure, for `ConsumerSpec::checkpoint` (a failed write is logged;
/// the next floor is saved a few seconds later).
pub fn checkpointer(
    pool: AnyPool,
    consumer: String,
) -> impl Fn(u64) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync {
    move |stream_sequence| {
        let (pool, consumer) = (pool.clone(), consumer.clone());
        Box::pin(async move {
            if let Err(e) = save_checkpoint(&pool, &consumer, stream_sequence).await {
                tracing::warn!(%consumer, error = %e, "cannot save the consumer checkpoint");
            }
        })
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

/// Has `spec` resume from and checkpoint to this store, under its own name: the one call a
/// SQL-backed consumer needs for [`resume_point`] and [`checkpointer`].
pub fn track(spec: &mut hookbus_bus::ConsumerSpec, pool: &AnyPool) {
    spec.resume_point = Some(std::sync::Arc::new(resume_point(
        pool.clone(),
        spec.name.clone(),
    )));
    spec.checkpoint = Some(std::sync::Arc::new(checkpointer(
        pool.clone(),
        spec.name.clone(),
    )));
}
