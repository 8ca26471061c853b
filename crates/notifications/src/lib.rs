//! Notifications: rules from config turn events into an email (SMTP through lettre), a JSON post
//! to a chat incoming webhook, or a log line, rendered with minijinja templates compiled at
//! start-up. A ledger of sent notifications (one row per rule and event) keeps a redelivered event
//! from being sent again once its send was recorded; a send that keeps failing is retried with
//! back-off and then dead-lettered.

#![forbid(unsafe_code)]

pub mod channels;
pub mod config;
pub mod rules;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hookbus_bus::{ConsumerSpec, Delivery, Outcome};
use hookbus_store::Store;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use channels::{SendError, Senders};
pub use config::{ChannelKind, Config, NotificationsConfig, RuleConfig};
pub use rules::{Rendered, RuleError, Rules};

#[derive(Clone, Default)]
struct Metrics {
    sent: Counter<u64>,
    failed: Counter<u64>,
    repeated: Counter<u64>,
}

struct Handler {
    rules: Rules,
    senders: Senders,
    store: Store,
    consumer: String,
    retry_backoff: Vec<Duration>,
    max_deliveries: u64,
    metrics: Metrics,
}

impl Handler {
    async fn handle(&self, delivery: Delivery) -> Outcome {
        let context = self.rules.context(&delivery);
        let event_id = &delivery.event.id;
        // Every matching rule is tried: a rule that fails does not keep the others from sending.
        let mut retry: Option<String> = None;
        let mut permanent: Vec<String> = Vec::new();
        for rule in self.rules.matching(&delivery.subject) {
            match store::was_sent(&self.store, &rule.name, event_id).await {
                Ok(true) => {
                    self.metrics.repeated.inc();
                    continue;
                }
                Ok(false) => {}
                Err(e) => {
                    retry = Some(format!("ledger: {e}"));
                    continue;
                }
            }
            let rendered = match self.rules.render(rule, &context) {
                Ok(rendered) => rendered,
                Err(e) => {
                    permanent.push(e.to_string());
                    continue;
                }
            };
            if let Err(e) = self
                .senders
                .send((&rule.name, event_id), &rule.channel, &rendered)
                .await
            {
                self.metrics.failed.inc();
                if e.is_permanent() {
                    permanent.push(format!("rule {}: {e}", rule.name));
                    continue;
                }
                tracing::warn!(rule = %rule.name, event = %event_id, attempt = delivery.attempt, error = %e, "notification not sent, will retry");
                retry = Some(format!("rule {}: {e}", rule.name));
                continue;
            }
            self.metrics.sent.inc();
            let sent = store::Sent {
                rule: rule.name.clone(),
                event_id: event_id.clone(),
                channel: rule.channel.kind().as_str().into(),
                recipient: rendered.recipient,
                sent_at: unix_now(),
            };
            // Sent but not recorded: a crash here sends it again on redelivery (at least once).
            if let Err(e) = store::record_sent(&self.store, &sent).await {
                retry = Some(format!("ledger: {e}"));
            }
        }
        if retry.is_none()
            && permanent.is_empty()
            && let Err(e) = store::finish(
                &self.store,
                &self.consumer,
                event_id,
                delivery.stream_sequence,
            )
            .await
        {
            retry = Some(format!("ledger: {e}"));
        }
        match retry {
            // Nothing left to try again: done, or dead-lettered for what can never be sent.
            None if permanent.is_empty() => Outcome::Ack,
            None => Outcome::Reject {
                reason: permanent.join("; "),
            },
            // The last allowed delivery: dead-letter with every cause rather than the runtime's
            // generic "still failing".
            Some(reason) if delivery.attempt >= self.max_deliveries => {
                permanent.push(format!(
                    "{reason} (gave up after {} deliveries)",
                    delivery.attempt
                ));
                Outcome::Reject {
                    reason: permanent.join("; "),
                }
            }
            Some(_) => {
                let index = (delivery.attempt.saturating_sub(1) as usize)
                    .min(self.retry_backoff.len().saturating_sub(1));
                Outcome::Retry {
                    after: self.retry_backoff.get(index).copied().unwrap_or_default(),
                }
            }
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
}

struct AppState {
    store: Store,
    client: async_nats::Client,
}

/// Runs notifications until `shutdown`: the consumer (starting at `new`) and a small HTTP API.
/// Templates are compiled before anything else; a syntax error is returned naming the rule.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = config.notifications;
    let rules = Rules::compile(&settings)?;
    let subjects = rules.filter_subjects().map_err(anyhow::Error::msg)?;
    tracing::info!(rules = ?rules::names(&rules), "notification rules compiled");
    let senders = Senders::new(
        config::exposed(settings.smtp.url.as_ref()),
        &settings.smtp.from,
        settings.smtp.timeout,
        settings.webhook_timeout,
    )
    .map_err(anyhow::Error::msg)?;
    let store = Store::open(&settings.database_url, store::migrations()).await?;
    let client = hookbus_bus::connect(&config.nats, "hookbus-notifications").await?;

    let mut registry = Registry::default();
    let metrics = Metrics::default();
    let sub = registry.sub_registry_with_prefix("hookbus_notifications");
    sub.register("sent", "Notifications sent", metrics.sent.clone());
    sub.register(
        "failed",
        "Sends that failed (retried or dead-lettered)",
        metrics.failed.clone(),
    );
    sub.register(
        "repeated",
        "Notifications skipped because the ledger shows them sent",
        metrics.repeated.clone(),
    );

    let mut spec = ConsumerSpec::new(
        settings.consumer.clone(),
        &subjects.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .start(settings.start)
    .concurrency(settings.concurrency)
    .metrics(&hookbus_bus::ConsumerMetrics::register(&mut registry));
    spec.stream = config.nats.events.clone();
    spec.ack_wait = settings.ack_wait;
    spec.max_deliveries = settings.max_deliveries;
    spec.backoff = settings.retry_backoff.clone();
    hookbus_store::track(&mut spec, store.pool());
    let handler = Arc::new(Handler {
        rules,
        senders,
        store: store.clone(),
        consumer: settings.consumer.clone(),
        retry_backoff: settings.retry_backoff.clone(),
        max_deliveries: settings.max_deliveries as u64,
        metrics,
    });
    let consumer = tokio::spawn(hookbus_bus::run_consumer(
        client.clone(),
        spec,
        move |delivery| {
            let handler = handler.clone();
            async move { handler.handle(delivery).await }
        },
        shutdown.clone(),
    ));

    let state = Arc::new(AppState {
        store,
        client: client.clone(),
    });
    let app = Router::new()
        .route("/v1/sent", get(list_sent))
        .route("/readyz", get(readyz))
        .with_state(state);
    hookbus_telemetry::serve(
        "notifications",
        listener,
        app,
        registry,
        shutdown.clone().cancelled_owned(),
    )
    .await?;
    consumer.await??;
    Ok(())
}

#[derive(Deserialize)]
struct SentQuery {
    event_id: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/sent?event_id=&limit=`: the ledger, newest first (at most 1000).
async fn list_sent(State(state): State<Arc<AppState>>, Query(query): Query<SentQuery>) -> Response {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        let body = serde_json::json!({"error": {"code": "invalid_query", "message": "limit: must be 1 to 1000"}});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    match store::recent(&state.store, query.event_id.as_deref(), limit).await {
        Ok(items) => Json(serde_json::json!({ "items": items })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "ledger query failed");
            let body =
                serde_json::json!({"error": {"code": "internal", "message": "internal error"}});
            (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
        }
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    hookbus_telemetry::readiness(&[
        ("database", state.store.is_reachable().await),
        ("broker_connected", hookbus_bus::is_connected(&state.client)),
    ])
}

/// The whole process, configured by `config_path` (or `HOOKBUS_CONFIG`) and the environment.
pub async fn service_main(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    hookbus_bus::service_main(
        "hookbus-notifications",
        config_path,
        Config::load,
        |c| (&c.telemetry, c.notifications.listen),
        run,
    )
    .await
    .map_err(anyhow::Error::from_boxed)
}
