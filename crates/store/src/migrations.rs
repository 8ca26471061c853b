//! Migrations embedded in the binary (no files to ship), run by sqlx's migrator.

use std::borrow::Cow;

use futures_util::future::BoxFuture;
use sqlx::AnyPool;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

/// An ordered list of `(version, description, sql)`. Versions below 100 belong to the ledger.
#[derive(Debug, Clone, Default)]
pub struct Migrations(Vec<(i64, &'static str, &'static str)>);

impl Migrations {
    /// No migrations of the caller's own (the ledger's are always applied).
    pub const fn new_const() -> Self {
        Self(Vec::new())
    }

    pub fn new(migrations: &[(i64, &'static str, &'static str)]) -> Self {
        Self(migrations.to_vec())
    }

    pub(crate) fn with_ledger(mut self) -> Self {
        self.0.insert(
            0,
            (
                1,
                "processed events ledger",
                include_str!("../migrations/0001_processed_events.sql"),
            ),
        );
        self.0.insert(
            1,
            (
                2,
                "consumer checkpoints",
                include_str!("../migrations/0002_consumer_checkpoints.sql"),
            ),
        );
        self
    }

    pub(crate) async fn run(self, pool: &AnyPool) -> Result<(), sqlx::migrate::MigrateError> {
        Migrator::new(self).await?.run(pool).await
    }
}

impl MigrationSource<'static> for Migrations {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .into_iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        sqlx::AssertSqlSafe(sql).into_sql_str(),
                        false,
                    )
                })
                .collect())
        })
    }
}
