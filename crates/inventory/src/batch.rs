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

use crate::outbox::OutboxRow;
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

/// One event of a batch.
#[derive(Debug, Clone)]
pub struct Item {
    pub event_id: String,
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
            .map(|i| (i.event_id.as_str(), i.stream_sequence))
            .collect();
        let mut writes = Writes::new(self.params());
        let claimed = hookbus_store::claim_into(tx, consumer, &ids, &mut writes).await?;
        let mut first = HashSet::with_capacity(items.len());
        let fresh: Vec<bool> = items
            .iter()
            .map(|i| claimed.contains(&i.event_id) && first.insert(i.event_id.as_str()))
            .collect();
        let applied: Vec<&Item> = items
            .iter()
            .zip(&fresh)
            .filter_map(|(item, fresh)| fresh.then_some(item))
            .collect();
        let changes = self.settle_orders(tx, &applied, &mut writes).await?;
        self.change_stock(tx, changes, &BTreeMap::new(), &mut writes)
            .await?;
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
        let thresholds = threshold.map(|t| (sku.to_owned(), t)).into_iter().collect();
        let mut writes = Writes::new(self.params());
        let mut levels = self
            .change_stock(tx, vec![change], &thresholds, &mut writes)
            .await?;
        writes.run(tx).await?;
        levels
            .pop()
            .ok_or_else(|| ApplyError::Invalid("no level was changed".into()))
    }

    /// Records the orders the items create or cancel and returns the stock changes they make, in
    /// item order.
    async fn settle_orders<'a>(
        &self,
        tx: &mut Transaction<'static, Any>,
        items: &[&'a Item],
        writes: &mut Writes,
    ) -> Result<Vec<Change<'a>>, ApplyError> {
        let now = unix_now();
        let params = self.params();
        // The first event of each order inserts its row: reserved by a create, a tombstone by a
        // cancel. The unique key decides between concurrent batches.
        let mut candidates: Vec<(&str, &str)> = Vec::new();
        let mut mentioned = HashSet::new();
        for item in items {
            let (order_id, status) = match &item.effect {
                Effect::Commerce(CommerceEvent::OrderCreated(o)) => (&o.order_id, "reserved"),
                Effect::Commerce(CommerceEvent::OrderCancelled(c)) => (&c.order_id, "cancelled"),
                Effect::Adjust { .. } => continue,
            };
            if mentioned.insert(order_id.as_str()) {
                candidates.push((order_id, status));
            }
        }
        let mut orders: HashMap<String, OrderState> = HashMap::with_capacity(candidates.len());
        match params {
            Params::Numbered => {
                // The unique key decides between concurrent batches; the orders that were there
                // are then read under their row locks.
                let mut inserted = HashSet::new();
                for chunk in candidates.chunks(ROWS_PER_STATEMENT) {
                    let sql = format!(
                        "INSERT INTO orders (order_id, status, updated_at) VALUES {} \
                         ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
                        params.rows(chunk.len(), 3, 1)
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for (order_id, status) in chunk {
                        query = query.bind(*order_id).bind(*status).bind(now);
                    }
                    for row in query.fetch_all(&mut **tx).await? {
                        inserted.insert(row.try_get::<String, _>("order_id")?);
                    }
                }
                let existing: Vec<&str> = candidates
                    .iter()
                    .map(|(id, _)| *id)
                    .filter(|id| !inserted.contains(*id))
                    .collect();
                orders.extend(inserted.into_iter().map(|id| (id, OrderState::New)));
                self.load_orders(tx, &existing, &mut orders).await?;
            }
            Params::InOrder => {
                // One transaction at a time: read what is there (for new orders, nothing), then
                // insert the rest with the batch's other writes (see `hookbus_store::claim_all`).
                let ids: Vec<&str> = candidates.iter().map(|(id, _)| *id).collect();
                self.load_orders(tx, &ids, &mut orders).await?;
                let new: Vec<(&str, &str)> = candidates
                    .iter()
                    .copied()
                    .filter(|(id, _)| !orders.contains_key(*id))
                    .collect();
                for chunk in new.chunks(ROWS_PER_STATEMENT) {
                    let sql = format!(
                        "INSERT INTO orders (order_id, status, updated_at) VALUES {} \
                         ON CONFLICT (order_id) DO NOTHING",
                        params.rows(chunk.len(), 3, 1)
                    );
                    let mut values = Vec::with_capacity(chunk.len() * 3);
                    for (order_id, status) in chunk {
                        values.extend([
                            Value::from(*order_id),
                            Value::from(*status),
                            Value::Int(now),
                        ]);
                    }
                    writes.push(sql, values, chunk.len() as u64);
                }
                orders.extend(
                    new.iter()
                        .map(|(id, _)| ((*id).to_owned(), OrderState::New)),
                );
            }
        }

        let mut changes = Vec::new();
        let mut new_lines: Vec<(String, String, i64)> = Vec::new();
        let mut released: Vec<String> = Vec::new();
        for item in items {
            let cause = &item.cause;
            match &item.effect {
                Effect::Adjust { sku, op } => changes.push(Change {
                    sku: sku.clone(),
                    op: *op,
                    cause,
                }),
                Effect::Commerce(CommerceEvent::OrderCreated(order)) => {
                    let state = orders.get_mut(&order.order_id);
                    let Some(state @ OrderState::New) = state else {
                        tracing::info!(order = %order.order_id, "order already recorded or cancelled first; not applied");
                        continue;
                    };
                    // Lines merged per SKU, in SKU order.
                    let mut lines: BTreeMap<String, i64> = BTreeMap::new();
                    for line in &order.line_items {
                        let quantity = lines.entry(line.sku.clone()).or_default();
                        *quantity = quantity.checked_add(line.quantity).ok_or_else(|| {
                            ApplyError::Invalid(format!(
                                "order {}: the quantities of {} overflow",
                                order.order_id, line.sku
                            ))
                        })?;
                    }
                    for (sku, quantity) in &lines {
                        new_lines.push((order.order_id.clone(), sku.clone(), *quantity));
                        let taken = quantity.checked_neg().ok_or_else(|| {
                            ApplyError::Invalid(format!(
                                "order {}: the quantity of {sku} overflows",
                                order.order_id
                            ))
                        })?;
                        changes.push(Change {
                            sku: sku.clone(),
                            op: Op::Add(taken),
                            cause,
                        });
                    }
                    *state = OrderState::Reserved(lines);
                }
                Effect::Commerce(CommerceEvent::OrderCancelled(cancel)) => {
                    match orders.get_mut(&cancel.order_id) {
                        Some(state @ OrderState::New) => {
                            tracing::info!(order = %cancel.order_id, "cancel before its order: tombstone left");
                            *state = OrderState::Cancelled;
                        }
                        Some(state @ OrderState::Reserved(_)) => {
                            let OrderState::Reserved(lines) =
                                std::mem::replace(state, OrderState::Cancelled)
                            else {
                                unreachable!("matched as reserved")
                            };
                            for (sku, quantity) in lines {
                                changes.push(Change {
                                    sku,
                                    op: Op::Add(quantity),
                                    cause,
                                });
                            }
                            released.push(cancel.order_id.clone());
                        }
                        Some(OrderState::Cancelled) | None => {} // already cancelled
                    }
                }
            }
        }
        for chunk in new_lines.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO order_lines (order_id, sku, quantity) VALUES {}",
                params.rows(chunk.len(), 3, 1)
            );
            let mut values = Vec::with_capacity(chunk.len() * 3);
            for (order_id, sku, quantity) in chunk {
                values.extend([
                    Value::from(order_id.as_str()),
                    Value::from(sku.as_str()),
                    Value::Int(*quantity),
                ]);
            }
            writes.push(sql, values, chunk.len() as u64);
        }
        for chunk in released.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE orders SET status = 'cancelled', updated_at = {} \
                 WHERE status = 'reserved' AND order_id IN ({})",
                params.one(1),
                params.list(chunk.len(), 2)
            );
            let mut values = vec![Value::Int(now)];
            values.extend(chunk.iter().map(|id| Value::from(id.as_str())));
            writes.push(sql, values, chunk.len() as u64);
        }
        Ok(changes)
    }

    /// Reads (and on Postgres locks) the orders of `ids` that were there before, with the lines
    /// of those reserved.
    async fn load_orders(
        &self,
        tx: &mut Transaction<'static, Any>,
        ids: &[&str],
        orders: &mut HashMap<String, OrderState>,
    ) -> Result<(), ApplyError> {
        let (lock, params) = (self.row_lock(), self.params());
        let mut reserved = Vec::new();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT order_id, status FROM orders WHERE order_id IN ({}) ORDER BY order_id{lock}",
                params.list(chunk.len(), 1)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&mut **tx).await? {
                let id: String = row.try_get("order_id")?;
                let status: String = row.try_get("status")?;
                if status == "reserved" {
                    reserved.push(id.clone());
                    orders.insert(id, OrderState::Reserved(BTreeMap::new()));
                } else {
                    orders.insert(id, OrderState::Cancelled);
                }
            }
        }
        for chunk in reserved.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT order_id, sku, quantity FROM order_lines WHERE order_id IN ({})",
                params.list(chunk.len(), 1)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&mut **tx).await? {
                let id: String = row.try_get("order_id")?;
                if let Some(OrderState::Reserved(lines)) = orders.get_mut(&id) {
                    lines.insert(row.try_get("sku")?, row.try_get("quantity")?);
                }
            }
        }
        Ok(())
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

    /// Makes `changes` in order under the rows' locks (taken in SKU order), with the thresholds
    /// of `thresholds` set first; the new levels and the outbox rows each change calls for go to
    /// `writes`. Returns the level after each change.
    async fn change_stock(
        &self,
        tx: &mut Transaction<'static, Any>,
        changes: Vec<Change<'_>>,
        thresholds: &BTreeMap<String, i64>,
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
        let ensure = self.store().backend() == Backend::Postgres || !thresholds.is_empty();
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
        for (sku, threshold) in thresholds {
            sqlx::query("UPDATE stock SET threshold = $2 WHERE sku = $1")
                .bind(sku)
                .bind(*threshold)
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
                outbox.push(OutboxRow::new("stock.changed", &changed, cause));
                if previous >= threshold && current < threshold {
                    let low = LowStock {
                        sku: sku.clone(),
                        level: current,
                        threshold,
                        cause_event_id: cause.event_id.clone(),
                    };
                    outbox.push(OutboxRow::new("stock.low", &low, cause));
                }
                if previous > 0 && current <= 0 {
                    let out = OutOfStock {
                        sku: sku.clone(),
                        level: current,
                        cause_event_id: cause.event_id.clone(),
                    };
                    outbox.push(OutboxRow::new("stock.out", &out, cause));
                }
            }
            levels.push(StockLevel {
                sku: change.sku.clone(),
                level: current,
                threshold,
            });
        }
        for chunk in skus.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO stock (sku, level, updated_at) VALUES {} \
                 ON CONFLICT (sku) DO UPDATE SET level = excluded.level, updated_at = excluded.updated_at",
                params.rows(chunk.len(), 3, 1)
            );
            let mut values = Vec::with_capacity(chunk.len() * 3);
            for sku in chunk {
                values.extend([
                    Value::from(*sku),
                    Value::Int(stock[*sku].0),
                    Value::Int(now),
                ]);
            }
            writes.push(sql, values, chunk.len() as u64);
        }
        crate::outbox::insert(writes, params, outbox);
        Ok(levels)
    }
}
