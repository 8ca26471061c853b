//! `POST /v1/messages`: a message for the subscribers, published as an event from source `api`.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use hookbus_proto::v1::Event;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::input::{check_tenant, parse};
use crate::engine::{timestamp, unix_now};
use crate::records::valid_id;

/// A message for the subscribers: becomes an event from source `api`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageIn {
    /// The event type, dot separated (`invoice.paid`).
    event_type: String,
    /// The JSON body subscribers receive, byte for byte as sent here.
    #[schema(value_type = Object)]
    payload: Box<serde_json::value::RawValue>,
    /// The customer it is for: it goes only to that tenant's endpoints.
    #[schema(min_length = 1, max_length = 128)]
    tenant: Option<String>,
    /// An idempotency key: the same id is one event (default: a new UUIDv7).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    id: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct MessageOut {
    pub id: String,
    /// The event was published before with this id (within the broker's duplicate window).
    pub duplicate: bool,
}

/// Send a message to every matching endpoint.
#[utoipa::path(post, path = "/v1/messages", tag = "messages", operation_id = "create_message",
    request_body = MessageIn,
    responses((status = 202, body = MessageOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create(
    State(state): AppState,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<MessageOut>)> {
    let engine = &state.engine;
    let input: MessageIn = parse(&body)?;
    let event_type = input.event_type.trim();
    crate::endpoint::check_pattern(event_type).map_err(|e| ApiError::invalid("event_type", e))?;
    if event_type.contains(['*', '>']) {
        return Err(ApiError::invalid("event_type", "must not hold wildcards"));
    }
    if event_type.split('.').next() == Some("hookbus") {
        return Err(ApiError::invalid(
            "event_type",
            "hookbus.* is reserved for the egress's own events",
        ));
    }
    if let Some(tenant) = &input.tenant {
        check_tenant(tenant)?;
    }
    let id = match input.id {
        Some(id) if valid_id(&id) => id,
        Some(_) => {
            return Err(ApiError::invalid(
                "id",
                "must be 1 to 128 letters, digits, - or _",
            ));
        }
        None => uuid::Uuid::now_v7().to_string(),
    };
    let payload = input.payload.get().as_bytes().to_vec();
    let event = Event {
        id: id.clone(),
        source: "api".into(),
        r#type: event_type.to_owned(),
        provider: "hookbus".into(),
        received_at: Some(timestamp(unix_now())),
        delivery_id: id.clone(),
        tenant: input.tenant,
        content_type: "application/json".into(),
        payload: payload.into(),
        ..Event::default()
    };
    let subject = hookbus_bus::subject::event_subject("api", event_type);
    let published = engine
        .publisher
        .publish_event(
            subject,
            &event,
            &format!("api:{id}"),
            tokio::time::Instant::now() + Duration::from_millis(2500),
            &hookbus_telemetry::TraceContext::default(),
        )
        .await
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageOut {
            id,
            duplicate: published.duplicate,
        }),
    ))
}
