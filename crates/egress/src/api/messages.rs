//! `POST /v1/messages`: a message for the subscribers, published as an event from source `api`;
//! `GET /v1/messages/{id}`: one event as the egress sends it; and
//! `POST /v1/endpoints/{id}/test`: a test message to one endpoint only.

use std::time::Duration;

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hookbus_bus::{Built, EventBuilder, EventId, EventType, SourceName};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::endpoints::load;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::input::{check_tenant, parse, rfc3339};
use crate::access::Scope;
use crate::attempt_log::{self, Start};
use crate::deliver::body_of;
use crate::dispatch::{Queue, TEST_EVENT_TYPE};
use crate::engine::{Engine, EventError};
use crate::records::valid_id;

/// A message for the subscribers: becomes an event from source `api`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageIn {
    /// The event type, dot separated (`invoice.paid`).
    pub event_type: String,
    /// The JSON body subscribers receive, byte for byte as sent here.
    #[schema(value_type = Object)]
    pub payload: Box<serde_json::value::RawValue>,
    /// The customer it is for: it goes only to that tenant's endpoints.
    #[schema(min_length = 1, max_length = 128)]
    pub tenant: Option<String>,
    /// An idempotency key: the same id is one event (default: a new UUIDv7).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub id: Option<String>,
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
    let input: MessageIn = parse(&body)?;
    let created = create_in(&state.engine, input).await?;
    Ok((StatusCode::ACCEPTED, Json(created)))
}

/// Publishes a message as an event from source `api`.
pub async fn create_in(engine: &Engine, input: MessageIn) -> ApiResult<MessageOut> {
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
    let event_type =
        EventType::parse(event_type).map_err(|e| ApiError::invalid("event_type", e))?;
    let id = match input.id {
        Some(id) => EventId::parse(&id)
            .map_err(|_| ApiError::invalid("id", "must be 1 to 128 letters, digits, - or _"))?,
        None => EventId::random(),
    };
    let payload = input.payload.get().as_bytes().to_vec();
    let source = SourceName::parse("api").expect("a source name");
    let Built { subject, event } = EventBuilder::new(&source, &event_type, payload)
        .id(&id)
        .delivery_id(id.as_str())
        .tenant(input.tenant)
        .build();
    let id = id.into_string();
    let published = publish(engine, subject, &event, &format!("api:{id}")).await?;
    Ok(MessageOut {
        id,
        duplicate: published.duplicate,
    })
}

/// Publishes `event` on `subject` with the message id `msg_id`, within 2.5 s.
async fn publish(
    engine: &Engine,
    subject: String,
    event: &hookbus_proto::v1::Event,
    msg_id: &str,
) -> ApiResult<hookbus_bus::Published> {
    engine
        .publisher
        .publish_event(
            subject,
            event,
            msg_id,
            tokio::time::Instant::now() + Duration::from_millis(2500),
            &hookbus_telemetry::TraceContext::default(),
        )
        .await
        .map_err(ApiError::internal)
}

/// An event as the egress sends it.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct MessageDetail {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub tenant: Option<String>,
    #[schema(format = DateTime)]
    pub received_at: String,
    /// The content type subscribers receive.
    pub content_type: String,
    /// The provider's non-secret headers, as the ingress stored them.
    pub headers: BTreeMap<String, String>,
    /// The body subscribers receive (typed events turned into JSON), as text.
    pub payload: String,
}

/// One message (event) by its id, as long as the egress keeps its dispatch marker or an
/// attempt of it, and `EVENTS` still holds it.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages", operation_id = "get_message",
    params(("id" = String, Path, description = "The event id")),
    responses((status = 200, body = MessageDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get(State(state): AppState, Path(id): Path<String>) -> ApiResult<Json<MessageDetail>> {
    get_in(&state.engine, &Scope::Operator, &id).await.map(Json)
}

/// One message that `scope` sees: another tenant's answers 404, as one that does not exist.
pub async fn get_in(engine: &Engine, scope: &Scope, id: &str) -> ApiResult<MessageDetail> {
    let missing = || ApiError::not_found(format!("no message {id}"));
    if !valid_id(id) {
        return Err(missing());
    }
    let sequence = match engine.stores.dispatched(id).await? {
        Some(sequence) => sequence,
        None => {
            let (found, _) = engine
                .stores
                .attempts
                .forward(&attempt_log::of_message(id), Start::Sequence(1), 1)
                .await?;
            found
                .first()
                .map(|(_, a)| a.stream_sequence)
                .ok_or_else(missing)?
        }
    };
    let event = match engine.event_at(sequence, id).await {
        Err(EventError::Gone(_)) => return Err(missing()),
        event => event?,
    };
    if !scope.sees_tenant(event.tenant.as_deref()) {
        return Err(missing());
    }
    let (payload, content_type) = match body_of(&event, &engine.registry) {
        Ok(body) => body,
        Err(_) => (event.payload.clone(), event.content_type.clone()),
    };
    Ok(MessageDetail {
        received_at: rfc3339(event.received_at.map(|t| t.seconds).unwrap_or_default()),
        payload: String::from_utf8_lossy(&payload).into_owned(),
        content_type,
        headers: event.headers.into_iter().collect(),
        id: event.id,
        source: event.source,
        event_type: event.r#type,
        tenant: event.tenant,
    })
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct TestOut {
    /// The test event's id: its attempts are the endpoint's, under this event id.
    pub id: String,
}

/// Send a test message (`hookbus.endpoint.test`) to this endpoint only.
#[utoipa::path(post, path = "/v1/endpoints/{id}/test", tag = "deliveries", operation_id = "send_test",
    params(("id" = String, Path)),
    responses((status = 202, body = TestOut), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn test(
    State(state): AppState,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<TestOut>)> {
    let sent = test_in(&state.engine, &Scope::Operator, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(sent)))
}

/// Publishes a test event for one endpoint that `scope` sees and queues it for that endpoint:
/// the dispatcher passes test events by, so no other endpoint gets it.
pub async fn test_in(engine: &Engine, scope: &Scope, endpoint: &str) -> ApiResult<TestOut> {
    let (record, _) = load(engine, scope, endpoint).await?;
    let now = hookbus_bus::unix_now();
    let payload = serde_json::json!({
        "type": TEST_EVENT_TYPE,
        "endpoint_id": endpoint,
        "sent_at": rfc3339(now.as_secs() as i64),
    });
    let test_type = EventType::parse(TEST_EVENT_TYPE).expect("a notice type");
    let id = EventId::random();
    let Built { subject, event } = EventBuilder::notice(&test_type, payload.to_string())
        .id(&id)
        .delivery_id(id.as_str())
        .received_at(now)
        .tenant(record.tenant)
        .build();
    let id = id.into_string();
    let published = publish(engine, subject, &event, &format!("test:{id}")).await?;
    engine
        .enqueue(
            endpoint,
            &event,
            published.sequence,
            Queue::Resend,
            &Default::default(),
        )
        .await?;
    Ok(TestOut { id })
}
