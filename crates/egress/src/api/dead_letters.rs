//! `/v1/dead-letters`: the egress's dead letters, or a service consumer's, oldest first, a page
//! at a time, and retrying one. The iterator is the `DLQ` stream sequence the next page starts
//! at.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hookbus_proto::egress::v1::DeliveryTask;
use hookbus_proto::v1::Event;
use prost::Message;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::endpoints::load;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::input::Params;
use super::page::{self, PageRequest};
use super::recovery::Queued;
use crate::access::Scope;
use crate::dispatch::Queue;
use crate::engine::{DLQ_CONSUMER, Engine};
use crate::records::valid_id;
use crate::store;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct DeadLetterOut {
    /// Its sequence in the `DLQ` stream.
    #[schema(minimum = 1)]
    pub id: u64,
    /// The consumer that gave up on it: `egress`, or a service's consumer.
    pub consumer: String,
    /// The endpoint, for the egress's dead letters.
    pub endpoint_id: Option<String>,
    pub event_id: String,
    pub event_type: String,
    /// Where the message was: a task subject for the egress, else the event's subject.
    pub subject: String,
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

#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Whose dead letters: `egress` (the default) or the name of a service's consumer
    /// (`inventory`, `notifications`, `analytics`, …), as `hookbus dlq` shows them.
    pub consumer: Option<String>,
    /// Only this endpoint's dead letters (the egress's).
    pub endpoint_id: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 250)]
    pub limit: Option<usize>,
    /// The `iterator` of the previous page.
    pub iterator: Option<String>,
}

/// Where a consumer's dead letters are: `dlq.<consumer>.>`, the egress's `dlq.egress.<task
/// subject>`.
fn letters_filter(consumer: &str, endpoint: Option<&str>) -> String {
    match endpoint {
        Some(endpoint) => format!("dlq.{DLQ_CONSUMER}.{}", store::endpoint_tasks(endpoint)),
        None => format!("dlq.{consumer}.>"),
    }
}

fn letter_out(letter: hookbus_bus::dlq::StoredLetter) -> Option<DeadLetterOut> {
    let consumer = letter.consumer.clone();
    if consumer == DLQ_CONSUMER {
        let task = DeliveryTask::decode(letter.payload.clone()).ok()?;
        return Some(DeadLetterOut {
            id: letter.sequence,
            consumer,
            endpoint_id: Some(task.endpoint_id),
            event_id: task.event_id,
            event_type: task.event_type,
            subject: letter.subject,
            attempts: letter.attempts,
            reason: letter.reason,
        });
    }
    let event = Event::decode(letter.payload.clone()).ok();
    Some(DeadLetterOut {
        id: letter.sequence,
        consumer,
        endpoint_id: None,
        event_id: event.as_ref().map(|e| e.id.clone()).unwrap_or_default(),
        event_type: event.map(|e| e.r#type).unwrap_or_default(),
        subject: letter.subject,
        attempts: letter.attempts,
        reason: letter.reason,
    })
}

/// Dead letters of the egress or of one service's consumer, oldest first.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "deliveries", operation_id = "list_dead_letters",
    params(DeadLetterQuery),
    responses((status = 200, body = DeadLetterList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    State(state): AppState,
    Params(query): Params<DeadLetterQuery>,
) -> ApiResult<Json<DeadLetterList>> {
    list_in(&state.engine, query).await.map(Json)
}

/// A page of dead letters (the operator's only).
pub async fn list_in(engine: &Engine, query: DeadLetterQuery) -> ApiResult<DeadLetterList> {
    let page = PageRequest::new("dead-letters", query.limit, query.iterator.as_deref())?;
    let from = page.after_sequence()?.unwrap_or(1);
    let consumer = query.consumer.as_deref().unwrap_or(DLQ_CONSUMER);
    if hookbus_bus::SourceName::parse(consumer).is_err() {
        return Err(ApiError::invalid(
            "consumer",
            "must be a consumer name (letters, digits, - or _)",
        ));
    }
    let endpoint = query.endpoint_id.as_deref();
    if endpoint.is_some_and(|e| !valid_id(e)) {
        return Err(ApiError::invalid(
            "endpoint_id",
            "must be 1 to 128 letters, digits, - or _",
        ));
    }
    if endpoint.is_some() && consumer != DLQ_CONSUMER {
        return Err(ApiError::invalid(
            "endpoint_id",
            "only the egress's dead letters have an endpoint",
        ));
    }
    let mut letters = hookbus_bus::dlq::page(
        &engine.stores.js,
        letters_filter(consumer, endpoint),
        from,
        page.limit + 1,
    )
    .await
    .map_err(ApiError::internal)?;
    let next = (letters.len() > page.limit).then(|| letters[page.limit].sequence.to_string());
    letters.truncate(page.limit);
    let items = letters.into_iter().filter_map(letter_out).collect();
    let (iterator, done) = page::next("dead-letters", next.as_deref());
    Ok(DeadLetterList {
        items,
        iterator,
        done,
    })
}

/// Queue a dead letter again: an egress task with a fresh set of attempts, or a service's event
/// published again on its subject (with a fresh message id and the same event id, as
/// `hookbus dlq retry` does).
#[utoipa::path(post, path = "/v1/dead-letters/{id}/retry", tag = "deliveries", operation_id = "retry_dead_letter",
    params(("id" = u64, Path, minimum = 1)),
    responses((status = 202, body = Queued), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn retry(
    State(state): AppState,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    let queued = retry_in(&state.engine, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(queued)))
}

/// Retries one dead letter (the operator's only).
pub async fn retry_in(engine: &Engine, id: &str) -> ApiResult<Queued> {
    let missing = || ApiError::not_found(format!("no dead letter {id}"));
    let sequence: u64 = id.parse().ok().filter(|s| *s > 0).ok_or_else(missing)?;
    let letter = hookbus_bus::dlq::get(&engine.stores.js, sequence)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(missing)?;
    if letter.consumer != DLQ_CONSUMER {
        if letter.subject.is_empty() {
            return Err(missing());
        }
        hookbus_bus::dlq::retry(&engine.stores.js, &letter)
            .await
            .map_err(ApiError::internal)?;
        return Ok(Queued { queued: 1 });
    }
    let task = DeliveryTask::decode(letter.payload).map_err(|_| missing())?;
    load(engine, &Scope::Operator, &task.endpoint_id).await?;
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
    engine
        .stores
        .js
        .get_stream(hookbus_bus::dlq::DLQ_STREAM)
        .await
        .map_err(ApiError::internal)?
        .delete_message(sequence)
        .await
        .map_err(ApiError::internal)?;
    Ok(Queued { queued: 1 })
}
