//! The outbox: rows written with the changes that cause them, and the relay that publishes unsent
//! rows in order, pipelined, with the row id as `Nats-Msg-Id`, then marks them sent. A relay that
//! dies between the two publishes the row again on restart, and JetStream drops the repeat within
//! its duplicate window; two replicas relaying at once are safe the same way.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::future::join_all;
use hookbus_bus::{Built, EventBuilder, EventType, Publisher, SourceName};
use hookbus_proto::v1::Event;
use hookbus_store::batch::{Params, ROWS_PER_STATEMENT, Value, Writes};
use hookbus_store::sqlx::{self, Row};
use hookbus_store::{Store, StoreError};
use prost::Message;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::{Cause, unix_now};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("outbox row {id}: {reason}")]
    Row { id: String, reason: String },
    #[error("publish of outbox row {id}: {source}")]
    Publish {
        id: String,
        #[source]
        source: hookbus_bus::PublishError,
    },
}

impl From<sqlx::Error> for RelayError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

#[derive(Clone, Debug)]
pub struct Relay {
    pub store: Store,
    pub publisher: Publisher,
    pub wake: Arc<Notify>,
}

impl Relay {
    /// Relays until `shutdown`, waking on `wake` or every `interval`.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.relay_once().await {
                tracing::warn!(error = %e, "outbox relay failed, retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Publishes one row with its id as `Nats-Msg-Id`; returns the id.
    async fn publish_row(&self, row: &sqlx::any::AnyRow) -> Result<String, RelayError> {
        let id: String = row.try_get("id")?;
        let subject: String = row.try_get("subject")?;
        let encoded: String = row.try_get("event")?;
        let traceparent: Option<String> = row.try_get("traceparent")?;
        let bad = |reason: String| RelayError::Row {
            id: id.clone(),
            reason,
        };
        let bytes = STANDARD.decode(encoded).map_err(|e| bad(e.to_string()))?;
        let event = Event::decode(bytes.as_slice()).map_err(|e| bad(e.to_string()))?;
        let mut headers = async_nats::HeaderMap::new();
        if let Some(traceparent) = &traceparent {
            headers.insert("traceparent", traceparent.as_str());
        }
        let parent = hookbus_telemetry::context_from_nats(&headers);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        self.publisher
            .publish_event(subject, &event, &id, deadline, &parent)
            .await
            .map_err(|source| RelayError::Publish {
                id: id.clone(),
                source,
            })?;
        Ok(id)
    }

    /// Publishes every unsent row, in batches of 500 whose publishes are sent in id order without
    /// waiting for each PubAck (the acks are awaited together), then marks each batch's
    /// published rows sent in one statement; returns how many. A row whose publish fails is
    /// published again by the next round, after the rows behind it.
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let mut relayed = 0;
        loop {
            let rows = sqlx::query(
                "SELECT id, subject, event, traceparent FROM outbox \
                 WHERE sent_at IS NULL ORDER BY id LIMIT 500",
            )
            .fetch_all(self.store.pool())
            .await?;
            if rows.is_empty() {
                return Ok(relayed);
            }
            let results = join_all(rows.iter().map(|row| self.publish_row(row))).await;
            let mut published = Vec::with_capacity(rows.len());
            let mut failure = None;
            for result in results {
                match result {
                    Ok(id) => published.push(id),
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
            hookbus_service::failpoint("inventory-relay-after-publish");
            // One statement marks the whole batch: fewer writes competing with the consumer's
            // transactions (SQLite has one writer).
            let params = Params::of(self.store.backend());
            for chunk in published.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "UPDATE outbox SET sent_at = {} WHERE id IN ({})",
                    params.one(1),
                    params.list(chunk.len(), 2)
                );
                let mut update = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(unix_now());
                for id in chunk {
                    update = update.bind(id);
                }
                update.execute(self.store.pool()).await?;
            }
            relayed += published.len();
            if let Some(e) = failure {
                return Err(e);
            }
        }
    }
}

/// The source of the inventory's events, and their types: parsed once, not for every row.
static SOURCE: LazyLock<SourceName> =
    LazyLock::new(|| SourceName::parse("inventory").expect("a source name"));
pub(crate) static STOCK_CHANGED: LazyLock<EventType> =
    LazyLock::new(|| event_type("stock.changed"));
pub(crate) static STOCK_LOW: LazyLock<EventType> = LazyLock::new(|| event_type("stock.low"));
pub(crate) static STOCK_OUT: LazyLock<EventType> = LazyLock::new(|| event_type("stock.out"));

fn event_type(name: &str) -> EventType {
    EventType::parse(name).expect("the inventory's event types are valid")
}

/// An outbox row: a typed event the relay will publish as `events.inventory.<type>`.
pub(crate) struct OutboxRow {
    id: String,
    subject: String,
    /// The encoded `Event`, in base64.
    event: String,
    traceparent: Option<String>,
    created_at: i64,
}

impl OutboxRow {
    /// The row of `message`, an event of type `event_type` that `cause` caused.
    pub(crate) fn new<M: hookbus_proto::Named>(
        event_type: &EventType,
        message: &M,
        cause: &Cause,
    ) -> Self {
        let Built { subject, event } =
            EventBuilder::new(&SOURCE, event_type, message.encode_to_vec())
                .content_type(hookbus_proto::content_type_for::<M>())
                .build();
        Self {
            id: event.id.clone(),
            subject,
            created_at: event.received_at.map_or(0, |at| at.seconds),
            event: STANDARD.encode(event.encode_to_vec()),
            traceparent: cause.traceparent.clone(),
        }
    }
}

/// Adds the statements that write `rows` to `writes`.
pub(crate) fn insert(writes: &mut Writes, rows: Vec<OutboxRow>) {
    let values = rows.into_iter().flat_map(|row| {
        [
            Value::Text(row.id),
            Value::Text(row.subject),
            Value::Text(row.event),
            Value::NullableText(row.traceparent),
            Value::Int(row.created_at),
        ]
    });
    writes.insert(
        "INSERT INTO outbox (id, subject, event, traceparent, created_at)",
        "",
        5,
        values.collect(),
    );
}
