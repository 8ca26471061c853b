//! Sending again: one event to one endpoint (resend), or what failed since a time (recover).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::endpoints::load;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::input::parse;
use crate::access::Scope;
use crate::attempt_log::{self, Start};
use crate::dispatch::Queue;
use crate::engine::{Engine, EventError};
use crate::records::valid_id;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Queued {
    /// Tasks queued.
    pub queued: usize,
}

/// Deliver one event to one endpoint again (same `webhook-id`), delivered before or not.
#[utoipa::path(post, path = "/v1/endpoints/{id}/messages/{event_id}/resend", tag = "deliveries", operation_id = "resend",
    params(("id" = String, Path), ("event_id" = String, Path)),
    responses((status = 202, body = Queued), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn resend(
    State(state): AppState,
    Path((id, event_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    let queued = resend_in(&state.engine, &Scope::Operator, &id, &event_id).await?;
    Ok((StatusCode::ACCEPTED, Json(queued)))
}

/// Queues one event again for an endpoint that `scope` sees.
pub async fn resend_in(
    engine: &Engine,
    scope: &Scope,
    id: &str,
    event_id: &str,
) -> ApiResult<Queued> {
    load(engine, scope, id).await?;
    if !valid_id(event_id) {
        return Err(ApiError::not_found(format!(
            "no event {event_id} for endpoint {id}"
        )));
    }
    let never = || {
        ApiError::not_found(format!(
            "event {event_id} was never queued for endpoint {id}"
        ))
    };
    // Its latest attempt once it was tried. Before that, the dispatch marker of the event, if the
    // event is one this endpoint takes: never another tenant's event, nor one of a type it
    // does not subscribe to.
    let (sequence, tried) = match engine.stores.attempts.status(id, event_id).await? {
        Some(status) => (status.stream_sequence, true),
        None => (
            engine
                .stores
                .dispatched(event_id)
                .await?
                .ok_or_else(never)?,
            false,
        ),
    };
    let event = match engine.event_at(sequence, event_id).await {
        // Say nothing of an event this endpoint was never sent.
        Err(EventError::Gone(_)) if !tried => return Err(never()),
        event => event?,
    };
    let takes = |live: std::sync::Arc<crate::directory::Live>| {
        live.subscription
            .matches(&event.r#type, &event.source, event.tenant.as_deref())
    };
    if !tried && !engine.directory.get(id).is_some_and(takes) {
        return Err(never());
    }
    engine
        .enqueue(id, &event, sequence, Queue::Resend, &Default::default())
        .await?;
    Ok(Queued { queued: 1 })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverIn {
    /// RFC 3339: re-send what was queued since then and not delivered.
    #[schema(format = DateTime)]
    pub since: String,
}

/// Re-send to one endpoint everything since `since` that failed or was never attempted (not what
/// was delivered).
#[utoipa::path(post, path = "/v1/endpoints/{id}/recover", tag = "deliveries", operation_id = "recover",
    params(("id" = String, Path)),
    request_body = RecoverIn,
    responses((status = 202, body = Queued), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn recover(
    State(state): AppState,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    let input: RecoverIn = parse(&body)?;
    let queued = recover_in(&state.engine, &Scope::Operator, &id, input).await?;
    Ok((StatusCode::ACCEPTED, Json(queued)))
}

/// Queues again what failed or was never attempted since `since` at an endpoint that `scope`
/// sees.
pub async fn recover_in(
    engine: &Engine,
    scope: &Scope,
    id: &str,
    input: RecoverIn,
) -> ApiResult<Queued> {
    let from =
        time::OffsetDateTime::parse(&input.since, &time::format_description::well_known::Rfc3339)
            .map_err(|e| ApiError::invalid("since", format!("not an RFC 3339 time: {e}")))?;
    let since = from.unix_timestamp();
    load(engine, scope, id).await?;
    // The attempts made since then, the latest of each event last: what failed since `since`,
    // read from there on, not the endpoint's whole history.
    let tried = engine
        .stores
        .attempts
        .all(&attempt_log::of_endpoint(id), Start::Time(from))
        .await?;
    let mut latest = std::collections::BTreeMap::new();
    for (_, record) in tried {
        latest.insert(record.event_id.clone(), record);
    }
    let mut queued = 0;
    for (event_id, last) in latest {
        let queued_at = last.queued_at.map_or(0, |t| t.seconds);
        if queued_at < since || attempt_log::delivered(&last) {
            continue;
        }
        let event = match engine.event_at(last.stream_sequence, &event_id).await {
            Ok(event) => event,
            Err(EventError::Gone(e)) => {
                tracing::warn!(endpoint = %id, event = %event_id, error = %e, "not recovered");
                continue;
            }
            Err(unavailable) => return Err(unavailable.into()),
        };
        engine
            .enqueue(
                id,
                &event,
                last.stream_sequence,
                Queue::Again,
                &Default::default(),
            )
            .await?;
        queued += 1;
    }
    Ok(Queued { queued })
}
