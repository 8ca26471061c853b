//! The orders a batch creates and cancels: which were there before, which its events insert, and
//! the stock changes they make, in event order.

use std::collections::{BTreeMap, HashMap, HashSet};

use hookbus_commerce::CommerceEvent;
use hookbus_store::batch::{Params, ROWS_PER_STATEMENT, Value, Writes};
use hookbus_store::sqlx::{self, Any, Row, Transaction};

use super::{ApplyError, Change, Effect, Item, Op, OrderState};
use crate::store::{Inventory, unix_now};

impl Inventory {
    /// Records the orders the items create or cancel and returns the stock changes they make, in
    /// item order.
    pub(super) async fn settle_orders<'a>(
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
                let values = new.iter().flat_map(|(order_id, status)| {
                    [
                        Value::from(*order_id),
                        Value::from(*status),
                        Value::Int(now),
                    ]
                });
                writes.insert(
                    "INSERT INTO orders (order_id, status, updated_at)",
                    "ON CONFLICT (order_id) DO NOTHING",
                    3,
                    values.collect(),
                );
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
                    // Whatever it was, the order is cancelled after this.
                    let Some(state) = orders.get_mut(&cancel.order_id) else {
                        continue;
                    };
                    match std::mem::replace(state, OrderState::Cancelled) {
                        OrderState::New => {
                            tracing::info!(order = %cancel.order_id, "cancel before its order: tombstone left");
                        }
                        OrderState::Reserved(lines) => {
                            for (sku, quantity) in lines {
                                changes.push(Change {
                                    sku,
                                    op: Op::Add(quantity),
                                    cause,
                                });
                            }
                            released.push(cancel.order_id.clone());
                        }
                        OrderState::Cancelled => {} // already cancelled
                    }
                }
            }
        }
        let values = new_lines.into_iter().flat_map(|(order_id, sku, quantity)| {
            [
                Value::Text(order_id),
                Value::Text(sku),
                Value::Int(quantity),
            ]
        });
        writes.insert(
            "INSERT INTO order_lines (order_id, sku, quantity)",
            "",
            3,
            values.collect(),
        );
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
}
