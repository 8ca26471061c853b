//! Stock in SQL: the inventory, its thresholds and what the API reads. What events do to it is in
//! [`crate::batch`].

use std::collections::BTreeMap;

use hookbus_store::sqlx::{self, Row};
use hookbus_store::{Migrations, Store, StoreError};

/// Versions from 100 on: the service's own tables (below 100 is the ledger's).
pub fn migrations() -> Migrations {
    Migrations::new(&[(
        100,
        "inventory",
        include_str!("../migrations/0100_inventory.sql"),
    )])
}

pub(crate) use hookbus_bus::unix_seconds as unix_now;

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
    pub(crate) fn of(&self, sku: &str, stored: Option<i64>) -> i64 {
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

    pub(crate) fn thresholds(&self) -> &Thresholds {
        &self.thresholds
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
