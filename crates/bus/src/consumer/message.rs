//! One batch at a time: a handler slot, the handler with in-progress acks, what each message's
//! outcome does (ack, NAK with back-off, dead letter), and the last deliveries that timed out.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, join_all};
use hookbus_proto::v1::Event;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::dlq::{self, DeadLetter};
use crate::streams::EVENTS_STREAM;

use super::spec::{ConsumerSpec, Delivery, Outcome};

/// A batch handler with its future boxed: what the runtime calls.
pub(super) type Handler =
    Arc<dyn Fn(Vec<Delivery>) -> BoxFuture<'static, Vec<Outcome>> + Send + Sync>;

/// State shared by the fetch loop and the batch tasks.
pub(super) struct Shared {
    pub(super) js: jetstream::Context,
    pub(super) spec: ConsumerSpec,
    pub(super) handler: Handler,
    /// The consumer's ack floor as last seen on the server: where a recreated consumer resumes.
    pub(super) ack_floor: AtomicU64,
}

/// How long a message handed back on shutdown waits before it is delivered again. Longer than a
/// pull's expiry (1 s): an immediate NAK would be redelivered at once into the closing pull, NAK'd
/// again, and so on until its deliveries ran out and it was dead-lettered unprocessed.
pub(super) const SHUTDOWN_NAK_DELAY: Duration = Duration::from_secs(2);

/// Ticks every third of `ack_wait`, the first one a third from now. (Not `interval` and a first
/// `tick().await`: that first tick waits for the timer wheel's next millisecond, which costs about
/// a millisecond per batch.)
pub(super) fn progress_ticks(spec: &ConsumerSpec) -> tokio::time::Interval {
    let period = spec.ack_wait / 3;
    tokio::time::interval_at(tokio::time::Instant::now() + period, period)
}

/// Keeps every message's ack deadline alive.
async fn in_progress(messages: &[jetstream::Message]) {
    for message in messages {
        let _ = message.ack_with(AckKind::Progress).await;
    }
}

/// Hands messages back to the server on shutdown, confirmed, so that when the runtime returns
/// the server has them.
pub(super) async fn hand_back(messages: &[jetstream::Message]) {
    join_all(
        messages
            .iter()
            .map(|m| m.double_ack_with(AckKind::Nak(Some(SHUTDOWN_NAK_DELAY)))),
    )
    .await;
}

/// What a message's delivery info says.
#[derive(Clone, Copy)]
struct Pulled {
    stream_sequence: u64,
    attempt: u64,
}

impl Pulled {
    fn of(message: &jetstream::Message) -> Self {
        let (stream_sequence, attempt) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered.max(1) as u64),
            Err(_) => (0, 1),
        };
        Self {
            stream_sequence,
            attempt,
        }
    }
}

/// Runs the handler on one batch and settles each message by its outcome. A message that is not
/// an event is dead-lettered before the handler sees the others.
pub(super) async fn process(
    shared: &Shared,
    messages: Vec<jetstream::Message>,
    cancel: CancellationToken,
) {
    let spec = &shared.spec;
    let mut kept = Vec::with_capacity(messages.len());
    let mut pulled = Vec::with_capacity(messages.len());
    let mut deliveries = Vec::with_capacity(messages.len());
    for message in messages {
        let info = Pulled::of(&message);
        match Event::decode(message.payload.clone()) {
            Ok(event) => {
                deliveries.push(Delivery {
                    event,
                    subject: message.subject.to_string(),
                    stream_sequence: info.stream_sequence,
                    attempt: info.attempt,
                    headers: message.headers.clone().unwrap_or_default(),
                });
                kept.push(message);
                pulled.push(info);
            }
            Err(e) => {
                let reason = format!("payload is not a hookbus.v1.Event: {e}");
                dead_letter(shared, &message, info, &reason).await;
            }
        }
    }
    let messages = kept;
    let Some(first) = deliveries.first() else {
        return;
    };
    let single = deliveries.len() == 1;
    let span = tracing::info_span!(
        "consume",
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation = "process",
        messaging.destination.name = %first.subject,
        messaging.consumer.group.name = %spec.name,
        messaging.message.id = tracing::field::Empty,
        messaging.batch.message_count = deliveries.len(),
        attempt = first.attempt,
    );
    // A child of the first message's producer, linked to the others'.
    hookbus_telemetry::set_parent_from_nats(&span, &first.headers);
    if single {
        span.record("messaging.message.id", first.event.id.as_str());
    } else {
        for delivery in &deliveries[1..] {
            hookbus_telemetry::link_from_nats(&span, &delivery.headers);
        }
    }

    // The handler runs in its own task: a panic there is a failure, not the end of the consumer.
    let started = std::time::Instant::now();
    let mut work = tokio::spawn((shared.handler)(deliveries).instrument(span.clone()));
    let mut progress = progress_ticks(spec);
    let outcomes = loop {
        tokio::select! {
            result = &mut work => break match result {
                Ok(outcomes) => {
                    if outcomes.len() != pulled.len() {
                        span.in_scope(|| tracing::error!(
                            outcomes = outcomes.len(),
                            messages = pulled.len(),
                            "the handler did not answer one outcome per message; the rest are retried"
                        ));
                    }
                    outcomes
                }
                Err(e) => {
                    span.in_scope(|| tracing::error!(error = %e, "handler panicked"));
                    Vec::new()
                }
            },
            _ = progress.tick(), if spec.progress_acks => in_progress(&messages).await,
            () = cancel.cancelled() => {
                work.abort();
                hand_back(&messages).await;
                span.in_scope(|| tracing::info!("handler stopped by shutdown; batch NAK'd"));
                return;
            }
        }
    };
    let labels = spec.labels();
    let metrics = &spec.metrics;
    metrics
        .handler_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    metrics
        .batch_messages
        .get_or_create(&labels)
        .observe(pulled.len() as f64);
    settle(shared, &labels, messages, pulled, outcomes)
        .instrument(span)
        .await;
}

/// Acks, NAKs or dead-letters each message by its outcome (a missing outcome is a retry).
async fn settle(
    shared: &Shared,
    labels: &crate::ConsumerLabels,
    messages: Vec<jetstream::Message>,
    pulled: Vec<Pulled>,
    outcomes: Vec<Outcome>,
) {
    let spec = &shared.spec;
    let metrics = &spec.metrics;
    let mut outcomes = outcomes.into_iter();
    let mut acks = Vec::with_capacity(messages.len());
    for (message, info) in messages.into_iter().zip(pulled) {
        let attempt = info.attempt;
        let outcome = outcomes.next().unwrap_or(Outcome::Retry {
            after: spec.backoff_for(attempt),
        });
        match outcome {
            Outcome::Ack => acks.push(message),
            Outcome::Retry { after } if (attempt as i64) < spec.max_deliveries => {
                tracing::info!(
                    ?after,
                    attempt,
                    sequence = info.stream_sequence,
                    "handler asked for a retry"
                );
                metrics.retried.get_or_create(labels).inc();
                let _ = message.ack_with(AckKind::Nak(Some(after))).await;
            }
            Outcome::Retry { .. } => {
                let reason = format!("still failing after {attempt} deliveries");
                dead_letter(shared, &message, info, &reason).await;
            }
            Outcome::Reject { reason } => dead_letter(shared, &message, info, &reason).await,
        }
    }
    if acks.is_empty() {
        return;
    }
    metrics
        .processed
        .get_or_create(labels)
        .inc_by(acks.len() as u64);
    // Not lost when an ack is: the server redelivers after ack_wait and the handler is idempotent.
    if spec.confirm_acks {
        for result in join_all(acks.iter().map(|m| m.double_ack())).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "ack not confirmed");
            }
        }
    } else {
        for message in &acks {
            if let Err(e) = message.ack().await {
                tracing::warn!(error = %e, "ack not sent");
            }
        }
        if let Err(e) = shared.js.client().flush().await {
            tracing::warn!(error = %e, "acks not flushed");
        }
    }
}

/// Dead-letters a message, then terminates it. When the dead letter cannot be stored the message
/// is NAK'd instead, so it is not lost.
async fn dead_letter(shared: &Shared, message: &jetstream::Message, pulled: Pulled, reason: &str) {
    let letter = DeadLetter {
        consumer: &shared.spec.name,
        subject: message.subject.as_str(),
        stream_sequence: pulled.stream_sequence,
        attempts: pulled.attempt,
        reason,
        payload: message.payload.clone(),
        headers: message.headers.as_ref(),
    };
    match dlq::publish_dead_letter(&shared.js, letter).await {
        Ok(()) => {
            tracing::warn!(%reason, attempts = pulled.attempt, sequence = pulled.stream_sequence, "dead-lettered");
            count_dead_letter(&shared.spec);
            let _ = message.ack_with(AckKind::Term).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store the dead letter; NAKing instead");
            let _ = message
                .ack_with(AckKind::Nak(Some(shared.spec.backoff_for(pulled.attempt))))
                .await;
        }
    }
}

fn count_dead_letter(spec: &ConsumerSpec) {
    spec.metrics
        .dead_lettered
        .get_or_create(&spec.labels())
        .inc();
}

/// Dead-letters messages whose last delivery timed out, announced by the server on
/// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.EVENTS.<consumer>`.
pub(super) async fn watch_max_deliveries(
    client: async_nats::Client,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let subject = format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{EVENTS_STREAM}.{}",
        shared.spec.name
    );
    let Ok(mut advisories) = client.subscribe(subject).await else {
        return;
    };
    loop {
        let advisory = tokio::select! {
            () = shutdown.cancelled() => return,
            advisory = advisories.next() => match advisory { Some(a) => a, None => return },
        };
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&advisory.payload) else {
            continue;
        };
        let sequence = body["stream_seq"].as_u64().unwrap_or_default();
        let deliveries = body["deliveries"].as_u64().unwrap_or_default();
        let Ok(stream) = shared.js.get_stream(EVENTS_STREAM).await else {
            continue;
        };
        let Ok(original) = stream.get_raw_message(sequence).await else {
            continue;
        };
        let letter = DeadLetter {
            consumer: &shared.spec.name,
            subject: original.subject.as_str(),
            stream_sequence: sequence,
            attempts: deliveries,
            reason: "the last allowed delivery timed out (no ack within ack_wait)",
            payload: original.payload.clone(),
            headers: Some(&original.headers),
        };
        match dlq::publish_dead_letter(&shared.js, letter).await {
            Ok(()) => {
                tracing::warn!(sequence, deliveries, "dead-lettered a timed-out message");
                count_dead_letter(&shared.spec);
            }
            Err(e) => {
                tracing::error!(error = %e, sequence, "cannot dead-letter a timed-out message")
            }
        }
    }
}
