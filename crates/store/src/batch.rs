//! A batch of events in one transaction: multi-row statements ([`Params`]), the ledger claims of a whole batch
//! in one, and [`apply_split`], which commits a batch at once and, when that fails, splits it so
//! that only the event that cannot be applied fails.

use std::collections::{HashSet, VecDeque};

use futures_util::future::BoxFuture;
use sqlx::{Any, Row, Transaction};

use crate::{Store, StoreError};

/// Rows per multi-row statement: far below SQLite's and Postgres's limits on parameters for the
/// widest row here (5 columns).
pub const ROWS_PER_STATEMENT: usize = 500;

/// How a statement writes its parameters: numbered (`$1, $2, …`, Postgres) or `?` in order
/// (SQLite: sqlx looks a numbered SQLite parameter up by its name, a scan over all of them, which
/// makes a statement of many rows cost the square of its parameters). Either way they are bound
/// in the order they appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Params {
    Numbered,
    InOrder,
}

impl Params {
    pub fn of(backend: crate::Backend) -> Self {
        match backend {
            crate::Backend::Postgres => Self::Numbered,
            crate::Backend::Sqlite => Self::InOrder,
        }
    }

    /// The style of the database `connection` talks to.
    pub fn of_connection(connection: &sqlx::AnyConnection) -> Self {
        if connection.backend_name().eq_ignore_ascii_case("sqlite") {
            Self::InOrder
        } else {
            Self::Numbered
        }
    }

    /// Parameter number `n` (from 1).
    pub fn one(self, n: usize) -> String {
        match self {
            Self::Numbered => format!("${n}"),
            Self::InOrder => "?".into(),
        }
    }

    /// `($1, $2), ($3, $4), …`: `rows` tuples of `columns` parameters, numbered from `first`.
    pub fn rows(self, rows: usize, columns: usize, first: usize) -> String {
        let mut out = String::with_capacity(rows * columns * 5);
        for row in 0..rows {
            if row > 0 {
                out.push_str(", ");
            }
            out.push('(');
            out.push_str(&self.list(columns, first + row * columns));
            out.push(')');
        }
        out
    }

    /// `$first, $first+1, …`: a list of `count` parameters (for `IN (…)`).
    pub fn list(self, count: usize, first: usize) -> String {
        (first..first + count)
            .map(|n| self.one(n))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Claims every `(event_id, stream_sequence)` for `consumer` in `tx`, in one statement per
/// [`ROWS_PER_STATEMENT`]; returns the event ids claimed now (the others were processed before).
/// An id that appears twice is claimed once.
///
/// On Postgres that is an `INSERT … ON CONFLICT DO NOTHING RETURNING event_id`: the unique key
/// decides between concurrent transactions. On SQLite the ids already claimed are read first
/// (usually none: one answer and no rows), and the others inserted without `RETURNING`, because
/// sqlx hands each returned SQLite row over from its database thread on its own. SQLite runs one
/// write transaction at a time; should another process's write on the same file come in between,
/// fewer rows are inserted than read as missing, and the claim fails as a whole, to be retried.
pub async fn claim_all(
    tx: &mut Transaction<'_, Any>,
    consumer: &str,
    events: &[(&str, u64)],
) -> Result<HashSet<String>, StoreError> {
    let mut seen = HashSet::with_capacity(events.len());
    let unique: Vec<(&str, u64)> = events
        .iter()
        .copied()
        .filter(|(id, _)| seen.insert(*id))
        .collect();
    let now = crate::ledger::unix_now();
    let params = Params::of_connection(tx);
    let mut claimed = HashSet::with_capacity(unique.len());
    for chunk in unique.chunks(ROWS_PER_STATEMENT) {
        let fresh: Vec<(&str, u64)> = match params {
            Params::Numbered => chunk.to_vec(),
            Params::InOrder => {
                let sql = format!(
                    "SELECT event_id FROM processed_events WHERE consumer = ? AND event_id IN ({})",
                    params.list(chunk.len(), 2)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(consumer);
                for (id, _) in chunk {
                    query = query.bind(*id);
                }
                let before: HashSet<String> = query
                    .fetch_all(&mut **tx)
                    .await?
                    .iter()
                    .map(|row| row.try_get::<String, _>("event_id"))
                    .collect::<Result<_, _>>()?;
                chunk
                    .iter()
                    .copied()
                    .filter(|(id, _)| !before.contains(*id))
                    .collect()
            }
        };
        if fresh.is_empty() {
            continue;
        }
        let returning = match params {
            Params::Numbered => " RETURNING event_id",
            Params::InOrder => "",
        };
        let sql = format!(
            "INSERT INTO processed_events (consumer, event_id, stream_sequence, processed_at) \
             VALUES {} ON CONFLICT (consumer, event_id) DO NOTHING{returning}",
            params.rows(fresh.len(), 4, 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, sequence) in &fresh {
            query = query
                .bind(consumer)
                .bind(*id)
                .bind(*sequence as i64)
                .bind(now);
        }
        match params {
            Params::Numbered => {
                for row in query.fetch_all(&mut **tx).await? {
                    claimed.insert(row.try_get::<String, _>("event_id")?);
                }
            }
            Params::InOrder => {
                let inserted = query.execute(&mut **tx).await?.rows_affected();
                if inserted != fresh.len() as u64 {
                    return Err(StoreError::Batch(format!(
                        "{} of {} events were claimed by another transaction meanwhile",
                        fresh.len() as u64 - inserted,
                        fresh.len()
                    )));
                }
                claimed.extend(fresh.iter().map(|(id, _)| (*id).to_owned()));
            }
        }
    }
    Ok(claimed)
}

/// Whether a failed batch may hold one event that fails alone: an error from the database about
/// a statement, or from the batch's own checks. Not a lost connection or an exhausted pool, which
/// would fail every half the same.
pub trait Splittable {
    fn splits(&self) -> bool;
}

impl Splittable for StoreError {
    fn splits(&self) -> bool {
        match self {
            StoreError::Sql(e) => !matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            ),
            _ => false,
        }
    }
}

/// Applies `items` with `apply` in one transaction and commits it. When that fails in a way
/// that [`Splittable::splits`], the batch is split in halves, each applied the same way, in
/// order, so one item that cannot be applied fails alone and the others take effect. Returns
/// one result per item, in order: what `apply` answered for it, or the error of the smallest
/// batch that held it and failed.
pub async fn apply_split<T, R, E, F>(store: &Store, items: &[T], apply: F) -> Vec<Result<R, E>>
where
    E: Splittable + From<StoreError> + std::fmt::Display,
    F: for<'a> Fn(&'a mut Transaction<'static, Any>, &'a [T]) -> BoxFuture<'a, Result<Vec<R>, E>>,
{
    let mut results: Vec<Option<Result<R, E>>> = (0..items.len()).map(|_| None).collect();
    // Ranges still to apply, the next first: a failed range's halves go to the front.
    let mut ranges = VecDeque::from([(0, items.len())]);
    while let Some((start, end)) = ranges.pop_front() {
        if start == end {
            continue;
        }
        let attempt = async {
            let mut tx = store.begin().await?;
            let applied = apply(&mut tx, &items[start..end]).await?;
            tx.commit().await.map_err(StoreError::from)?;
            Ok::<_, E>(applied)
        }
        .await;
        match attempt {
            Ok(applied) if applied.len() == end - start => {
                for (slot, result) in results[start..end].iter_mut().zip(applied) {
                    *slot = Some(Ok(result));
                }
            }
            Ok(applied) => {
                // A bug in `apply`: it must answer one result per item.
                tracing::error!(
                    answered = applied.len(),
                    items = end - start,
                    "a batch was applied with the wrong number of results"
                );
                for slot in &mut results[start..end] {
                    *slot = Some(Err(E::from(StoreError::Batch(
                        "the batch answered the wrong number of results".into(),
                    ))));
                }
            }
            Err(e) if end - start > 1 && e.splits() => {
                tracing::info!(error = %e, items = end - start, "a batch failed; applying its halves");
                let middle = start + (end - start) / 2;
                ranges.push_front((middle, end));
                ranges.push_front((start, middle));
            }
            Err(e) => {
                // Every item of the range fails with it; the error is told for each.
                let text = e.to_string();
                let mut error = Some(e);
                for slot in &mut results[start..end] {
                    *slot = Some(Err(error
                        .take()
                        .unwrap_or_else(|| E::from(StoreError::Batch(text.clone())))));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every range was applied or failed"))
        .collect()
}
