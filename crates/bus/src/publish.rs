//! Publishing events: protobuf envelope, `Nats-Msg-Id` for the server's dedup window, trace
//! context and type headers, and a wait for the PubAck within a deadline, retrying with the same
//! message id (so a retry of a publish that did land is a duplicate, not a second event).

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use hookbus_proto::v1::Event;
use prost::Message;
use tokio::time::Instant;
use tracing::Instrument;

/// What JetStream said about a stored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub sequence: u64,
    /// The server already had a message with this `Nats-Msg-Id` within its duplicate window.
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("no PubAck within {waited:?} ({attempts} attempts; last error: {last_error})")]
    Deadline {
        waited: Duration,
        attempts: u32,
        last_error: String,
    },
    #[error("event of {size} bytes does not fit the server's max_payload")]
    TooLarge { size: usize },
}

/// Publishes events to JetStream, waiting for each PubAck.
#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    attempt_timeout: Duration,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("attempt_timeout", &self.attempt_timeout)
            .finish()
    }
}

/// The NATS headers of an event, with the trace context `trace` (see
/// `hookbus_telemetry::outgoing_context`); `Nats-Msg-Id` is set by the publish itself.
pub fn event_headers(event: &Event, trace: &hookbus_telemetry::TraceContext) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "application/protobuf");
    headers.insert("Hookbus-Type", event.r#type.as_str());
    hookbus_telemetry::inject_into_nats(&mut headers, trace);
    headers
}

impl Publisher {
    /// `max_in_flight` bounds the PubAcks awaited at once (callers wait for a slot).
    pub fn new(client: async_nats::Client, max_in_flight: usize) -> Self {
        let attempt_timeout = Duration::from_secs(1);
        let js = jetstream::ContextBuilder::new()
            .timeout(attempt_timeout)
            .max_ack_inflight(max_in_flight)
            .backpressure_on_inflight(true)
            .build(client);
        Self {
            js,
            attempt_timeout,
        }
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Publishes `event` on `subject` with `msg_id`, retrying until `deadline`, in a `publish`
    /// span: a child of the current span (the ingress request), or of `parent` when there is none
    /// (the outbox relay publishing what an event caused). The event carries that span's trace
    /// context, or a child of `parent` when spans are not exported.
    pub async fn publish_event(
        &self,
        subject: String,
        event: &Event,
        msg_id: &str,
        deadline: Instant,
        parent: &hookbus_telemetry::TraceContext,
    ) -> Result<Published, PublishError> {
        let span = tracing::debug_span!(
            "publish",
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.destination.name = %subject,
            messaging.message.id = %msg_id,
        );
        if tracing::Span::current().is_none() {
            hookbus_telemetry::set_span_parent(&span, parent);
        }
        let headers =
            span.in_scope(|| event_headers(event, &hookbus_telemetry::outgoing_context(parent)));
        let payload = Bytes::from(event.encode_to_vec());
        self.send_until(subject, (payload, headers), msg_id, deadline)
            .instrument(span)
            .await
    }

    /// Sends one message until it is acknowledged or `deadline` passes.
    async fn send_until(
        &self,
        subject: String,
        (payload, headers): (Bytes, HeaderMap),
        msg_id: &str,
        deadline: Instant,
    ) -> Result<Published, PublishError> {
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut backoff = Duration::from_millis(25);
        let mut last_error = String::from("none");
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(PublishError::Deadline {
                    waited: started.elapsed(),
                    attempts: attempts - 1,
                    last_error,
                });
            }
            let message = PublishMessage::build()
                .payload(payload.clone())
                .headers(headers.clone())
                .message_id(msg_id);
            let attempt = async {
                let ack = self.js.send_publish(subject.clone(), message).await?;
                ack.await
            };
            match tokio::time::timeout(remaining.min(self.attempt_timeout), attempt).await {
                Ok(Ok(ack)) => {
                    return Ok(Published {
                        sequence: ack.sequence,
                        duplicate: ack.duplicate,
                    });
                }
                Ok(Err(e))
                    if e.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded =>
                {
                    return Err(PublishError::TooLarge {
                        size: payload.len(),
                    });
                }
                Ok(Err(e)) => {
                    last_error = e.to_string();
                    tracing::debug!(error = %e, attempts, "publish failed, retrying");
                    // Errors that come back at once (no responders while the server restarts or a
                    // leader is elected) would spin; wait a little, never past the deadline.
                    let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(Duration::from_millis(400));
                }
                Err(_) => {
                    last_error = "timed out waiting for the PubAck".into();
                    tracing::debug!(attempts, "publish timed out, retrying");
                }
            }
        }
    }
}
