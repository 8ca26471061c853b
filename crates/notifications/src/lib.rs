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
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use hookbus_bus::{Delivery, Outcome};
use hookbus_service::{BatchHandler, ConsumerApp, HttpError, ServiceError};
use hookbus_store::Store;
use prometheus_client::metrics::counter::Counter;
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

/// A notification to send: the event's place in the batch, the rule, what it renders to.
struct Notification<'a> {
    event: usize,
    rule: &'a rules::Rule,
    rendered: Rendered,
}

/// What became of an event's rules in this batch.
#[derive(Default)]
struct Progress {
    /// A failure worth another delivery (the last one told).
    retry: Option<String>,
    /// What can never be sent.
    permanent: Vec<String>,
}

impl Progress {
    /// Every rule of the event was sent (now or before).
    fn done(&self) -> bool {
        self.retry.is_none() && self.permanent.is_empty()
    }
}

/// Sends made at once within a batch, at most.
const PARALLEL_SENDS: usize = 32;

impl BatchHandler for Handler {
    /// Sends what a batch's events call for, in parallel, recording each send in the ledger as
    /// it completes (those that complete together in one statement); one outcome per event.
    async fn handle(&self, batch: Vec<Delivery>) -> Vec<Outcome> {
        let ids: Vec<&str> = batch.iter().map(|d| d.event.id.as_str()).collect();
        let sent = match store::sent_among(&self.store, &ids).await {
            Ok(sent) => sent,
            Err(e) => {
                // Nothing is sent without knowing what was sent before.
                let retry = || Progress {
                    retry: Some(format!("ledger: {e}")),
                    permanent: Vec::new(),
                };
                return self.outcomes(&batch, batch.iter().map(|_| retry()).collect());
            }
        };
        let mut progress: Vec<Progress> = batch.iter().map(|_| Progress::default()).collect();
        let mut sends = Vec::new();
        for (event, delivery) in batch.iter().enumerate() {
            let context = self.rules.context(delivery);
            // Every matching rule is tried: a rule that fails does not keep the others from
            // sending.
            for rule in self.rules.matching(&delivery.subject) {
                if sent
                    .get(&delivery.event.id)
                    .is_some_and(|rules| rules.contains(&rule.name))
                {
                    self.metrics.repeated.inc();
                    continue;
                }
                match self.rules.render(rule, &context) {
                    Ok(rendered) => sends.push(Notification {
                        event,
                        rule,
                        rendered,
                    }),
                    Err(e) => progress[event].permanent.push(e.to_string()),
                }
            }
        }
        let mut waiting = sends.into_iter();
        let mut in_flight = FuturesUnordered::new();
        in_flight.extend(
            waiting
                .by_ref()
                .take(PARALLEL_SENDS)
                .map(|send| self.send(&batch, send)),
        );
        while let Some(first) = in_flight.next().await {
            // What completed together is recorded together.
            let mut done = vec![first];
            while let Some(Some(next)) = in_flight.next().now_or_never() {
                done.push(next);
            }
            in_flight.extend(
                waiting
                    .by_ref()
                    .take(done.len())
                    .map(|send| self.send(&batch, send)),
            );
            let mut records = Vec::with_capacity(done.len());
            let mut recorded_for = Vec::with_capacity(done.len());
            for (send, result) in done {
                let delivery = &batch[send.event];
                match result {
                    Ok(()) => {
                        self.metrics.sent.inc();
                        recorded_for.push(send.event);
                        records.push(store::Sent {
                            rule: send.rule.name.clone(),
                            event_id: delivery.event.id.clone(),
                            channel: send.rule.channel.kind().as_str().into(),
                            recipient: send.rendered.recipient,
                            sent_at: unix_now(),
                        });
                    }
                    Err(e) => {
                        self.metrics.failed.inc();
                        let rule = &send.rule.name;
                        if e.is_permanent() {
                            progress[send.event]
                                .permanent
                                .push(format!("rule {rule}: {e}"));
                        } else {
                            tracing::warn!(%rule, event = %delivery.event.id, attempt = delivery.attempt, error = %e, "notification not sent, will retry");
                            progress[send.event].retry = Some(format!("rule {rule}: {e}"));
                        }
                    }
                }
            }
            // Sent but not recorded: a crash here sends them again on redelivery (at least once).
            if let Err(e) = store::record_sent(&self.store, &records).await {
                for event in recorded_for {
                    progress[event].retry = Some(format!("ledger: {e}"));
                }
            }
        }
        let done: Vec<(&str, u64)> = batch
            .iter()
            .zip(&progress)
            .filter(|(_, p)| p.done())
            .map(|(d, _)| (d.event.id.as_str(), d.stream_sequence))
            .collect();
        if let Err(e) = store::finish(&self.store, &self.consumer, &done).await {
            for p in progress.iter_mut().filter(|p| p.done()) {
                p.retry = Some(format!("ledger: {e}"));
            }
        }
        self.outcomes(&batch, progress)
    }
}

impl Handler {
    async fn send<'a>(
        &'a self,
        batch: &'a [Delivery],
        send: Notification<'a>,
    ) -> (Notification<'a>, Result<(), SendError>) {
        let event_id = &batch[send.event].event.id;
        let result = self
            .senders
            .send(
                (&send.rule.name, event_id),
                &send.rule.channel,
                &send.rendered,
            )
            .await;
        (send, result)
    }

    fn outcomes(&self, batch: &[Delivery], progress: Vec<Progress>) -> Vec<Outcome> {
        batch
            .iter()
            .zip(progress)
            .map(
                |(
                    delivery,
                    Progress {
                        retry,
                        mut permanent,
                    },
                )| match retry {
                    // Nothing left to try again: done, or dead-lettered for what can never be sent.
                    None if permanent.is_empty() => Outcome::Ack,
                    None => Outcome::Reject {
                        reason: permanent.join("; "),
                    },
                    // On the last allowed delivery, dead-lettered with every cause.
                    Some(reason) => {
                        let index = (delivery.attempt.saturating_sub(1) as usize)
                            .min(self.retry_backoff.len().saturating_sub(1));
                        permanent.push(reason);
                        Outcome::retry_unless_last(
                            delivery.attempt,
                            self.max_deliveries,
                            self.retry_backoff.get(index).copied().unwrap_or_default(),
                            permanent.join("; "),
                        )
                    }
                },
            )
            .collect()
    }
}

use hookbus_bus::unix_seconds as unix_now;

/// Runs notifications until `shutdown`: the consumer (starting at `new`) and a small HTTP API.
/// Templates are compiled before anything else; a syntax error is returned naming the rule.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let settings = config.service;
    let rules = Rules::compile(&settings).map_err(ServiceError::own)?;
    let subjects = rules.filter_subjects().map_err(ServiceError::own)?;
    tracing::info!(rules = ?rules::names(&rules), "notification rules compiled");
    let senders = Senders::new(
        config::exposed(settings.smtp.url.as_ref()),
        &settings.smtp.from,
        settings.smtp.timeout,
        settings.webhook_timeout,
    )
    .map_err(ServiceError::own)?;
    let store = Store::open(&settings.database_url, store::migrations()).await?;
    let client = hookbus_bus::connect(&config.nats, "hookbus-notifications").await?;

    let mut app = ConsumerApp::new(
        &settings.consumer_settings(subjects),
        &config.nats,
        &store,
        &client,
    );
    let metrics = Metrics::default();
    let sub = app
        .registry
        .sub_registry_with_prefix("hookbus_notifications");
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

    app.spec.ack_wait = settings.ack_wait;
    app.spec.max_deliveries = settings.max_deliveries;
    app.spec.backoff = settings.retry_backoff.clone();
    let handler = Arc::new(Handler {
        rules,
        senders,
        store: store.clone(),
        consumer: settings.consumer.clone(),
        retry_backoff: settings.retry_backoff.clone(),
        max_deliveries: app.max_deliveries(),
        metrics,
    });
    let routes = Router::new()
        .route("/v1/sent", get(list_sent))
        .with_state(store);
    app.run(handler, routes, listener, shutdown).await
}

#[derive(Deserialize)]
struct SentQuery {
    event_id: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/sent?event_id=&limit=`: the ledger, newest first (at most 1000).
async fn list_sent(State(store): State<Store>, Query(query): Query<SentQuery>) -> Response {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return HttpError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "limit: must be 1 to 1000",
        )
        .into_response();
    }
    match store::recent(&store, query.event_id.as_deref(), limit).await {
        Ok(items) => Json(serde_json::json!({ "items": items })).into_response(),
        Err(e) => HttpError::internal("ledger query failed", e).into_response(),
    }
}

/// The whole process, configured by `config_path` (or `HOOKBUS_CONFIG`) and the environment.
pub async fn service_main(config_path: Option<PathBuf>) -> Result<(), ServiceError> {
    hookbus_service::run_service("hookbus-notifications", config_path, run).await
}
