//! `/v1/dead-letters`: the egress's dead letters, oldest first, a page at a time, and retrying
//! one. The iterator is the `DLQ` stream sequence the next page starts at.

use async_nats::jetstream::stream::RawMessageErrorKind;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hookbus_proto::egress::v1::DeliveryTask;
use prost::Message;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::endpoints::load;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::input::Params;
use super::page::{self, PageRequest};
use super::recovery::Queued;
use crate::dispatch::Queue;
use crate::engine::DLQ_CONSUMER;
use crate::records::valid_id;
use crate::store;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct DeadLetterOut {
    /// Its sequence in the `DLQ` stream.
    #[schema(minimum = 1)]
    pub id: u64,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    pub attempts: String,
    pub reason: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct DeadLetterList {
    pub items: Vec<DeadLetterOut>,
    /// Pass as `iterator` for the next page; `null` when `done`.
    pub iterator: Option<String>,
    /// Nothing follows this page (yet: later dead letters come after it).
    pub done: bool,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Only this endpoint's dead letters.
    endpoint_id: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 250)]
    limit: Option<usize>,
    /// The `iterator` of the previous page.
    iterator: Option<String>,
}

/// Where the egress's dead letters are: `dlq.egress.<task subject>`.
fn letters_filter(endpoint: Option<&str>) -> String {
    match endpoint {
        Some(endpoint) => format!("dlq.{DLQ_CONSUMER}.{}", store::endpoint_tasks(endpoint)),
        None => format!("dlq.{DLQ_CONSUMER}.>"),
    }
}

/// Deliveries that exhausted their attempts, oldest first.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "deliveries", operation_id = "list_dead_letters",
    params(DeadLetterQuery),
    responses((status = 200, body = DeadLetterList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    State(state): AppState,
    Params(query): Params<DeadLetterQuery>,
) -> ApiResult<Json<DeadLetterList>> {
    let page = PageRequest::new("dead-letters", query.limit, query.iterator.as_deref())?;
    let from = page.after_sequence()?.unwrap_or(1);
    let endpoint = query.endpoint_id.as_deref();
    if endpoint.is_some_and(|e| !valid_id(e)) {
        return Err(ApiError::invalid(
            "endpoint_id",
            "must be 1 to 128 letters, digits, - or _",
        ));
    }
    let mut letters = hookbus_bus::dlq::page(
        &state.engine.stores.js,
        letters_filter(endpoint),
        from,
        page.limit + 1,
    )
    .await
    .map_err(ApiError::internal)?;
    let next = (letters.len() > page.limit).then(|| letters[page.limit].sequence.to_string());
    letters.truncate(page.limit);
    let items = letters
        .into_iter()
        .filter_map(|letter| {
            let task = DeliveryTask::decode(letter.payload.clone()).ok()?;
            Some(DeadLetterOut {
                id: letter.sequence,
                endpoint_id: task.endpoint_id,
                event_id: task.event_id,
                event_type: task.event_type,
                attempts: letter.attempts,
                reason: letter.reason,
            })
        })
        .collect();
    let (iterator, done) = page::next("dead-letters", next.as_deref());
    Ok(Json(DeadLetterList {
        items,
        iterator,
        done,
    }))
}

/// Queue a dead letter again, with a fresh set of attempts.
#[utoipa::path(post, path = "/v1/dead-letters/{id}/retry", tag = "deliveries", operation_id = "retry_dead_letter",
    params(("id" = u64, Path, minimum = 1)),
    responses((status = 202, body = Queued), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn retry(
    State(state): AppState,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    let engine = &state.engine;
    let missing = || ApiError::not_found(format!("no egress dead letter {id}"));
    let sequence: u64 = id.parse().ok().filter(|s| *s > 0).ok_or_else(missing)?;
    let dlq = engine
        .stores
        .js
        .get_stream(hookbus_bus::dlq::DLQ_STREAM)
        .await
        .map_err(ApiError::internal)?;
    let raw = dlq
        .get_raw_message(sequence)
        .await
        .map_err(|e| match e.kind() {
            RawMessageErrorKind::NoMessageFound => missing(),
            _ => ApiError::internal(e),
        })?;
    if !raw
        .subject
        .as_str()
        .starts_with(&format!("dlq.{DLQ_CONSUMER}."))
    {
        return Err(missing());
    }
    let task = DeliveryTask::decode(raw.payload).map_err(|_| missing())?;
    load(engine, &task.endpoint_id).await?;
    let event = engine
        .event_at(task.stream_sequence, &task.event_id)
        .await?;
    engine
        .enqueue(
            &task.endpoint_id,
            &event,
            task.stream_sequence,
            Queue::Again,
            &Default::default(),
        )
        .await?;
    dlq.delete_message(sequence)
        .await
        .map_err(ApiError::internal)?;
    Ok((StatusCode::ACCEPTED, Json(Queued { queued: 1 })))
}
