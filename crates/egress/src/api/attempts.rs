//! `GET /v1/endpoints/{id}/attempts`: an endpoint's delivery attempts, newest first, a page at a
//! time. The iterator is the stream sequence of the page's last attempt.

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
use crate::store;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AttemptOut {
    pub id: String,
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
    let before = page.after_sequence()?.unwrap_or(u64::MAX);
    load(engine, &id).await?;
    // Read forward: this list still reads the endpoint's whole attempt log (docs/egress.md,
    // "Limits and known gaps").
    let messages = store::read_all(
        &engine.stores.attempts,
        store::attempts_subject(&id),
        async_nats::jetstream::consumer::DeliverPolicy::All,
    )
    .await
    .map_err(ApiError::internal)?;
    let mut found = messages
        .iter()
        .rev()
        .filter_map(|m| {
            let sequence = m.info().ok()?.stream_sequence;
            let attempt = DeliveryAttempt::decode(m.payload.clone()).ok()?;
            Some((sequence, attempt))
        })
        .filter(|(sequence, a)| {
            *sequence < before && query.event_id.as_ref().is_none_or(|e| *e == a.event_id)
        })
        .take(page.limit + 1);
    let mut items = Vec::with_capacity(page.limit);
    let mut last = None;
    for (sequence, attempt) in found.by_ref().take(page.limit) {
        last = Some(sequence);
        items.push(attempt_out(attempt));
    }
    let more = found.next().is_some();
    let last = last.filter(|_| more).map(|s| s.to_string());
    let (iterator, done) = page::next("attempts", last.as_deref());
    Ok(Json(AttemptList {
        items,
        iterator,
        done,
    }))
}
