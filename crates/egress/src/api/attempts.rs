//! Delivery attempts, newest first, a page at a time: an endpoint's
//! (`GET /v1/endpoints/{id}/attempts`) and one message's to every endpoint
//! (`GET /v1/messages/{id}/attempts`). The iterator is the stream sequence of the page's last
//! attempt.

use axum::Json;
use axum::extract::{Path, State};
use hookbus_proto::egress::v1::DeliveryAttempt;
use hookbus_proto::egress::v1::delivery_attempt::Status;
use prost::Message;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::endpoints::load;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::input::{Params, rfc3339};
use super::page::{self, PageRequest};
use crate::records::valid_id;
use crate::store;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AttemptOut {
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    /// 1 for the first try.
    #[schema(minimum = 1)]
    pub attempt: u32,
    /// `succeeded` or `failed`.
    pub status: String,
    /// The HTTP status; absent when no answer came.
    pub response_status: Option<u32>,
    pub latency_ms: u64,
    /// The first KiB of the answer.
    pub response_body: String,
    /// Why it failed without an answer (timeout, refused address, connection error).
    pub error: Option<String>,
    #[schema(format = DateTime)]
    pub attempted_at: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AttemptList {
    pub items: Vec<AttemptOut>,
    /// Pass as `iterator` for the next (older) page; `null` when `done`.
    pub iterator: Option<String>,
    /// Nothing older follows.
    pub done: bool,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AttemptQuery {
    /// Only the attempts of this event.
    event_id: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 250)]
    limit: Option<usize>,
    /// The `iterator` of the previous page.
    iterator: Option<String>,
}

fn attempt_out(a: DeliveryAttempt) -> AttemptOut {
    AttemptOut {
        status: if a.status == Status::Succeeded as i32 {
            "succeeded".into()
        } else {
            "failed".into()
        },
        response_status: Some(a.response_status).filter(|s| *s != 0),
        error: Some(a.error).filter(|e| !e.is_empty()),
        attempted_at: rfc3339(a.attempted_at.map(|t| t.seconds).unwrap_or_default()),
        id: a.id,
        endpoint_id: a.endpoint_id,
        event_id: a.event_id,
        attempt: a.attempt,
        latency_ms: a.latency_ms,
        response_body: a.response_body,
    }
}

/// The delivery attempts of an endpoint, newest first.
#[utoipa::path(get, path = "/v1/endpoints/{id}/attempts", tag = "deliveries", operation_id = "list_attempts",
    params(("id" = String, Path), AttemptQuery),
    responses((status = 200, body = AttemptList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    State(state): AppState,
    Path(id): Path<String>,
    Params(query): Params<AttemptQuery>,
) -> ApiResult<Json<AttemptList>> {
    let engine = &state.engine;
    let page = PageRequest::new("attempts", query.limit, query.iterator.as_deref())?;
    load(engine, &id).await?;
    let event = query.event_id.as_deref();
    let filters = match event {
        Some(event) if valid_id(event) => vec![
            store::legacy_attempts(&id),
            store::attempt_subject(&id, event),
        ],
        Some(_) => return Ok(Json(newest_first(Vec::new(), &page, "attempts")?)),
        None => store::endpoint_attempts(&id),
    };
    let messages = read(engine, filters).await?;
    // Attempts stored before they had a subject per event: filter those by event here.
    let messages = messages
        .into_iter()
        .filter(|(_, a)| event.is_none_or(|e| e == a.event_id))
        .collect();
    Ok(Json(newest_first(messages, &page, "attempts")?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MessageAttemptQuery {
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 250)]
    limit: Option<usize>,
    /// The `iterator` of the previous page.
    iterator: Option<String>,
}

/// The delivery attempts of one message (event) to every endpoint, newest first. A message that
/// has no attempts (yet) answers an empty list.
#[utoipa::path(get, path = "/v1/messages/{id}/attempts", tag = "deliveries", operation_id = "list_message_attempts",
    params(("id" = String, Path, description = "The event id"), MessageAttemptQuery),
    responses((status = 200, body = AttemptList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_for_message(
    State(state): AppState,
    Path(id): Path<String>,
    Params(query): Params<MessageAttemptQuery>,
) -> ApiResult<Json<AttemptList>> {
    let page = PageRequest::new("message-attempts", query.limit, query.iterator.as_deref())?;
    if !valid_id(&id) {
        return Err(ApiError::not_found(format!("no message {id}")));
    }
    let messages = read(&state.engine, vec![store::message_attempts(&id)]).await?;
    Ok(Json(newest_first(messages, &page, "message-attempts")?))
}

/// The attempts on `filters`, with their stream sequences, in stream order.
async fn read(
    engine: &crate::engine::Engine,
    filters: Vec<String>,
) -> ApiResult<Vec<(u64, DeliveryAttempt)>> {
    // Reads forward from the start: the whole log on these subjects (docs/egress.md, "Limits
    // and known gaps").
    let messages = store::read_all_of(
        &engine.stores.attempts,
        filters,
        async_nats::jetstream::consumer::DeliverPolicy::All,
    )
    .await
    .map_err(ApiError::internal)?;
    Ok(messages
        .iter()
        .filter_map(|m| {
            let sequence = m.info().ok()?.stream_sequence;
            let attempt = DeliveryAttempt::decode(m.payload.clone()).ok()?;
            Some((sequence, attempt))
        })
        .collect())
}

/// The page of `attempts` (in stream order) before the iterator's position, newest first.
fn newest_first(
    attempts: Vec<(u64, DeliveryAttempt)>,
    page: &PageRequest,
    list: &str,
) -> ApiResult<AttemptList> {
    let before = page.after_sequence()?.unwrap_or(u64::MAX);
    let mut found = attempts
        .into_iter()
        .rev()
        .filter(|(sequence, _)| *sequence < before);
    let mut items = Vec::with_capacity(page.limit);
    let mut last = None;
    for (sequence, attempt) in found.by_ref().take(page.limit) {
        last = Some(sequence);
        items.push(attempt_out(attempt));
    }
    let more = found.next().is_some();
    let last = last.filter(|_| more).map(|s| s.to_string());
    let (iterator, done) = page::next(list, last.as_deref());
    Ok(AttemptList {
        items,
        iterator,
        done,
    })
}
