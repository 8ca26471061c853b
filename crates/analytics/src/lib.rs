//! Analytics: every event counted once per minute (of `received_at`) per source and type, with the
//! mean ingest-to-process latency; revenue per currency per hour from orders. SQLite by default,
//! Postgres by `DATABASE_URL`; exactly once in effect under redelivery (the ledger).

#![forbid(unsafe_code)]

pub mod config;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hookbus_bus::{Delivery, Outcome};
use hookbus_service::{BatchHandler, ConsumerApp, HttpError, ServiceError};
use hookbus_store::Store;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{AnalyticsConfig, Config};

/// The consumer's handler: a batch counted in one transaction.
struct Handler {
    store: Store,
    consumer: Arc<str>,
    counted: Counter<u64>,
    repeated: Counter<u64>,
    max_deliveries: u64,
}

impl BatchHandler for Handler {
    async fn handle(&self, batch: Vec<Delivery>) -> Vec<Outcome> {
        let now = hookbus_bus::unix_now().as_millis() as i64;
        let attempts: Vec<u64> = batch.iter().map(|d| d.attempt).collect();
        let events: Vec<store::Counted> = batch
            .into_iter()
            .map(|delivery| store::Counted {
                latency_ms: delivery.event.received_at.as_ref().map_or(0, |t| {
                    now - (t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
                }),
                stream_sequence: delivery.stream_sequence,
                event: delivery.event,
            })
            .collect();
        let results = hookbus_store::apply_split(&self.store, &events, |tx, events| {
            let consumer = self.consumer.clone();
            Box::pin(async move { store::record_batch(tx, &consumer, events).await })
        })
        .await;
        results
            .into_iter()
            .zip(attempts)
            .map(|(result, attempt)| match result {
                Ok(true) => {
                    self.counted.inc();
                    Outcome::Ack
                }
                Ok(false) => {
                    self.repeated.inc();
                    Outcome::Ack
                }
                Err(e) => {
                    tracing::warn!(error = %e, "counting failed");
                    Outcome::retry_unless_last(
                        attempt,
                        self.max_deliveries,
                        Duration::from_millis(500 * attempt.min(10)),
                        e,
                    )
                }
            })
            .collect()
    }
}

/// Runs analytics until `shutdown`: the consumer (starting at `all`) and the stats API.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let settings = config.service;
    let store = Store::open(&settings.database_url, store::migrations()).await?;
    let client = hookbus_bus::connect(&config.nats, "hookbus-analytics").await?;

    let mut app = ConsumerApp::new(&settings.consumer_settings(), &config.nats, &store, &client);
    let counted = Counter::<u64>::default();
    let repeated = Counter::<u64>::default();
    let sub = app.registry.sub_registry_with_prefix("hookbus_analytics");
    sub.register("events_counted", "Events counted", counted.clone());
    sub.register(
        "events_repeated",
        "Deliveries of events counted before (skipped)",
        repeated.clone(),
    );

    let handler = Arc::new(Handler {
        store: store.clone(),
        consumer: settings.consumer.as_str().into(),
        counted,
        repeated,
        max_deliveries: app.max_deliveries(),
    });
    let routes = Router::new()
        .route("/v1/stats/events", get(stats_events))
        .route("/v1/stats/revenue", get(stats_revenue))
        .with_state(store);
    app.run(handler, routes, listener, shutdown).await
}

fn bad_request(message: String) -> Response {
    HttpError::new(StatusCode::BAD_REQUEST, "invalid_query", message).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    HttpError::internal("stats query failed", e).into_response()
}

#[derive(Deserialize)]
struct Range {
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
}

/// What is wrong with a stats query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum QueryError {
    #[error("{field}: {text:?} is neither unix seconds nor an RFC 3339 time")]
    Time { field: &'static str, text: String },
    #[error("from: must not be after to")]
    Order,
}

/// A time as unix seconds or RFC 3339.
fn parse_time(field: &'static str, text: Option<&str>, default: i64) -> Result<i64, QueryError> {
    let Some(text) = text else { return Ok(default) };
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| QueryError::Time {
            field,
            text: text.to_owned(),
        })
}

fn range(query: &Range) -> Result<(i64, i64), QueryError> {
    let from = parse_time("from", query.from.as_deref(), 0)?;
    let to = parse_time("to", query.to.as_deref(), i64::MAX / 2)?;
    if from > to {
        return Err(QueryError::Order);
    }
    Ok((from, to))
}

async fn stats_events(State(store): State<Store>, Query(query): Query<Range>) -> Response {
    let (from, to) = match range(&query) {
        Ok(range) => range,
        Err(e) => return bad_request(e.to_string()),
    };
    let bucket = match query.bucket.as_deref().unwrap_or("minute") {
        "minute" => 60,
        "hour" => 3600,
        other => return bad_request(format!("bucket: {other:?} is not minute or hour")),
    };
    match store::event_counts(&store, from, to, bucket).await {
        Ok(items) => Json(serde_json::json!({ "items": items })).into_response(),
        Err(e) => internal(e),
    }
}

async fn stats_revenue(State(store): State<Store>, Query(query): Query<Range>) -> Response {
    let (from, to) = match range(&query) {
        Ok(range) => range,
        Err(e) => return bad_request(e.to_string()),
    };
    match store::revenue(&store, from, to).await {
        Ok(items) => Json(serde_json::json!({ "items": items })).into_response(),
        Err(e) => internal(e),
    }
}

/// The whole process, configured by `config_path` (or `HOOKBUS_CONFIG`) and the environment.
pub async fn service_main(config_path: Option<PathBuf>) -> Result<(), ServiceError> {
    hookbus_service::run_service("hookbus-analytics", config_path, run).await
}
