//! A batch of events applied in one transaction: the ledger claims of all of them, the orders they
//! create or cancel, the stock they change and the outbox rows the changes call for, in a few
//! multi-row statements. The events take effect in their order, as one at a time would: a create
//! and its cancel in one batch release what the create reserved, a cancel before its create
//! leaves a tombstone that the create then finds.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use hookbus_commerce::CommerceEvent;
use hookbus_proto::inventory::v1::{LowStock, OutOfStock, StockLevelChanged};
use hookbus_store::batch::{Params, ROWS_PER_STATEMENT, Value, Writes};
use hookbus_store::sqlx::{self, Any, Row, Transaction};
use hookbus_store::{Backend, Splittable, StoreError};

mod orders;

use crate::outbox::{OutboxRow, STOCK_CHANGED, STOCK_LOW, STOCK_OUT};
use crate::store::{Cause, Inventory, StockLevel, unix_now};

/// What an event does to the inventory.
#[derive(Debug, Clone)]
pub enum Effect {
    Commerce(CommerceEvent),
    /// Set (`Op::Set`) or add to (`Op::Add`) a SKU's level.
    Adjust {
        sku: String,
        op: Op,
    },
}

/// A change of one SKU's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Set(i64),
    Add(i64),
}

/// One event of a batch (its id is its cause's).
#[derive(Debug, Clone)]
pub struct Item {
    pub stream_sequence: u64,
    pub effect: Effect,
    pub cause: Cause,
}

/// Why a batch (or the one event left of it) could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event can never be applied (a level that would overflow): dead-letter it.
    #[error("{0}")]
    Invalid(String),
}

impl From<sqlx::Error> for ApplyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

impl Splittable for ApplyError {
    fn splits(&self) -> bool {
        match self {
            Self::Store(e) => e.splits(),
            Self::Invalid(_) => true,
        }
    }
}

/// A stock change to make, and what caused it.
struct Change<'a> {
    sku: String,
    op: Op,
    cause: &'a Cause,
}

/// An order as the batch sees it.
enum OrderState {
    /// Not in the table before this batch: its first event in the batch inserted it.
    New,
    Reserved(BTreeMap<String, i64>),
    Cancelled,
}

impl Inventory {
    /// Claims every item for `consumer` and applies those claimed now, in order, in `tx`; per
    /// item, whether it was applied now (`false`: applied before, or twice in the batch).
    pub async fn apply_batch(
        &self,
        tx: &mut Transaction<'static, Any>,
        consumer: &str,
        items: &[Item],
    ) -> Result<Vec<bool>, ApplyError> {
        let ids: Vec<(&str, u64)> = items
            .iter()
            .map(|i| (i.cause.event_id.as_str(), i.stream_sequence))
            .collect();
        let mut writes = Writes::new(self.params());
        let claimed = hookbus_store::claim_into(tx, consumer, &ids, &mut writes).await?;
        let mut first = HashSet::with_capacity(items.len());
        let fresh: Vec<bool> = items
            .iter()
            .map(|i| {
                let id = i.cause.event_id.as_str();
                claimed.contains(id) && first.insert(id)
            })
            .collect();
        let applied: Vec<&Item> = items
            .iter()
            .zip(&fresh)
            .filter_map(|(item, fresh)| fresh.then_some(item))
            .collect();
        let changes = self.settle_orders(tx, &applied, &mut writes).await?;
        self.change_stock(tx, changes, None, &mut writes).await?;
        writes.run(tx).await?;
        Ok(fresh)
    }

    /// Sets or adds to a SKU's level, with its threshold when one is given (`PUT /v1/stock/{sku}`).
    pub async fn adjust(
        &self,
        tx: &mut Transaction<'static, Any>,
        sku: &str,
        op: Op,
        threshold: Option<i64>,
        cause: &Cause,
    ) -> Result<StockLevel, ApplyError> {
        let change = Change {
            sku: sku.to_owned(),
            op,
            cause,
        };
        let threshold = threshold.map(|t| (sku, t));
        let mut writes = Writes::new(self.params());
        let mut levels = self
            .change_stock(tx, vec![change], threshold, &mut writes)
            .await?;
        writes.run(tx).await?;
        levels
            .pop()
            .ok_or_else(|| ApplyError::Invalid("no level was changed".into()))
    }

    fn params(&self) -> Params {
        Params::of(self.store().backend())
    }

    /// `FOR UPDATE` on Postgres (SQLite has one writer, and no such clause).
    fn row_lock(&self) -> &'static str {
        match self.store().backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// Makes `changes` in order under the rows' locks (taken in SKU order), with a SKU's
    /// `threshold` set first; the new levels and the outbox rows each change calls for go to
    /// `writes`. Returns the level after each change.
    async fn change_stock(
        &self,
        tx: &mut Transaction<'static, Any>,
        changes: Vec<Change<'_>>,
        threshold: Option<(&str, i64)>,
        writes: &mut Writes,
    ) -> Result<Vec<StockLevel>, ApplyError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let (now, params) = (unix_now(), self.params());
        let skus: BTreeSet<&str> = changes.iter().map(|c| c.sku.as_str()).collect();
        let skus: Vec<&str> = skus.into_iter().collect();
        // On Postgres every row must exist before it is locked, or two batches could both start
        // a new SKU from 0; SQLite runs one transaction at a time, and the upsert below inserts a
        // new SKU's row (unless a threshold is to be set on it first).
        let ensure = self.store().backend() == Backend::Postgres || threshold.is_some();
        for chunk in skus.chunks(ROWS_PER_STATEMENT).filter(|_| ensure) {
            let sql = format!(
                "INSERT INTO stock (sku, level, updated_at) VALUES {} ON CONFLICT (sku) DO NOTHING",
                params.rows(chunk.len(), 3, 1)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for sku in chunk {
                query = query.bind(*sku).bind(0_i64).bind(now);
            }
            query.execute(&mut **tx).await?;
        }
        if let Some((sku, threshold)) = threshold {
            sqlx::query("UPDATE stock SET threshold = $2 WHERE sku = $1")
                .bind(sku)
                .bind(threshold)
                .execute(&mut **tx)
                .await?;
        }
        // Levels and stored thresholds, read under the rows' locks.
        let lock = self.row_lock();
        let mut stock: HashMap<String, (i64, Option<i64>)> = HashMap::with_capacity(skus.len());
        for chunk in skus.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT sku, level, threshold FROM stock WHERE sku IN ({}) ORDER BY sku{lock}",
                params.list(chunk.len(), 1)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for sku in chunk {
                query = query.bind(*sku);
            }
            for row in query.fetch_all(&mut **tx).await? {
                stock.insert(
                    row.try_get("sku")?,
                    (row.try_get("level")?, row.try_get("threshold")?),
                );
            }
        }
        let mut levels = Vec::with_capacity(changes.len());
        let mut outbox = Vec::new();
        for change in &changes {
            let (level, stored) = stock.entry(change.sku.clone()).or_insert((0, None));
            let previous = *level;
            let current = match change.op {
                Op::Set(value) => Some(value),
                Op::Add(delta) => previous.checked_add(delta),
            }
            .ok_or_else(|| {
                ApplyError::Invalid(format!(
                    "event {}: the level of {} would overflow",
                    change.cause.event_id, change.sku
                ))
            })?;
            *level = current;
            let threshold = self.thresholds().of(&change.sku, *stored);
            if current != previous {
                let (sku, cause) = (&change.sku, change.cause);
                let changed = StockLevelChanged {
                    sku: sku.clone(),
                    previous,
                    current,
                    cause_event_id: cause.event_id.clone(),
                };
                outbox.push(OutboxRow::new(&STOCK_CHANGED, &changed, cause));
                if previous >= threshold && current < threshold {
                    let low = LowStock {
                        sku: sku.clone(),
                        level: current,
                        threshold,
                        cause_event_id: cause.event_id.clone(),
                    };
                    outbox.push(OutboxRow::new(&STOCK_LOW, &low, cause));
                }
                if previous > 0 && current <= 0 {
                    let out = OutOfStock {
                        sku: sku.clone(),
                        level: current,
                        cause_event_id: cause.event_id.clone(),
                    };
                    outbox.push(OutboxRow::new(&STOCK_OUT, &out, cause));
                }
            }
            levels.push(StockLevel {
                sku: change.sku.clone(),
                level: current,
                threshold,
            });
        }
        let values = skus.iter().flat_map(|sku| {
            [
                Value::from(*sku),
                Value::Int(stock[*sku].0),
                Value::Int(now),
            ]
        });
        writes.insert(
            "INSERT INTO stock (sku, level, updated_at)",
            "ON CONFLICT (sku) DO UPDATE SET level = excluded.level, updated_at = excluded.updated_at",
            3,
            values.collect(),
        );
        crate::outbox::insert(writes, outbox);
        Ok(levels)
    }
}
