//! Stock in SQL and the effects of events on it, each in one transaction with its ledger claim and
//! its outbox rows.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hookbus_proto::commerce::v1::{OrderCancelled, OrderCreated};
use hookbus_proto::inventory::v1::{LowStock, OutOfStock, StockLevelChanged};
use hookbus_proto::v1::Event;
use hookbus_store::sqlx::{self, Any, Row, Transaction};
use hookbus_store::{Migrations, Store, StoreError};
use prost::Message;

/// Versions from 100 on: the service's own tables (below 100 is the ledger's).
pub fn migrations() -> Migrations {
    Migrations::new(&[(
        100,
        "inventory",
        include_str!("../migrations/0100_inventory.sql"),
    )])
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
}

/// One SKU's stock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StockLevel {
    pub sku: String,
    pub level: i64,
    pub threshold: i64,
}

/// Thresholds: per SKU (configuration, then the row's own), else the default.
#[derive(Debug, Clone)]
pub struct Thresholds {
    pub default: i64,
    pub per_sku: BTreeMap<String, i64>,
}

impl Thresholds {
    fn of(&self, sku: &str, stored: Option<i64>) -> i64 {
        stored
            .or_else(|| self.per_sku.get(sku).copied())
            .unwrap_or(self.default)
    }
}

/// The cause of a change, carried into the events the outbox publishes.
#[derive(Debug, Clone, Default)]
pub struct Cause {
    pub event_id: String,
    /// The causing event's `traceparent`, continued by the emitted events.
    pub traceparent: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Inventory {
    store: Store,
    thresholds: Thresholds,
}

impl Inventory {
    pub fn new(store: Store, thresholds: Thresholds) -> Self {
        Self { store, thresholds }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reserves an order's stock, once. An order cancelled before it arrived (a tombstone) is not
    /// applied; an order already recorded is not applied again.
    pub async fn order_created(
        &self,
        tx: &mut Transaction<'static, Any>,
        order: &OrderCreated,
        cause: &Cause,
    ) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO orders (order_id, status, updated_at) VALUES ($1, 'reserved', $2) \
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(&order.order_id)
        .bind(unix_now())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tracing::info!(order = %order.order_id, "order already recorded or cancelled first; not applied");
            return Ok(());
        }
        // Lines merged per SKU and in SKU order, so concurrent orders lock rows in one order.
        let mut lines: BTreeMap<&str, i64> = BTreeMap::new();
        for item in &order.line_items {
            *lines.entry(item.sku.as_str()).or_default() += item.quantity;
        }
        for (sku, quantity) in lines {
            sqlx::query("INSERT INTO order_lines (order_id, sku, quantity) VALUES ($1, $2, $3)")
                .bind(&order.order_id)
                .bind(sku)
                .bind(quantity)
                .execute(&mut **tx)
                .await?;
            self.change(tx, sku, |level| level - quantity, cause)
                .await?;
        }
        Ok(())
    }

    /// Releases a recorded reservation, once. A cancel that comes first leaves a tombstone.
    pub async fn order_cancelled(
        &self,
        tx: &mut Transaction<'static, Any>,
        cancel: &OrderCancelled,
        cause: &Cause,
    ) -> Result<(), StoreError> {
        let tombstone = sqlx::query(
            "INSERT INTO orders (order_id, status, updated_at) VALUES ($1, 'cancelled', $2) \
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(&cancel.order_id)
        .bind(unix_now())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if tombstone == 1 {
            tracing::info!(order = %cancel.order_id, "cancel before its order: tombstone left");
            return Ok(());
        }
        let released = sqlx::query(
            "UPDATE orders SET status = 'cancelled', updated_at = $2 \
             WHERE order_id = $1 AND status = 'reserved'",
        )
        .bind(&cancel.order_id)
        .bind(unix_now())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if released == 0 {
            return Ok(()); // already cancelled
        }
        let lines =
            sqlx::query("SELECT sku, quantity FROM order_lines WHERE order_id = $1 ORDER BY sku")
                .bind(&cancel.order_id)
                .fetch_all(&mut **tx)
                .await?;
        for line in lines {
            let sku: String = line.try_get("sku")?;
            let quantity: i64 = line.try_get("quantity")?;
            self.change(tx, &sku, |level| level + quantity, cause)
                .await?;
        }
        Ok(())
    }

    /// Sets or adds to a SKU's level (restock, correction, `PUT /v1/stock/{sku}`).
    pub async fn adjust(
        &self,
        tx: &mut Transaction<'static, Any>,
        sku: &str,
        new_level: impl Fn(i64) -> i64,
        threshold: Option<i64>,
        cause: &Cause,
    ) -> Result<StockLevel, StoreError> {
        if let Some(threshold) = threshold {
            self.ensure_row(tx, sku).await?;
            sqlx::query("UPDATE stock SET threshold = $2 WHERE sku = $1")
                .bind(sku)
                .bind(threshold)
                .execute(&mut **tx)
                .await?;
        }
        self.change(tx, sku, new_level, cause).await
    }

    async fn ensure_row(
        &self,
        tx: &mut Transaction<'static, Any>,
        sku: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO stock (sku, level, updated_at) VALUES ($1, 0, $2) ON CONFLICT (sku) DO NOTHING",
        )
        .bind(sku)
        .bind(unix_now())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Changes a level under the row's lock and writes the outbox rows the change calls for.
    async fn change(
        &self,
        tx: &mut Transaction<'static, Any>,
        sku: &str,
        new_level: impl Fn(i64) -> i64,
        cause: &Cause,
    ) -> Result<StockLevel, StoreError> {
        self.ensure_row(tx, sku).await?;
        // A no-op update takes the row lock (Postgres) before the read.
        let row = sqlx::query(
            "UPDATE stock SET updated_at = $2 WHERE sku = $1 RETURNING level, threshold",
        )
        .bind(sku)
        .bind(unix_now())
        .fetch_one(&mut **tx)
        .await?;
        let previous: i64 = row.try_get("level")?;
        let threshold = self
            .thresholds
            .of(sku, row.try_get::<Option<i64>, _>("threshold")?);
        let current = new_level(previous);
        sqlx::query("UPDATE stock SET level = $2 WHERE sku = $1")
            .bind(sku)
            .bind(current)
            .execute(&mut **tx)
            .await?;
        if current != previous {
            let changed = StockLevelChanged {
                sku: sku.to_owned(),
                previous,
                current,
                cause_event_id: cause.event_id.clone(),
            };
            enqueue(tx, "stock.changed", &changed, cause).await?;
            if previous >= threshold && current < threshold {
                let low = LowStock {
                    sku: sku.to_owned(),
                    level: current,
                    threshold,
                    cause_event_id: cause.event_id.clone(),
                };
                enqueue(tx, "stock.low", &low, cause).await?;
            }
            if previous > 0 && current <= 0 {
                let out = OutOfStock {
                    sku: sku.to_owned(),
                    level: current,
                    cause_event_id: cause.event_id.clone(),
                };
                enqueue(tx, "stock.out", &out, cause).await?;
            }
        }
        Ok(StockLevel {
            sku: sku.to_owned(),
            level: current,
            threshold,
        })
    }

    pub async fn level(&self, sku: &str) -> Result<Option<StockLevel>, StoreError> {
        let row = sqlx::query("SELECT sku, level, threshold FROM stock WHERE sku = $1")
            .bind(sku)
            .fetch_optional(self.store.pool())
            .await?;
        row.map(|row| self.level_of(&row)).transpose()
    }

    /// SKUs whose level is below `below`, lowest first.
    pub async fn below(&self, below: i64) -> Result<Vec<StockLevel>, StoreError> {
        let rows = sqlx::query(
            "SELECT sku, level, threshold FROM stock WHERE level < $1 ORDER BY level, sku",
        )
        .bind(below)
        .fetch_all(self.store.pool())
        .await?;
        rows.iter().map(|row| self.level_of(row)).collect()
    }

    fn level_of(&self, row: &sqlx::any::AnyRow) -> Result<StockLevel, StoreError> {
        let sku: String = row.try_get("sku")?;
        let threshold = self.thresholds.of(&sku, row.try_get("threshold")?);
        Ok(StockLevel {
            level: row.try_get("level")?,
            sku,
            threshold,
        })
    }
}

/// A typed event the relay will publish as `events.inventory.<type>`.
async fn enqueue<M: hookbus_proto::Named>(
    tx: &mut Transaction<'static, Any>,
    event_type: &str,
    message: &M,
    cause: &Cause,
) -> Result<(), StoreError> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let event = Event {
        id: id.clone(),
        source: "inventory".into(),
        r#type: event_type.into(),
        provider: "hookbus".into(),
        received_at: Some(hookbus_proto::Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
        }),
        content_type: hookbus_proto::content_type_for::<M>(),
        payload: message.encode_to_vec().into(),
        ..Event::default()
    };
    sqlx::query(
        "INSERT INTO outbox (id, subject, event, traceparent, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(format!("events.inventory.{event_type}"))
    .bind(STANDARD.encode(event.encode_to_vec()))
    .bind(cause.traceparent.as_deref())
    .bind(now.as_secs() as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
