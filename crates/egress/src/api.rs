//! The management API: endpoints, secrets, messages, attempts, resend, recover and dead letters,
//! behind a bearer token compared in constant time. The OpenAPI document at `/openapi.json` is
//! built from the same handler annotations that build the router, so the two cannot drift.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::RawMessageErrorKind;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hookbus_proto::egress::v1::{DeliveryAttempt, DeliveryTask, Endpoint, EndpointSecret};
use hookbus_proto::v1::Event;
use hookbus_signature::SigningSecret;
use prost::Message;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use subtle::ConstantTimeEq;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::dispatch::Queue;
use crate::engine::{DLQ_CONSUMER, Engine, EventError, timestamp, unix_now};
use crate::records::{self, RecordError, valid_id};
use crate::store::{self, State as TaskState, StoreError};

pub struct ApiState {
    pub engine: Arc<Engine>,
    pub token: SecretString,
}

type AppState = State<Arc<ApiState>>;

// ------------------------------------------------------------------- errors

/// `{"error": {"code", "message", "field"?}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    code: String,
    message: String,
    /// The request field that was wrong, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl ApiError {
    fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_field",
            message: format!("{field}: {message}"),
            field: Some(field),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            field: None,
        }
    }

    /// A failure of the egress or its broker: the cause goes to the log, the client gets a
    /// generic answer to try again.
    fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "egress API failure");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: "the egress could not complete the request; try again".into(),
            field: None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: self.code.into(),
                    message: self.message,
                    field: self.field,
                },
            }),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Parses a JSON body; a bad field (unknown, wrong type, missing) is named.
fn parse<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let source = if body.is_empty() { &b"{}"[..] } else { body };
    let mut deserializer = serde_json::Deserializer::from_slice(source);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // A missing field is reported at its parent; name the field itself.
        let field = match message.strip_prefix("missing field `") {
            Some(rest) if path == "." => rest.split('`').next().unwrap_or_default().to_owned(),
            Some(rest) => format!("{path}.{}", rest.split('`').next().unwrap_or_default()),
            None => path,
        };
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: format!("{field}: {message}"),
            field: Some(field),
        }
    })
}

// ------------------------------------------------------------------- auth

async fn require_token(State(state): AppState, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = state.token.expose_secret().as_bytes();
    if !bool::from(expected.ct_eq(presented.as_bytes())) {
        return ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "a valid bearer token is required (Authorization: Bearer <egress.api_token>)"
                .into(),
            field: None,
        }
        .into_response();
    }
    next.run(request).await
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "hookbus egress", description = "Endpoints, messages and deliveries of the hookbus egress."),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

/// The management routes (behind the token) and the OpenAPI document that describes them.
pub fn router(state: Arc<ApiState>) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (routes, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(get_secret))
        .routes(routes!(rotate_secret))
        .routes(routes!(create_message))
        .routes(routes!(list_attempts))
        .routes(routes!(resend))
        .routes(routes!(recover))
        .routes(routes!(list_dead_letters))
        .routes(routes!(retry_dead_letter))
        .split_for_parts();
    let routes = routes
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state);
    (routes, document)
}

// ------------------------------------------------------------------- endpoints

/// A new endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointIn {
    /// Where deliveries are POSTed (`http` or `https`).
    url: String,
    #[serde(default)]
    description: String,
    /// Event-type patterns (`*` one token, `>` the rest); empty = every type but `hookbus.*`.
    #[serde(default)]
    event_types: Vec<String>,
    /// Sources to take events from; empty = all.
    #[serde(default)]
    sources: Vec<String>,
    /// The customer this endpoint belongs to.
    tenant: Option<String>,
    /// A `whsec_` secret; generated when absent.
    secret: Option<String>,
    /// Requests per second; 0 or absent = unlimited.
    #[serde(default)]
    rate_limit: u32,
    /// Requests in flight at once (across replicas); absent = `egress.default_max_in_flight`.
    max_in_flight: Option<u32>,
    /// Headers added to every delivery.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    disabled: bool,
}

/// A change to an endpoint: only the fields present change. `tenant: ""` removes the tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    url: Option<String>,
    description: Option<String>,
    event_types: Option<Vec<String>>,
    sources: Option<Vec<String>>,
    tenant: Option<String>,
    rate_limit: Option<u32>,
    max_in_flight: Option<u32>,
    headers: Option<BTreeMap<String, String>>,
    disabled: Option<bool>,
}

/// An endpoint, without its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EndpointOut {
    pub id: String,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub sources: Vec<String>,
    pub tenant: Option<String>,
    pub rate_limit: u32,
    pub max_in_flight: u32,
    pub headers: BTreeMap<String, String>,
    pub disabled: bool,
    pub created_at: String,
    pub updated_at: String,
    /// Only in the answer to a create: the signing secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    items: Vec<EndpointOut>,
}

fn rfc3339(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn out(record: &Endpoint, default_in_flight: u32) -> EndpointOut {
    EndpointOut {
        id: record.id.clone(),
        url: record.url.clone(),
        description: record.description.clone(),
        event_types: record.event_types.clone(),
        sources: record.sources.clone(),
        tenant: record.tenant.clone(),
        rate_limit: record.rate_limit,
        max_in_flight: match record.max_in_flight {
            0 => default_in_flight,
            n => n,
        },
        headers: record.headers.clone().into_iter().collect(),
        disabled: record.disabled,
        created_at: rfc3339(
            record
                .created_at
                .as_ref()
                .map(|t| t.seconds)
                .unwrap_or_default(),
        ),
        updated_at: rfc3339(
            record
                .updated_at
                .as_ref()
                .map(|t| t.seconds)
                .unwrap_or_default(),
        ),
        secret: None,
    }
}

/// Headers the egress sets itself, which an endpoint may not override.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "user-agent",
    "traceparent",
    "tracestate",
];

/// The URL as it is stored, once it passes the address policy's checks.
fn check_url(engine: &Engine, url: &str) -> ApiResult<String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| ApiError::invalid("url", e))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::invalid(
            "url",
            "must not hold credentials (use headers)",
        ));
    }
    engine
        .settings
        .policy()
        .check_url(&parsed)
        .map_err(|e| ApiError::invalid("url", e))?;
    Ok(parsed.to_string())
}

fn check_event_types(patterns: &[String]) -> ApiResult<()> {
    for (i, pattern) in patterns.iter().enumerate() {
        crate::endpoint::check_pattern(pattern)
            .map_err(|e| ApiError::invalid(format!("event_types[{i}]"), e))?;
    }
    Ok(())
}

fn check_sources(sources: &[String]) -> ApiResult<()> {
    for (i, source) in sources.iter().enumerate() {
        hookbus_bus::subject::check_source_name(source)
            .map_err(|e| ApiError::invalid(format!("sources[{i}]"), e))?;
    }
    Ok(())
}

fn check_tenant(tenant: &str) -> ApiResult<()> {
    if tenant.is_empty() || tenant.len() > 128 || tenant.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "tenant",
            "must be 1 to 128 characters without control characters",
        ));
    }
    Ok(())
}

fn check_limits(rate_limit: Option<u32>, max_in_flight: Option<u32>) -> ApiResult<()> {
    if rate_limit.is_some_and(|r| r > 100_000) {
        return Err(ApiError::invalid("rate_limit", "must be at most 100000"));
    }
    if let Some(n) = max_in_flight
        && !(1..=10_000).contains(&n)
    {
        return Err(ApiError::invalid("max_in_flight", "must be 1 to 10000"));
    }
    Ok(())
}

fn check_headers(headers: &BTreeMap<String, String>) -> ApiResult<()> {
    for (name, value) in headers {
        let field = format!("headers.{name}");
        let lower = name.to_ascii_lowercase();
        if header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ApiError::invalid(field, "is not a valid header name"));
        }
        if header::HeaderValue::from_str(value).is_err() {
            return Err(ApiError::invalid(field, "is not a valid header value"));
        }
        if RESERVED_HEADERS.contains(&lower.as_str())
            || lower.starts_with("webhook-")
            || lower.starts_with("hookbus-")
        {
            return Err(ApiError::invalid(field, "is set by the egress itself"));
        }
    }
    Ok(())
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        match e {
            EventError::Gone(message) => Self::not_found(message),
            EventError::Unavailable(message) => Self::internal(message),
        }
    }
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::NotFound(id) => not_found(&id),
            other => Self::internal(other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::internal(e)
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no endpoint {id}"))
}

/// The endpoint record in the bucket.
async fn load(engine: &Engine, id: &str) -> ApiResult<(Endpoint, u64)> {
    Ok(records::load(&engine.stores.endpoints, id).await?)
}

/// Changes an endpoint record (see [`records::update`]).
async fn update_record(
    engine: &Engine,
    id: &str,
    change: impl FnMut(&mut Endpoint) -> bool,
) -> ApiResult<Option<Endpoint>> {
    Ok(records::update(&engine.stores.endpoints, &engine.directory, id, change).await?)
}

/// Create an endpoint.
#[utoipa::path(post, path = "/v1/endpoints", tag = "endpoints",
    request_body = EndpointIn,
    responses((status = 201, body = EndpointOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_endpoint(
    State(state): AppState,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<EndpointOut>)> {
    let engine = &state.engine;
    let input: EndpointIn = parse(&body)?;
    let url = check_url(engine, &input.url)?;
    check_event_types(&input.event_types)?;
    check_sources(&input.sources)?;
    if let Some(tenant) = &input.tenant {
        check_tenant(tenant)?;
    }
    check_limits(Some(input.rate_limit), input.max_in_flight)?;
    check_headers(&input.headers)?;
    let secret = match &input.secret {
        Some(text) => SigningSecret::parse(text).map_err(|e| ApiError::invalid("secret", e))?,
        None => SigningSecret::from_key(engine.secrets.random_key()),
    };
    let id = format!("ep_{}", uuid::Uuid::now_v7().simple());
    let now = timestamp(unix_now());
    let record = Endpoint {
        id: id.clone(),
        url,
        description: input.description,
        event_types: input.event_types,
        sources: input.sources,
        tenant: input.tenant,
        secrets: vec![EndpointSecret {
            ciphertext: engine.secrets.seal(&id, secret.key()).into(),
            expires_at: None,
        }],
        rate_limit: input.rate_limit,
        max_in_flight: input.max_in_flight.unwrap_or(0),
        headers: input.headers.into_iter().collect(),
        disabled: input.disabled,
        created_at: Some(now),
        updated_at: Some(now),
    };
    let revision = engine
        .stores
        .endpoints
        .create(&id, record.encode_to_vec().into())
        .await
        .map_err(ApiError::internal)?;
    engine
        .directory
        .caught_up(revision, Duration::from_secs(5))
        .await;
    let mut body = out(&record, engine.settings.default_max_in_flight);
    body.secret = Some(secret.expose());
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct ListQuery {
    /// Only this tenant's endpoints.
    tenant: Option<String>,
}

/// List endpoints (never with their secrets).
#[utoipa::path(get, path = "/v1/endpoints", tag = "endpoints", params(ListQuery),
    responses((status = 200, body = EndpointList), (status = 401, body = ErrorBody)))]
async fn list_endpoints(
    State(state): AppState,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<EndpointList>> {
    let engine = &state.engine;
    let mut items: Vec<EndpointOut> = engine
        .directory
        .all()
        .iter()
        .filter(|live| query.tenant.is_none() || live.record.tenant == query.tenant)
        .map(|live| out(&live.record, engine.settings.default_max_in_flight))
        .collect();
    items.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(EndpointList { items }))
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 200, body = EndpointOut), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_endpoint(
    State(state): AppState,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointOut>> {
    let (record, _) = load(&state.engine, &id).await?;
    Ok(Json(out(
        &record,
        state.engine.settings.default_max_in_flight,
    )))
}

/// Change an endpoint. `disabled: false` enables it again; what was queued meanwhile follows.
#[utoipa::path(patch, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path)),
    request_body = EndpointPatch,
    responses((status = 200, body = EndpointOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_endpoint(
    State(state): AppState,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<EndpointOut>> {
    let engine = &state.engine;
    let patch: EndpointPatch = parse(&body)?;
    let url = match &patch.url {
        Some(url) => Some(check_url(engine, url)?),
        None => None,
    };
    if let Some(types) = &patch.event_types {
        check_event_types(types)?;
    }
    if let Some(sources) = &patch.sources {
        check_sources(sources)?;
    }
    if let Some(tenant) = patch.tenant.as_deref().filter(|t| !t.is_empty()) {
        check_tenant(tenant)?;
    }
    check_limits(patch.rate_limit, patch.max_in_flight)?;
    if let Some(headers) = &patch.headers {
        check_headers(headers)?;
    }
    let record = update_record(engine, &id, |record| {
        if let Some(url) = &url {
            record.url = url.clone();
        }
        if let Some(v) = &patch.description {
            record.description = v.clone();
        }
        if let Some(v) = &patch.event_types {
            record.event_types = v.clone();
        }
        if let Some(v) = &patch.sources {
            record.sources = v.clone();
        }
        if let Some(v) = &patch.tenant {
            record.tenant = Some(v.clone()).filter(|t| !t.is_empty());
        }
        if let Some(v) = patch.rate_limit {
            record.rate_limit = v;
        }
        if let Some(v) = patch.max_in_flight {
            record.max_in_flight = v;
        }
        if let Some(v) = &patch.headers {
            record.headers = v.clone().into_iter().collect();
        }
        if let Some(v) = patch.disabled {
            record.disabled = v;
        }
        true
    })
    .await?
    .ok_or_else(|| not_found(&id))?;
    if patch.disabled == Some(false) {
        // What was held while it was disabled follows.
        engine.release_held(&id).await?;
    }
    Ok(Json(out(&record, engine.settings.default_max_in_flight)))
}

/// Delete an endpoint; its queued tasks and scheduled retries are discarded.
#[utoipa::path(delete, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_endpoint(State(state): AppState, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let engine = &state.engine;
    let (_, revision) = load(engine, &id).await?;
    engine
        .stores
        .endpoints
        .delete_expect_revision(&id, Some(revision))
        .await
        .map_err(ApiError::internal)?;
    // Deliveries on this replica stop once its directory no longer has the endpoint.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while engine.directory.get(&id).is_some() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for filter in [
        engine.task_subject(&id),
        format!("egress.retry.{id}.*"),
        store::held_subject(&id),
    ] {
        engine
            .stores
            .tasks
            .purge()
            .filter(filter)
            .await
            .map_err(ApiError::internal)?;
    }
    let _ = engine.stores.health.delete(&id).await;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------- secrets

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SecretOut {
    /// The current secret.
    pub key: String,
    /// Earlier secrets that still sign, until `expires_at`.
    pub previous: Vec<PreviousSecret>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PreviousSecret {
    pub key: String,
    pub expires_at: String,
}

/// The endpoint's signing secrets.
#[utoipa::path(get, path = "/v1/endpoints/{id}/secret", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 200, body = SecretOut), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_secret(State(state): AppState, Path(id): Path<String>) -> ApiResult<Json<SecretOut>> {
    let engine = &state.engine;
    let (record, _) = load(engine, &id).await?;
    secret_out(engine, &record).map(Json)
}

fn secret_out(engine: &Engine, record: &Endpoint) -> ApiResult<SecretOut> {
    let now = unix_now();
    let mut key = None;
    let mut previous = Vec::new();
    for secret in &record.secrets {
        let plain = engine
            .secrets
            .open(&record.id, &secret.ciphertext)
            .map_err(ApiError::internal)?;
        let text = SigningSecret::from_key(plain).expose();
        match secret.expires_at.as_ref().map(|t| t.seconds) {
            None => key = Some(text),
            Some(at) if at > now => previous.push(PreviousSecret {
                key: text,
                expires_at: rfc3339(at),
            }),
            Some(_) => {}
        }
    }
    Ok(SecretOut {
        key: key.ok_or_else(|| ApiError::internal("endpoint has no current secret"))?,
        previous,
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateIn {
    /// The new `whsec_` secret; generated when absent.
    key: Option<String>,
}

/// Rotate the secret: the new one signs from now on, the old one alongside it until the overlap
/// (`egress.rotation_overlap`, 24 h by default) ends.
#[utoipa::path(post, path = "/v1/endpoints/{id}/secret/rotate", tag = "endpoints", params(("id" = String, Path)),
    request_body = RotateIn,
    responses((status = 200, body = SecretOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn rotate_secret(
    State(state): AppState,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<SecretOut>> {
    let engine = &state.engine;
    let input: RotateIn = parse(&body)?;
    let secret = match &input.key {
        Some(text) => SigningSecret::parse(text).map_err(|e| ApiError::invalid("key", e))?,
        None => SigningSecret::from_key(engine.secrets.random_key()),
    };
    let now = unix_now();
    let until = now + engine.settings.rotation_overlap.as_secs() as i64;
    let sealed = bytes::Bytes::from(engine.secrets.seal(&id, secret.key()));
    let record = update_record(engine, &id, |record| {
        record
            .secrets
            .retain(|s| s.expires_at.as_ref().is_none_or(|t| t.seconds > now));
        for old in &mut record.secrets {
            if old.expires_at.is_none() {
                old.expires_at = Some(timestamp(until));
            }
        }
        record.secrets.insert(
            0,
            EndpointSecret {
                ciphertext: sealed.clone(),
                expires_at: None,
            },
        );
        true
    })
    .await?
    .ok_or_else(|| not_found(&id))?;
    secret_out(engine, &record).map(Json)
}

// ------------------------------------------------------------------- messages

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
    tenant: Option<String>,
    /// An idempotency key: the same id is one event (default: a new UUIDv7).
    id: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct MessageOut {
    pub id: String,
    /// The event was published before with this id (within the broker's duplicate window).
    pub duplicate: bool,
}

/// Send a message to every matching endpoint.
#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = MessageIn,
    responses((status = 202, body = MessageOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn create_message(
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

// ------------------------------------------------------------------- attempts

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AttemptOut {
    pub id: String,
    pub event_id: String,
    /// 1 for the first try.
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
    pub attempted_at: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AttemptList {
    pub items: Vec<AttemptOut>,
}

#[derive(Deserialize, utoipa::IntoParams)]
struct AttemptQuery {
    /// Only the attempts of this event.
    event_id: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    limit: Option<usize>,
}

/// The delivery attempts of an endpoint, newest first.
#[utoipa::path(get, path = "/v1/endpoints/{id}/attempts", tag = "deliveries", params(("id" = String, Path), AttemptQuery),
    responses((status = 200, body = AttemptList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_attempts(
    State(state): AppState,
    Path(id): Path<String>,
    Query(query): Query<AttemptQuery>,
) -> ApiResult<Json<AttemptList>> {
    let engine = &state.engine;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 1 to 1000"));
    }
    load(engine, &id).await?;
    let messages = store::read_all(
        &engine.stores.attempts,
        store::attempts_subject(&id),
        async_nats::jetstream::consumer::DeliverPolicy::All,
    )
    .await
    .map_err(ApiError::internal)?;
    let items = messages
        .iter()
        .rev()
        .filter_map(|m| DeliveryAttempt::decode(m.payload.clone()).ok())
        .filter(|a| query.event_id.as_ref().is_none_or(|e| *e == a.event_id))
        .take(limit)
        .map(|a| AttemptOut {
            status: if a.status
                == hookbus_proto::egress::v1::delivery_attempt::Status::Succeeded as i32
            {
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
        })
        .collect();
    Ok(Json(AttemptList { items }))
}

// ------------------------------------------------------------------- resend and recover

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Queued {
    /// Tasks queued.
    pub queued: usize,
}

/// Deliver one event to one endpoint again (same `webhook-id`), delivered before or not.
#[utoipa::path(post, path = "/v1/endpoints/{id}/messages/{event_id}/resend", tag = "deliveries",
    params(("id" = String, Path), ("event_id" = String, Path)),
    responses((status = 202, body = Queued), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn resend(
    State(state): AppState,
    Path((id, event_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    let engine = &state.engine;
    load(engine, &id).await?;
    if !valid_id(&event_id) {
        return Err(ApiError::not_found(format!(
            "no event {event_id} for endpoint {id}"
        )));
    }
    let status = engine.stores.status(&id, &event_id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "event {event_id} was never queued for endpoint {id}"
        ))
    })?;
    let event = engine.event_at(status.stream_sequence, &event_id).await?;
    engine
        .enqueue(
            &id,
            &event,
            status.stream_sequence,
            Queue::Resend,
            &Default::default(),
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Queued { queued: 1 })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverIn {
    /// RFC 3339: re-send what was queued since then and not delivered.
    since: String,
}

/// Re-send to one endpoint everything since `since` that failed or was never attempted (not what
/// was delivered).
#[utoipa::path(post, path = "/v1/endpoints/{id}/recover", tag = "deliveries", params(("id" = String, Path)),
    request_body = RecoverIn,
    responses((status = 202, body = Queued), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn recover(
    State(state): AppState,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    let engine = &state.engine;
    let input: RecoverIn = parse(&body)?;
    let since =
        time::OffsetDateTime::parse(&input.since, &time::format_description::well_known::Rfc3339)
            .map_err(|e| ApiError::invalid("since", format!("not an RFC 3339 time: {e}")))?
            .unix_timestamp();
    load(engine, &id).await?;
    let statuses = engine.stores.statuses_of(&id).await?;
    let mut queued = 0;
    for (event_id, status) in statuses {
        if status.created_at < since || status.state == TaskState::Delivered {
            continue;
        }
        let event = match engine.event_at(status.stream_sequence, &event_id).await {
            Ok(event) => event,
            Err(EventError::Gone(e)) => {
                tracing::warn!(endpoint = %id, event = %event_id, error = %e, "not recovered");
                continue;
            }
            Err(unavailable) => return Err(unavailable.into()),
        };
        engine
            .enqueue(
                &id,
                &event,
                status.stream_sequence,
                Queue::Again,
                &Default::default(),
            )
            .await?;
        queued += 1;
    }
    Ok((StatusCode::ACCEPTED, Json(Queued { queued })))
}

// ------------------------------------------------------------------- dead letters

#[derive(Serialize, Deserialize, ToSchema)]
pub struct DeadLetterOut {
    /// Its sequence in the `DLQ` stream.
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
}

#[derive(Deserialize, utoipa::IntoParams)]
struct DeadLetterQuery {
    /// Only this endpoint's dead letters.
    endpoint_id: Option<String>,
}

/// Deliveries that exhausted their attempts, oldest first.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "deliveries", params(DeadLetterQuery),
    responses((status = 200, body = DeadLetterList), (status = 401, body = ErrorBody)))]
async fn list_dead_letters(
    State(state): AppState,
    Query(query): Query<DeadLetterQuery>,
) -> ApiResult<Json<DeadLetterList>> {
    let letters = hookbus_bus::dlq::list(&state.engine.stores.js, Some(DLQ_CONSUMER), 10_000)
        .await
        .map_err(ApiError::internal)?;
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
        .filter(|d| {
            query
                .endpoint_id
                .as_ref()
                .is_none_or(|e| *e == d.endpoint_id)
        })
        .collect();
    Ok(Json(DeadLetterList { items }))
}

/// Queue a dead letter again, with a fresh set of attempts.
#[utoipa::path(post, path = "/v1/dead-letters/{id}/retry", tag = "deliveries", params(("id" = u64, Path)),
    responses((status = 202, body = Queued), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn retry_dead_letter(
    State(state): AppState,
    Path(id): Path<u64>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    let engine = &state.engine;
    let missing = || ApiError::not_found(format!("no egress dead letter {id}"));
    let dlq = engine
        .stores
        .js
        .get_stream(hookbus_bus::dlq::DLQ_STREAM)
        .await
        .map_err(ApiError::internal)?;
    let raw = dlq.get_raw_message(id).await.map_err(|e| match e.kind() {
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
    dlq.delete_message(id).await.map_err(ApiError::internal)?;
    Ok((StatusCode::ACCEPTED, Json(Queued { queued: 1 })))
}
