//! One delivery attempt: the request a subscriber gets, and what its answer means.
//!
//! - `POST` to the endpoint URL, checked again by the SSRF policy before each send.
//! - Standard Webhooks headers: `webhook-id` is the event id (the same on every retry);
//!   `webhook-timestamp` and `webhook-signature` are computed afresh for each attempt, with one
//!   `v1,` signature per active secret (two during a rotation).
//! - `hookbus-event-type`, `user-agent: hookbus/<version>`, the endpoint's own headers (which
//!   cannot replace any of the above), and the event's content type: typed protobuf events are
//!   sent as their proto3 JSON form with `application/json`.
//! - 2xx is delivered. 410 asks for the endpoint to be disabled. 429 and 503 are retried no
//!   sooner than their `Retry-After` (seconds or an HTTP date). Anything else, 3xx included (never
//!   followed), a timeout or a refused connection is a failure to retry on the schedule.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hookbus_proto::Registry;
use hookbus_proto::v1::Event;
use hookbus_signature::{SigningSecret, sign_standard_webhooks};

use tracing::Instrument;

use crate::ssrf::{AddressPolicy, refusal_of};

/// The response body kept in the attempt log, at most.
pub const RESPONSE_BODY_LIMIT: usize = 1024;

/// Headers the endpoint's own `headers` may not set.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "hookbus-event-type",
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "traceparent",
    "tracestate",
];

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Failed; try again on the schedule, and no sooner than `after` when the endpoint said so.
    Retry {
        after: Option<Duration>,
    },
    /// The endpoint answered 410 Gone: disable it.
    Disable,
}

/// One attempt, as the attempt log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub verdict: Verdict,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    pub latency: Duration,
    /// The start of the response body (at most [`RESPONSE_BODY_LIMIT`] bytes, lossy UTF-8).
    pub response_body: String,
    /// Why it failed without an answer (timeout, refused address, connection error).
    pub error: Option<String>,
}

/// An event whose protobuf payload cannot be turned into the JSON a subscriber gets.
#[derive(Debug, thiserror::Error)]
#[error("payload of {id}: {reason}")]
pub struct BodyError {
    pub id: String,
    reason: hookbus_proto::RegistryError,
}

/// The body and content type a subscriber gets for `event`.
pub fn body_of(event: &Event, registry: &Registry) -> Result<(Bytes, String), BodyError> {
    if hookbus_proto::proto_name_of(&event.content_type).is_some() {
        let json = registry
            .to_json(&event.content_type, &event.payload)
            .map_err(|reason| BodyError {
                id: event.id.clone(),
                reason,
            })?;
        let body = serde_json::to_vec(&json).expect("a JSON value serializes");
        return Ok((body.into(), "application/json".into()));
    }
    let content_type = if event.content_type.is_empty() {
        "application/json".to_owned()
    } else {
        event.content_type.clone()
    };
    Ok((event.payload.clone(), content_type))
}

/// Where and how to deliver.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub url: &'a reqwest::Url,
    /// The active secrets, newest first.
    pub secrets: &'a [SigningSecret],
    /// The endpoint's own headers.
    pub headers: &'a BTreeMap<String, String>,
    /// The event's trace (from the task), continued in the request's `traceparent`.
    pub trace: &'a hookbus_telemetry::TraceContext,
}

/// Sends `body` for `event` to `target` once, signed at `now` (unix seconds), in an HTTP client
/// span (a child of the current one) whose context the request carries as `traceparent`; when
/// spans are not exported, the request continues `target.trace` under a new span id.
pub async fn attempt(
    client: &reqwest::Client,
    policy: &AddressPolicy,
    target: Target<'_>,
    event: &Event,
    body: (&Bytes, &str),
    now: i64,
) -> Attempt {
    let span = tracing::debug_span!(
        "POST",
        otel.kind = "client",
        http.request.method = "POST",
        server.address = target.url.host_str().unwrap_or_default(),
        server.port = target.url.port_or_known_default().unwrap_or_default(),
        url.path = target.url.path(),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    let attempt = send(client, policy, target, event, body, now)
        .instrument(span.clone())
        .await;
    match (attempt.status, &attempt.error) {
        (Some(status), _) => span.record("http.response.status_code", status),
        (None, Some(error)) => span.record("error.type", error.as_str()),
        (None, None) => &span,
    };
    attempt
}

async fn send(
    client: &reqwest::Client,
    policy: &AddressPolicy,
    target: Target<'_>,
    event: &Event,
    (body, content_type): (&Bytes, &str),
    now: i64,
) -> Attempt {
    let started = Instant::now();
    let failed = |error: String| Attempt {
        verdict: Verdict::Retry { after: None },
        status: None,
        latency: started.elapsed(),
        response_body: String::new(),
        error: Some(error),
    };
    if let Err(refused) = policy.check_url(target.url) {
        return failed(format!("refused: {refused}"));
    }
    let mut request = client.post(target.url.clone());
    for (name, value) in target.headers {
        if !RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            request = request.header(name, value);
        }
    }
    let mut trace = reqwest::header::HeaderMap::new();
    hookbus_telemetry::inject_into_http(
        &mut trace,
        &hookbus_telemetry::outgoing_context(target.trace),
    );
    let request = request
        .headers(trace)
        .header("webhook-id", &event.id)
        .header("webhook-timestamp", now.to_string())
        .header(
            "webhook-signature",
            sign_standard_webhooks(target.secrets, &event.id, now, body),
        )
        .header("hookbus-event-type", &event.r#type)
        .header("content-type", content_type)
        .body(body.clone());
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            let why = match refusal_of(&e) {
                Some(refused) => format!("refused: {refused}"),
                None if e.is_timeout() => "timed out".to_owned(),
                None if e.is_connect() => format!("cannot connect: {}", source_text(&e)),
                None => source_text(&e),
            };
            return failed(why);
        }
    };
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let mut kept = Vec::new();
    while kept.len() < RESPONSE_BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    kept.truncate(RESPONSE_BODY_LIMIT);
    let verdict = match status.as_u16() {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Disable,
        429 | 503 => Verdict::Retry { after: retry_after },
        _ => Verdict::Retry { after: None },
    };
    Attempt {
        verdict,
        status: Some(status.as_u16()),
        latency: started.elapsed(),
        response_body: String::from_utf8_lossy(&kept).into_owned(),
        error: None,
    }
}

/// The error with its sources, without the URL (which may hold a token).
fn source_text(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// `Retry-After` as seconds or an HTTP date, from now.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}
