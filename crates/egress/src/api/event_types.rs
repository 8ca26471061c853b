//! `GET /v1/event-types`: the catalogue of event types seen on `EVENTS` ([`crate::catalogue`]),
//! by name, a page at a time, each with its latest event as an example and, for typed events,
//! the JSON schema of what subscribers receive.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::input::Params;
use super::page::{self, PageRequest};
use crate::deliver::body_of;
use crate::engine::Engine;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct EventTypeOut {
    /// The event type, as endpoints' `event_types` patterns match it.
    pub event_type: String,
    /// The sources it came from.
    pub sources: Vec<String>,
    /// Its events still in `EVENTS`.
    pub count: u64,
    /// The content type subscribers receive.
    pub content_type: String,
    /// The latest event's body as subscribers receive it: JSON, or the text of another body.
    #[schema(value_type = Object)]
    pub example: serde_json::Value,
    /// For typed events: the JSON schema (2020-12) of the body.
    #[schema(value_type = Option<Object>)]
    pub schema: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct EventTypeList {
    pub items: Vec<EventTypeOut>,
    /// Pass as `iterator` for the next page; `null` when `done`.
    pub iterator: Option<String>,
    pub done: bool,
    /// `EVENTS` has more subjects than the catalogue reads (2,000): some types are missing.
    pub partial: bool,
}

#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventTypeQuery {
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 250)]
    pub limit: Option<usize>,
    /// The `iterator` of the previous page.
    pub iterator: Option<String>,
}

/// The event types seen on `EVENTS`, by name.
#[utoipa::path(get, path = "/v1/event-types", tag = "messages", operation_id = "list_event_types",
    params(EventTypeQuery),
    responses((status = 200, body = EventTypeList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    State(state): AppState,
    Params(query): Params<EventTypeQuery>,
) -> ApiResult<Json<EventTypeList>> {
    list_in(&state.engine, query).await.map(Json)
}

/// A page of the catalogue (the operator's: its examples are any tenant's events).
pub async fn list_in(engine: &Engine, query: EventTypeQuery) -> ApiResult<EventTypeList> {
    let page = PageRequest::new("event-types", query.limit, query.iterator.as_deref())?;
    let seen = engine
        .catalogue
        .seen(&engine.stores.events)
        .await
        .map_err(ApiError::internal)?;
    let start = match &page.after {
        Some(after) => std::ops::Bound::Excluded(after.clone()),
        None => std::ops::Bound::Unbounded,
    };
    let mut found = seen
        .types
        .range((start, std::ops::Bound::Unbounded))
        .take(page.limit + 1);
    let mut items = Vec::with_capacity(page.limit);
    let mut last = None;
    for (name, seen) in found.by_ref().take(page.limit) {
        let (example, content_type) = match body_of(&seen.example, &engine.registry) {
            Ok((body, content_type)) => (
                serde_json::from_slice(&body).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
                }),
                content_type,
            ),
            Err(e) => (
                serde_json::Value::String(e.to_string()),
                seen.example.content_type.clone(),
            ),
        };
        let schema = hookbus_proto::proto_name_of(&seen.example.content_type)
            .and_then(hookbus_proto::json_schema);
        last = Some(name.clone());
        items.push(EventTypeOut {
            event_type: name.clone(),
            sources: seen.sources.iter().cloned().collect(),
            count: seen.count,
            content_type,
            example,
            schema,
        });
    }
    let more = found.next().is_some();
    let (iterator, done) = page::next("event-types", last.filter(|_| more).as_deref());
    Ok(EventTypeList {
        items,
        iterator,
        done,
        partial: seen.partial,
    })
}
