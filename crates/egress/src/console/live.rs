//! What arrives on `EVENTS`: the sources page (every source seen, its types and latest events,
//! and its verifier when the egress reads the ingress's configuration) and the live tail, a
//! stream of server-sent events read by an ordered consumer that is deleted when the page
//! closes. Both are the operator's: they show every tenant's events.

use std::convert::Infallible;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use async_nats::jetstream::stream::Stream as JetStream;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use hookbus_proto::v1::Event;
use prost::Message;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::pages::{error_page, operator_only};
use super::session::Viewer;
use crate::api::{ApiError, rfc3339};
use crate::deliver::body_of;

/// The first bytes of a payload the tail shows.
const PREVIEW: usize = 2048;

fn summary(event: &Event, subject: &str, registry: &hookbus_proto::Registry) -> serde_json::Value {
    let body = body_of(event, registry)
        .map(|(body, _)| body)
        .unwrap_or_else(|_| event.payload.clone());
    let end = body.len().min(PREVIEW);
    json!({
        "id": event.id,
        "type": event.r#type,
        "source": event.source,
        "tenant": event.tenant,
        "subject": subject,
        "received_at": rfc3339(event.received_at.as_ref().map_or(0, |t| t.seconds)),
        "payload": String::from_utf8_lossy(&body[..end]),
    })
}

/// `GET /console/sources`.
pub async fn sources(State(state): AppState, viewer: Viewer) -> Response {
    if let Some(refused) = operator_only(&state, &viewer) {
        return refused;
    }
    let engine = &state.engine;
    let seen = match engine.catalogue.seen(&engine.stores.events).await {
        Ok(seen) => seen,
        Err(e) => return error_page(&state, &viewer, ApiError::internal(e)),
    };
    let mut names: std::collections::BTreeSet<&String> = seen.sources.keys().collect();
    names.extend(state.sources.keys());
    let sources: Vec<_> = names
        .into_iter()
        .map(|name| {
            let found = seen.sources.get(name);
            let configured = state.sources.get(name);
            json!({
                "name": name,
                "count": found.map_or(0, |s| s.count),
                "types": found.map(|s| s.types.iter().collect::<Vec<_>>()).unwrap_or_default(),
                "recent": found.map(|s| s.recent.iter().map(|e| {
                    summary(e, "", &engine.registry)
                }).collect::<Vec<_>>()).unwrap_or_default(),
                "verifier": configured.and_then(|c| c.get("verifier")).and_then(|v| v.as_str()),
                "settings": configured.map(|c| c.iter()
                    .filter(|(k, _)| *k != "verifier")
                    .map(|(k, v)| format!("{k} = {v}"))
                    .collect::<Vec<_>>()).unwrap_or_default(),
            })
        })
        .collect();
    state.views.render(
        StatusCode::OK,
        "sources.html",
        json!({
            "layout": viewer.layout(&state, "sources"),
            "sources": sources,
            "partial": seen.partial,
            "configured": !state.sources.is_empty(),
        }),
    )
}

#[derive(Deserialize)]
pub struct TailQuery {
    subject: Option<String>,
}

impl TailQuery {
    /// The subject filter asked for (`events.>` when none), and whether it is one.
    fn filter(self) -> (String, Result<(), FilterError>) {
        let subject = self.subject.unwrap_or_else(|| "events.>".into());
        let checked = check_filter(&subject);
        (subject, checked)
    }
}

/// A subject filter the tail cannot use; the message names the `subject` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum FilterError {
    #[error("subject: must start with events. (events.>, events.shop.>, events.*.order.created)")]
    Prefix,
    #[error("subject: has an empty token or a space")]
    EmptyToken,
    #[error("subject: may have > only as its last token")]
    Gt,
    #[error("subject: may have * and > only as whole tokens")]
    Wildcard,
}

/// A subject filter under `events.`: tokens of visible characters, `*` for one token, `>` only
/// last.
fn check_filter(filter: &str) -> Result<(), FilterError> {
    let tokens: Vec<&str> = filter.split('.').collect();
    if tokens.first() != Some(&"events") || tokens.len() < 2 {
        return Err(FilterError::Prefix);
    }
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(FilterError::EmptyToken);
        }
        if *token == ">" && i != tokens.len() - 1 {
            return Err(FilterError::Gt);
        }
        if token.len() > 1 && token.contains(['*', '>']) {
            return Err(FilterError::Wildcard);
        }
    }
    Ok(())
}

/// `GET /console/tail`: the page; its script opens the stream.
pub async fn tail(
    State(state): AppState,
    viewer: Viewer,
    Query(query): Query<TailQuery>,
) -> Response {
    if let Some(refused) = operator_only(&state, &viewer) {
        return refused;
    }
    let (subject, checked) = query.filter();
    let error = checked.err().map(|e| e.to_string());
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    state.views.render(
        status,
        "tail.html",
        json!({
            "layout": viewer.layout(&state, "tail"),
            "subject": subject,
            "error": error,
        }),
    )
}

/// Deletes the tail's consumer when the stream of events is dropped (the page closed).
struct DeleteOnDrop {
    stream: JetStream,
    name: String,
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let stream = self.stream.clone();
        let name = std::mem::take(&mut self.name);
        tokio::spawn(async move {
            if let Err(e) = stream.delete_consumer(&name).await {
                tracing::debug!(consumer = %name, error = %e, "live tail consumer not deleted (it expires by itself)");
            }
        });
    }
}

/// The prefix of the live tails' consumers on `EVENTS`.
pub const TAIL_CONSUMER_PREFIX: &str = "console-tail-";

/// `GET /console/tail/stream?subject=`: server-sent events, one per event stored from now on.
pub async fn tail_stream(
    State(state): AppState,
    viewer: Viewer,
    Query(query): Query<TailQuery>,
) -> Response {
    if let Some(refused) = operator_only(&state, &viewer) {
        return refused;
    }
    let (subject, checked) = query.filter();
    if let Err(e) = checked {
        return (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response();
    }
    let events = state.engine.stores.events.clone();
    let name = format!("{TAIL_CONSUMER_PREFIX}{}", uuid::Uuid::now_v7().simple());
    let created = events
        .create_consumer(pull::OrderedConfig {
            name: Some(name.clone()),
            filter_subject: subject,
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await;
    let reader = match created {
        Ok(reader) => reader,
        Err(e) => return error_page(&state, &viewer, ApiError::internal(e)),
    };
    let messages = match reader.messages().await {
        Ok(messages) => messages,
        Err(e) => return error_page(&state, &viewer, ApiError::internal(e)),
    };
    let guard = DeleteOnDrop {
        stream: events,
        name,
    };
    let engine = state.engine.clone();
    let stream =
        messages.filter_map(move |message| {
            let _keep = &guard;
            let event = message.ok().and_then(|m| {
                let subject = m.subject.to_string();
                Event::decode(m.payload.clone())
                    .ok()
                    .map(|event| summary(&event, &subject, &engine.registry))
            });
            std::future::ready(event.map(|e| {
                Ok::<_, Infallible>(SseEvent::default().event("event").data(e.to_string()))
            }))
        });
    sse(stream)
}

fn sse(stream: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static) -> Response {
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
