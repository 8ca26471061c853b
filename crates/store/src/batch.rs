//! A batch of events in one transaction: multi-row statements ([`Params`], [`Writes`]), the
//! ledger claims of a whole batch in one, and [`apply_split`], which commits a batch at once and,
//! when that fails, splits it so that only the event that cannot be applied fails.

use std::collections::{HashSet, VecDeque};

use futures_util::future::BoxFuture;
use sqlx::{Any, Row, Transaction};

use crate::{Store, StoreError};

/// Rows per multi-row statement: far below SQLite's and Postgres's limits on parameters for the
/// widest row here (5 columns).
pub const ROWS_PER_STATEMENT: usize = 500;

/// The ledger's insert, up to its `VALUES`.
const CLAIM_INSERT: &str =
    "INSERT INTO processed_events (consumer, event_id, stream_sequence, processed_at)";

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
    let mut writes = Writes::new(Params::of_connection(tx));
    let claimed = claim_into(tx, consumer, events, &mut writes).await?;
    writes.run(tx).await?;
    Ok(claimed)
}

/// [`claim_all`], with the claims' insert on SQLite left in `writes`, to go with the batch's
/// other writes (on Postgres the insert decides, so it runs now).
pub async fn claim_into(
    tx: &mut Transaction<'_, Any>,
    consumer: &str,
    events: &[(&str, u64)],
    writes: &mut Writes,
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
        match params {
            Params::Numbered => {
                let sql = format!(
                    "{CLAIM_INSERT} VALUES {} ON CONFLICT (consumer, event_id) DO NOTHING \
                     RETURNING event_id",
                    params.rows(chunk.len(), 4, 1)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (id, sequence) in chunk {
                    query = query
                        .bind(consumer)
                        .bind(*id)
                        .bind(*sequence as i64)
                        .bind(now);
                }
                for row in query.fetch_all(&mut **tx).await? {
                    claimed.insert(row.try_get::<String, _>("event_id")?);
                }
            }
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
                let fresh: Vec<(&str, u64)> = chunk
                    .iter()
                    .copied()
                    .filter(|(id, _)| !before.contains(*id))
                    .collect();
                let values = fresh.iter().flat_map(|(id, sequence)| {
                    [
                        Value::from(consumer),
                        Value::from(*id),
                        Value::Int(*sequence as i64),
                        Value::Int(now),
                    ]
                });
                writes.insert(
                    CLAIM_INSERT,
                    "ON CONFLICT (consumer, event_id) DO NOTHING",
                    4,
                    values.collect(),
                );
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

/// A value bound to a parameter of [`Writes`].
#[derive(Debug, Clone)]
pub enum Value {
    Text(String),
    Int(i64),
    NullableText(Option<String>),
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

/// The statements of a batch that only write, each with the rows it must change, run at the
/// end: on Postgres one by one, on SQLite as one multi-statement query (one hand-off to sqlx's
/// SQLite thread instead of one per statement; sqlx binds the parameters across the statements,
/// in order). A statement that changes other than its rows fails the whole (on SQLite, their
/// sum), as something another transaction did meanwhile.
#[derive(Debug)]
pub struct Writes {
    params: Params,
    statements: Vec<(String, Vec<Value>, u64)>,
}

impl Writes {
    pub fn new(params: Params) -> Self {
        Self {
            params,
            statements: Vec::new(),
        }
    }

    /// Adds `sql` with its `values` (in parameter order), which must change `rows` rows.
    pub fn push(&mut self, sql: String, values: Vec<Value>, rows: u64) {
        self.statements.push((sql, values, rows));
    }

    /// Adds `{head} VALUES (…), (…) {tail}` for `values`, `columns` to a row, in statements of
    /// at most [`ROWS_PER_STATEMENT`] rows, each of which must insert (or upsert) all its rows.
    pub fn insert(&mut self, head: &str, tail: &str, columns: usize, mut values: Vec<Value>) {
        while !values.is_empty() {
            let rest = values.split_off(values.len().min(ROWS_PER_STATEMENT * columns));
            let rows = values.len() / columns;
            let sql = format!(
                "{head} VALUES {} {tail}",
                self.params.rows(rows, columns, 1)
            );
            self.push(sql, values, rows as u64);
            values = rest;
        }
    }

    pub async fn run(self, tx: &mut Transaction<'_, Any>) -> Result<(), StoreError> {
        fn bound<'q>(
            mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
            values: Vec<Value>,
        ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
            for value in values {
                query = match value {
                    Value::Text(text) => query.bind(text),
                    Value::Int(n) => query.bind(n),
                    Value::NullableText(text) => query.bind(text),
                };
            }
            query
        }
        let changed_meanwhile = |changed: u64, expected: u64| {
            StoreError::Batch(format!(
                "the batch's writes changed {changed} rows where {expected} were expected: \
                 another transaction changed them meanwhile"
            ))
        };
        match self.params {
            Params::Numbered => {
                for (sql, values, rows) in self.statements {
                    let query = bound(sqlx::query(sqlx::AssertSqlSafe(sql)), values);
                    let changed = query.execute(&mut **tx).await?.rows_affected();
                    if changed != rows {
                        return Err(changed_meanwhile(changed, rows));
                    }
                }
            }
            Params::InOrder => {
                if self.statements.is_empty() {
                    return Ok(());
                }
                let expected: u64 = self.statements.iter().map(|(_, _, rows)| rows).sum();
                let sql = self
                    .statements
                    .iter()
                    .map(|(sql, _, _)| sql.as_str())
                    .collect::<Vec<_>>()
                    .join(";\n");
                let values = self
                    .statements
                    .into_iter()
                    .flat_map(|(_, values, _)| values)
                    .collect();
                let query = bound(sqlx::query(sqlx::AssertSqlSafe(sql)), values);
                let changed = query.execute(&mut **tx).await?.rows_affected();
                if changed != expected {
                    return Err(changed_meanwhile(changed, expected));
                }
            }
        }
        Ok(())
    }
}
