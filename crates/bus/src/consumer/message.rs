//! One message at a time: a handler slot, the handler with in-progress acks, what its outcome
//! does (ack, NAK with back-off, dead letter), and the last deliveries that timed out.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use hookbus_proto::v1::Event;
use prost::Message;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::dlq::{self, DeadLetter};
use crate::streams::EVENTS_STREAM;

use super::spec::{ConsumerSpec, Delivery, Outcome};

/// State shared by the fetch loop and the message tasks.
pub(super) struct Shared {
    pub(super) js: jetstream::Context,
    pub(super) spec: ConsumerSpec,
    /// The consumer's ack floor as last seen on the server: where a recreated consumer resumes.
    pub(super) ack_floor: AtomicU64,
}

/// How long a message handed back on shutdown waits before it is delivered again. Longer than a
/// pull's expiry (1 s): an immediate NAK would be redelivered at once into the closing pull, NAK'd
/// again, and so on until its deliveries ran out and it was dead-lettered unprocessed.
pub(super) const SHUTDOWN_NAK_DELAY: Duration = Duration::from_secs(2);

/// Ticks every third of `ack_wait`, the first one a third from now. (Not `interval` and a first
/// `tick().await`: that first tick waits for the timer wheel's next millisecond, which costs about
/// a millisecond per message.)
fn progress_ticks(spec: &ConsumerSpec) -> tokio::time::Interval {
    let period = spec.ack_wait / 3;
    tokio::time::interval_at(tokio::time::Instant::now() + period, period)
}

/// Waits for a free handler slot, keeping the message's ack deadline alive meanwhile; on shutdown
/// the message goes back to the server (NAK, confirmed) and `None` is returned.
pub(super) async fn wait_for_slot(
    spec: &ConsumerSpec,
    message: &jetstream::Message,
    slots: Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let mut progress = progress_ticks(spec);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                let _ = message.double_ack_with(AckKind::Nak(Some(SHUTDOWN_NAK_DELAY))).await;
                return None;
            }
            slot = slots.clone().acquire_owned() => return Some(slot.expect("semaphore never closes")),
            _ = progress.tick(), if spec.progress_acks => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}

pub(super) async fn process<H, Fut>(
    shared: &Shared,
    handler: &H,
    message: jetstream::Message,
    cancel: CancellationToken,
) where
    H: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let spec = &shared.spec;
    let (stream_sequence, attempt) = match message.info() {
        Ok(info) => (info.stream_sequence, info.delivered.max(1) as u64),
        Err(_) => (0, 1),
    };
    let headers = message.headers.clone().unwrap_or_default();
    let subject = message.subject.to_string();
    let span = tracing::info_span!(
        "consume",
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation = "process",
        messaging.destination.name = %subject,
        messaging.consumer.group.name = %spec.name,
        messaging.message.id = tracing::field::Empty,
        attempt,
    );
    hookbus_telemetry::set_parent_from_nats(&span, &headers);

    async {
        let give_up = async |reason: &str| {
            dead_letter(shared, &message, &subject, stream_sequence, attempt, reason).await;
        };
        let event = match Event::decode(message.payload.clone()) {
            Ok(event) => event,
            Err(e) => {
                let reason = format!("payload is not a hookbus.v1.Event: {e}");
                give_up(&reason).await;
                return;
            }
        };
        tracing::Span::current().record("messaging.message.id", event.id.as_str());
        let delivery = Delivery {
            event,
            subject: subject.clone(),
            stream_sequence,
            attempt,
            headers,
        };
        // The handler runs in its own task: a panic there is a failure, not the end of the consumer.
        let started = std::time::Instant::now();
        let mut work = tokio::spawn(handler(delivery).in_current_span());
        let mut progress = progress_ticks(spec);
        let outcome = loop {
            tokio::select! {
                result = &mut work => break match result {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        tracing::error!(error = %e, "handler panicked");
                        Outcome::Retry { after: spec.backoff_for(attempt) }
                    }
                },
                _ = progress.tick(), if spec.progress_acks => {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
                () = cancel.cancelled() => {
                    work.abort();
                    // Confirmed, so that when the runtime returns the server has it back.
                    let _ = message.double_ack_with(AckKind::Nak(Some(SHUTDOWN_NAK_DELAY))).await;
                    tracing::info!("handler stopped by shutdown; message NAK'd");
                    return;
                }
            }
        };
        let (metrics, labels) = (&spec.metrics, spec.labels());
        metrics
            .handler_seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Outcome::Ack => {
                metrics.processed.get_or_create(&labels).inc();
                let acked = if spec.confirm_acks {
                    message.double_ack().await
                } else {
                    message.ack().await
                };
                if let Err(e) = acked {
                    // Not lost: the server redelivers after ack_wait and the handler is idempotent.
                    tracing::warn!(error = %e, "ack not confirmed");
                }
            }
            Outcome::Retry { after } if (attempt as i64) < spec.max_deliveries => {
                tracing::info!(?after, attempt, "handler asked for a retry");
                metrics.retried.get_or_create(&labels).inc();
                let _ = message.ack_with(AckKind::Nak(Some(after))).await;
            }
            Outcome::Retry { .. } => {
                let reason = format!("still failing after {attempt} deliveries");
                give_up(&reason).await;
            }
            Outcome::Reject { reason } => {
                give_up(&reason).await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// Dead-letters a message, then terminates it. When the dead letter cannot be stored the message
/// is NAK'd instead, so it is not lost.
async fn dead_letter(
    shared: &Shared,
    message: &jetstream::Message,
    subject: &str,
    stream_sequence: u64,
    attempts: u64,
    reason: &str,
) {
    let letter = DeadLetter {
        consumer: &shared.spec.name,
        subject,
        stream_sequence,
        attempts,
        reason,
        payload: message.payload.clone(),
        headers: message.headers.as_ref(),
    };
    match dlq::publish_dead_letter(&shared.js, letter).await {
        Ok(()) => {
            tracing::warn!(%reason, attempts, "dead-lettered");
            count_dead_letter(&shared.spec);
            let _ = message.ack_with(AckKind::Term).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store the dead letter; NAKing instead");
            let _ = message
                .ack_with(AckKind::Nak(Some(shared.spec.backoff_for(attempts))))
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
