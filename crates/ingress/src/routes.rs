//! `POST /webhooks/{source}`, `/healthz`, `/readyz`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookbus_bus::{
    Built, EVENTS_STREAM, EventBuilder, EventId, EventType, PublishError, Publisher, SourceName,
    unix_now,
};
use hookbus_signature::Verified;
use hookbus_telemetry::TraceContext;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::Source;
use crate::error::ApiError;
use crate::limit::RateLimiter;
use crate::metrics::{FailureLabels, Metrics, RequestLabels};

/// Namespace of deterministic event ids: UUIDv5(namespace, "<source>:<delivery id>").
pub const EVENT_ID_NAMESPACE: uuid::Uuid = uuid::uuid!("5b0f4a52-3c0e-4d8e-9a0f-6f1f6d2b7c11");

/// Most bytes of provider headers kept on an event; further headers are dropped.
const MAX_KEPT_HEADER_BYTES: usize = 16 * 1024;

/// Headers never stored: credentials, and hop-by-hop or framing headers.
const DROPPED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "te",
    "trailer",
];

pub struct SourceState {
    pub source: Source,
    pub limiter: Option<RateLimiter>,
    pub dropped_headers: Vec<String>,
}

pub struct AppState {
    pub sources: HashMap<String, SourceState>,
    pub publisher: Publisher,
    pub client: async_nats::Client,
    pub body_limit: u64,
    pub publish_timeout: Duration,
    pub retry_after: Duration,
    pub metrics: Metrics,
}

pub type SharedState = Arc<AppState>;

/// The event id and the `Nats-Msg-Id` for a delivery: the UUIDv5 of `<source>:<delivery id>`
/// when the provider sends a delivery id (so a redelivery is the same event), else a UUIDv7.
pub fn event_ids(source: &SourceName, delivery_id: Option<&str>) -> (EventId, String) {
    match delivery_id {
        Some(id) => {
            let key = format!("{source}:{id}");
            (EventId::derived(&EVENT_ID_NAMESPACE, key.as_bytes()), key)
        }
        None => {
            let event_id = EventId::random();
            let key = event_id.as_str().to_owned();
            (event_id, key)
        }
    }
}

pub async fn receive(
    State(state): State<SharedState>,
    Path(source_name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Debug level: at the default `info` logging no span is built per request (that alone cost a
    // quarter of the throughput in `hookbus-bench ingress`); exported traces include it.
    let span = tracing::debug_span!(
        "webhook",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/webhooks/{source}",
        source = %source_name,
        event.id = tracing::field::Empty,
        event.type = tracing::field::Empty,
    );
    // The caller's trace: the parent of this span when spans are exported (set before the span
    // is first entered), and of the event's `traceparent` either way.
    let parent = if headers.contains_key("traceparent") {
        hookbus_telemetry::context_from_http(&headers)
    } else {
        TraceContext::new()
    };
    hookbus_telemetry::set_span_parent(&span, &parent);
    handle(state, source_name, headers, body, parent)
        .instrument(span)
        .await
}

async fn handle(
    state: SharedState,
    source_name: String,
    headers: HeaderMap,
    body: Body,
    parent: TraceContext,
) -> Response {
    let known = state.sources.get(&source_name);
    let label = known.map_or("_unknown", |s| s.source.name.as_str());
    let result = accept(&state, known, &source_name, &headers, body, &parent).await;
    let outcome = match &result {
        Ok(Accepted::Stored {
            duplicate: false, ..
        }) => "accepted",
        Ok(Accepted::Stored {
            duplicate: true, ..
        }) => "duplicate",
        Ok(Accepted::Challenge(_)) => "challenge",
        Err(e) => e.code(),
    };
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            source: label.to_owned(),
            outcome,
        })
        .inc();
    match result {
        Ok(Accepted::Stored { id, duplicate }) => (
            StatusCode::OK,
            Json(serde_json::json!({"id": id, "duplicate": duplicate})),
        )
            .into_response(),
        Ok(Accepted::Challenge(challenge)) => (
            StatusCode::OK,
            Json(serde_json::json!({"challenge": challenge})),
        )
            .into_response(),
        Err(error) => {
            match &error {
                ApiError::Verify(e) => {
                    state
                        .metrics
                        .verification_failures
                        .get_or_create(&FailureLabels {
                            source: label.to_owned(),
                            reason: e.reason(),
                        })
                        .inc();
                    tracing::info!(source = label, error = %e, "webhook refused");
                }
                ApiError::Unavailable(..) => {
                    tracing::warn!(source = label, error = %error, "webhook not stored");
                }
                _ => tracing::debug!(source = label, error = %error, "webhook refused"),
            }
            error.into_response()
        }
    }
}

enum Accepted {
    Stored { id: String, duplicate: bool },
    Challenge(String),
}

async fn accept(
    state: &AppState,
    source: Option<&SourceState>,
    source_name: &str,
    headers: &HeaderMap,
    body: Body,
    parent: &TraceContext,
) -> Result<Accepted, ApiError> {
    let limit = state.body_limit;
    // The size limit comes before anything else, on the declared length when there is one.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    let source = source.ok_or_else(|| ApiError::UnknownSource(source_name.to_owned()))?;
    if let Some(limiter) = &source.limiter
        && !limiter.try_acquire()
    {
        return Err(ApiError::RateLimited {
            source_name: source_name.to_owned(),
            limit: source.source.rate_limit.unwrap_or_default(),
        });
    }
    let body = axum::body::to_bytes(body, limit as usize)
        .await
        .map_err(|e| {
            let inner = e.into_inner();
            if inner.is::<http_body_util::LengthLimitError>() {
                ApiError::TooLarge { limit }
            } else {
                ApiError::UnreadableBody(inner.to_string())
            }
        })?;

    let now = unix_now();
    let verified = source
        .source
        .verifier
        .verify(headers, &body, now.as_secs() as i64)?;
    if let Some(challenge) = verified.challenge {
        return Ok(Accepted::Challenge(challenge));
    }
    let (Built { subject, event }, msg_id) = envelope(source, headers, body, verified, now);
    let span = tracing::Span::current();
    span.record("event.id", event.id.as_str());
    span.record("event.type", event.r#type.as_str());

    // The publish deadline covers the wait for an in-flight slot, every attempt and the pauses.
    let publish_started = Instant::now();
    let deadline = publish_started + state.publish_timeout;
    let published = state
        .publisher
        .publish_event(subject, &event, &msg_id, deadline, parent)
        .await;
    state
        .metrics
        .publish_seconds
        .observe(publish_started.elapsed().as_secs_f64());
    match published {
        Ok(published) => Ok(Accepted::Stored {
            id: event.id,
            duplicate: published.duplicate,
        }),
        Err(e @ PublishError::TooLarge { .. }) => Err(ApiError::TooLarge { limit }).inspect_err(|_| {
            tracing::error!(error = %e, "event over the server's max_payload despite the start-up check");
        }),
        Err(e) => Err(ApiError::Unavailable(e.to_string(), state.retry_after)),
    }
}

fn envelope(
    source: &SourceState,
    headers: &HeaderMap,
    body: bytes::Bytes,
    verified: Verified,
    now: Duration,
) -> (Built, String) {
    let name = &source.source.name;
    let (id, msg_id) = event_ids(name, verified.delivery_id.as_deref());
    let event_type = EventType::normalize(verified.event_type.as_deref().unwrap_or_default());
    let mut kept = HashMap::new();
    let mut kept_bytes = 0;
    for (key, value) in headers {
        let key = key.as_str();
        if DROPPED_HEADERS.contains(&key) || source.dropped_headers.iter().any(|h| h == key) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        kept_bytes += key.len() + value.len();
        if kept_bytes > MAX_KEPT_HEADER_BYTES {
            break;
        }
        kept.insert(key.to_owned(), value);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    let built = EventBuilder::new(name, &event_type, body)
        .id(&id)
        .provider(source.source.verifier.scheme().name())
        .received_at(now)
        .occurred_at(verified.occurred_at)
        .delivery_id(verified.delivery_id.unwrap_or_default())
        .content_type(content_type)
        .headers(kept)
        .build();
    (built, msg_id)
}

/// Ready when the broker is connected and the `EVENTS` stream is there.
pub async fn readyz(State(state): State<SharedState>) -> Response {
    let connected = hookbus_bus::is_connected(&state.client);
    let stream = if connected {
        match tokio::time::timeout(
            Duration::from_secs(1),
            state.publisher.jetstream().get_stream(EVENTS_STREAM),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer from JetStream within 1s".to_owned()),
        }
    } else {
        Err("broker not connected".to_owned())
    };
    match stream {
        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "not_ready",
                "broker_connected": connected,
                "reason": reason,
            })),
        )
            .into_response(),
    }
}
