//! SQL stores for the consumers: one code path for SQLite (the embedded default, a file) and
//! Postgres (`DATABASE_URL=postgres://…`) through sqlx's `Any` driver, with embedded migrations
//! and the `processed_events` ledger that makes an effect exactly-once under redelivery.
//!
//! Queries use `$1`-style parameters, which both SQLite and Postgres accept.

#![forbid(unsafe_code)]

pub mod batch;
mod ledger;
mod migrations;

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection};

pub use batch::{Splittable, Writes, apply_split, claim_all, claim_into};
pub use ledger::{
    checkpoint, checkpointer, claim, last_sequence, prune, resume_point, save_checkpoint, track,
};
pub use migrations::Migrations;
pub use sqlx;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration of {url} failed: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// A batch that failed as a whole (its first item carries the cause).
    #[error("{0}")]
    Batch(String),
}

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool with the migrations applied.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens `url` (`sqlite://path/to/file.db` — created when missing — or `postgres://…`) and
    /// applies the ledger's migrations and `migrations`.
    pub async fn open(url: &str, migrations: Migrations) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let connect_url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}mode=rwc")
            }
            _ => url.to_owned(),
        };
        // One plain connection first: a wrong URL fails now with the driver's own error, instead
        // of after the pool's acquire timeout.
        let probe = sqlx::AnyConnection::connect(&connect_url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact(url),
                source,
            })?;
        probe.close().await?;
        let sqlite = backend == Backend::Sqlite;
        let pool = AnyPoolOptions::new()
            // SQLite has one writer; more connections only queue on its lock.
            .max_connections(if sqlite { 1 } else { 10 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL with NORMAL sync: a commit survives a process crash (what the
                        // ledger's exactly-once needs); the last ones may be lost on power loss.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 5000",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .acquire_timeout(Duration::from_secs(10))
            .connect(&connect_url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact(url),
                source,
            })?;
        migrations
            .with_ledger()
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: redact(url),
                source,
            })?;
        Ok(Self { pool, backend })
    }

    /// Whether the database answers a trivial query (for `/readyz`).
    pub async fn is_reachable(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://app:s3cret@db:5432/hookbus"),
            "postgres://app:***@db:5432/hookbus"
        );
        assert_eq!(
            super::redact("sqlite://./data/x.db"),
            "sqlite://./data/x.db"
        );
    }
}

/// For tests: a new, empty Postgres database on the machine's server (`HOOKBUS_TEST_POSTGRES`,
/// default `postgres://postgres@127.0.0.1:5432`), one per test.
pub mod testing {
    use sqlx::Connection;

    /// Creates a database with a unique name and returns its URL.
    pub async fn fresh_postgres_database() -> Result<String, sqlx::Error> {
        let server = std::env::var("HOOKBUS_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        fresh_postgres_database_on(&server).await
    }

    /// Creates a database with a unique name on `server` (`postgres://user@host:port`) and
    /// returns its URL.
    pub async fn fresh_postgres_database_on(server: &str) -> Result<String, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let server = server.trim_end_matches('/');
        let name = format!(
            "hookbus_test_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let mut admin = sqlx::AnyConnection::connect(&format!("{server}/postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        Ok(format!("{server}/{name}"))
    }

    /// Drops a database made by [`fresh_postgres_database`].
    pub async fn drop_postgres_database(url: &str) -> Result<(), sqlx::Error> {
        let (server, name) = url.rsplit_once('/').unwrap_or((url, ""));
        let mut admin = sqlx::AnyConnection::connect(&format!("{server}/postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await
    }
}
