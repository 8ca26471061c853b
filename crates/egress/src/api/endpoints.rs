//! `/v1/endpoints`: create, list (by tenant, paginated), read, change and delete endpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hookbus_proto::egress::v1::{Endpoint, EndpointSecret};
use hookbus_signature::SigningSecret;
use prost::Message;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::input::{
    Params, check_event_types, check_headers, check_limits, check_sources, check_tenant, check_url,
    parse, rfc3339,
};
use super::page::{self, PageRequest};
use crate::access::Scope;
use crate::engine::{Engine, timestamp, unix_now};
use crate::records;
use crate::store;

/// A new endpoint.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointIn {
    /// Where deliveries are POSTed (`http` or `https`).
    #[schema(format = "uri")]
    pub(crate) url: String,
    #[serde(default)]
    pub(crate) description: String,
    /// Event-type patterns (`*` one token, `>` the rest); empty = every type but `hookbus.*`.
    #[serde(default)]
    pub(crate) event_types: Vec<String>,
    /// Sources to take events from; empty = all.
    #[serde(default)]
    pub(crate) sources: Vec<String>,
    /// The customer this endpoint belongs to.
    #[schema(min_length = 1, max_length = 128)]
    pub(crate) tenant: Option<String>,
    /// A `whsec_` secret; generated when absent.
    #[schema(pattern = "^whsec_")]
    pub(crate) secret: Option<String>,
    /// Requests per second; 0 or absent = unlimited.
    #[serde(default)]
    #[schema(maximum = 100_000)]
    pub(crate) rate_limit: u32,
    /// Requests in flight at once (across replicas); absent = `egress.default_max_in_flight`.
    #[schema(minimum = 1, maximum = 10_000)]
    pub(crate) max_in_flight: Option<u32>,
    /// Headers added to every delivery.
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) disabled: bool,
}

/// A change to an endpoint: only the fields present change. `tenant: ""` removes the tenant.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    #[schema(format = "uri")]
    pub(crate) url: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) event_types: Option<Vec<String>>,
    pub(crate) sources: Option<Vec<String>>,
    #[schema(max_length = 128)]
    pub(crate) tenant: Option<String>,
    #[schema(maximum = 100_000)]
    pub(crate) rate_limit: Option<u32>,
    #[schema(minimum = 1, maximum = 10_000)]
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) headers: Option<BTreeMap<String, String>>,
    pub(crate) disabled: Option<bool>,
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
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Only in the answer to a create: the signing secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A page of endpoints, by id (which is creation order).
#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    pub items: Vec<EndpointOut>,
    /// Pass as `iterator` for the next page; `null` when `done`.
    pub iterator: Option<String>,
    /// Nothing follows this page.
    pub done: bool,
}

pub fn out(record: &Endpoint, default_in_flight: u32) -> EndpointOut {
    let seconds = |t: &Option<hookbus_proto::Timestamp>| {
        rfc3339(t.as_ref().map(|t| t.seconds).unwrap_or_default())
    };
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
        created_at: seconds(&record.created_at),
        updated_at: seconds(&record.updated_at),
        secret: None,
    }
}

/// The endpoint record in the bucket, if `scope` sees it: another tenant's endpoint answers 404,
/// exactly as one that does not exist.
pub async fn load(engine: &Engine, scope: &Scope, id: &str) -> ApiResult<(Endpoint, u64)> {
    let (record, revision) = records::load(&engine.stores.endpoints, id).await?;
    if !scope.sees(&record) {
        return Err(ApiError::no_endpoint(id));
    }
    Ok((record, revision))
}

/// Changes an endpoint record that `scope` sees (see [`records::update`]); 404 when there is
/// none, or `scope` does not see it (nothing changes then).
pub async fn update_record(
    engine: &Engine,
    scope: &Scope,
    id: &str,
    mut change: impl FnMut(&mut Endpoint) -> bool,
) -> ApiResult<Endpoint> {
    let visible = |record: &mut Endpoint| scope.sees(record) && change(record);
    records::update(&engine.stores.endpoints, &engine.directory, id, visible)
        .await?
        .ok_or_else(|| ApiError::no_endpoint(id))
}

/// Create an endpoint.
#[utoipa::path(post, path = "/v1/endpoints", tag = "endpoints", operation_id = "create_endpoint",
    request_body = EndpointIn,
    responses((status = 201, body = EndpointOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create(
    State(state): AppState,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<EndpointOut>)> {
    let input: EndpointIn = parse(&body)?;
    let created = create_in(&state.engine, &Scope::Operator, input).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Creates an endpoint for `scope`: a tenant's is always its own. The answer holds the secret.
pub async fn create_in(
    engine: &Engine,
    scope: &Scope,
    mut input: EndpointIn,
) -> ApiResult<EndpointOut> {
    if let Some(own) = scope.tenant() {
        if input.tenant.as_deref().is_some_and(|t| t != own) {
            return Err(ApiError::invalid("tenant", "must be your own tenant"));
        }
        input.tenant = Some(own.to_owned());
    }
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
    let id = crate::records::EndpointId::random().into_string();
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
    Ok(body)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this tenant's endpoints.
    pub tenant: Option<String>,
    /// Only the disabled (`true`) or the enabled (`false`) ones.
    pub disabled: Option<bool>,
    /// Only those whose URL holds this text.
    #[param(max_length = 2048)]
    pub url_contains: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 250)]
    pub limit: Option<usize>,
    /// The `iterator` of the previous page.
    pub iterator: Option<String>,
}

/// Endpoints a filtered page looks at, at most: a page with `disabled` or `url_contains` may
/// hold fewer than `limit` and still not be `done`.
const FILTER_SCAN: usize = 10_000;

/// List endpoints by id (never with their secrets), a page at a time.
#[utoipa::path(get, path = "/v1/endpoints", tag = "endpoints", operation_id = "list_endpoints",
    params(ListQuery),
    responses((status = 200, body = EndpointList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): AppState,
    Params(query): Params<ListQuery>,
) -> ApiResult<Json<EndpointList>> {
    list_in(&state.engine, &Scope::Operator, query).map(Json)
}

/// A page of the endpoints `scope` sees: a tenant's list is always its own.
pub fn list_in(engine: &Engine, scope: &Scope, mut query: ListQuery) -> ApiResult<EndpointList> {
    if let Some(own) = scope.tenant() {
        if query.tenant.as_deref().is_some_and(|t| t != own) {
            return Ok(EndpointList {
                items: Vec::new(),
                iterator: None,
                done: true,
            });
        }
        query.tenant = Some(own.to_owned());
    }
    if let Some(tenant) = &query.tenant {
        check_tenant(tenant)?;
    }
    let page = PageRequest::new("endpoints", query.limit, query.iterator.as_deref())?;
    let contains = query.url_contains.as_deref().filter(|t| !t.is_empty());
    if contains.is_some_and(|t| t.len() > 2048) {
        return Err(ApiError::invalid(
            "url_contains",
            "must be at most 2048 bytes",
        ));
    }
    let filtered = query.disabled.is_some() || contains.is_some();
    let keep = |live: &crate::directory::Live| {
        query.disabled.is_none_or(|d| live.record.disabled == d)
            && contains.is_none_or(|text| live.record.url.contains(text))
    };
    let (found, next) = engine.directory.page_where(
        query.tenant.as_deref(),
        page.after.as_deref(),
        page.limit,
        keep,
        if filtered { FILTER_SCAN } else { usize::MAX },
    );
    let items = found
        .iter()
        .map(|live| out(&live.record, engine.settings.default_max_in_flight))
        .collect();
    let (iterator, done) = page::next("endpoints", next.as_deref());
    Ok(EndpointList {
        items,
        iterator,
        done,
    })
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/endpoints/{id}", tag = "endpoints", operation_id = "get_endpoint",
    params(("id" = String, Path)),
    responses((status = 200, body = EndpointOut), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get(State(state): AppState, Path(id): Path<String>) -> ApiResult<Json<EndpointOut>> {
    let (record, _) = load(&state.engine, &Scope::Operator, &id).await?;
    Ok(Json(out(
        &record,
        state.engine.settings.default_max_in_flight,
    )))
}

/// Change an endpoint. `disabled: false` enables it again; what was queued meanwhile follows.
#[utoipa::path(patch, path = "/v1/endpoints/{id}", tag = "endpoints", operation_id = "update_endpoint",
    params(("id" = String, Path)),
    request_body = EndpointPatch,
    responses((status = 200, body = EndpointOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn update(
    State(state): AppState,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<EndpointOut>> {
    let patch: EndpointPatch = parse(&body)?;
    update_in(&state.engine, &Scope::Operator, &id, patch)
        .await
        .map(Json)
}

/// Changes an endpoint that `scope` sees; a tenant cannot move one to another tenant.
pub async fn update_in(
    engine: &Engine,
    scope: &Scope,
    id: &str,
    patch: EndpointPatch,
) -> ApiResult<EndpointOut> {
    if let (Some(own), Some(tenant)) = (scope.tenant(), patch.tenant.as_deref())
        && tenant != own
    {
        return Err(ApiError::invalid("tenant", "must be your own tenant"));
    }
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
    let record = update_record(engine, scope, id, |record| {
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
    .await?;
    if patch.disabled == Some(false) {
        // What was held while it was disabled follows.
        engine.release_held(id).await?;
    }
    Ok(out(&record, engine.settings.default_max_in_flight))
}

/// Delete an endpoint; its queued tasks and scheduled retries are discarded.
#[utoipa::path(delete, path = "/v1/endpoints/{id}", tag = "endpoints", operation_id = "delete_endpoint",
    params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete(State(state): AppState, Path(id): Path<String>) -> ApiResult<StatusCode> {
    delete_in(&state.engine, &Scope::Operator, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes an endpoint that `scope` sees, with its queued tasks and scheduled retries.
pub async fn delete_in(engine: &Engine, scope: &Scope, id: &str) -> ApiResult<()> {
    let (_, revision) = load(engine, scope, id).await?;
    engine
        .stores
        .endpoints
        .delete_expect_revision(id, Some(revision))
        .await
        .map_err(ApiError::internal)?;
    // Deliveries on this replica stop once its directory no longer has the endpoint.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while engine.directory.get(id).is_some() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for filter in [
        engine.task_subject(id),
        store::retry_subject(id, "*"),
        store::held_subject(id),
    ] {
        engine
            .stores
            .tasks
            .purge()
            .filter(filter)
            .await
            .map_err(ApiError::internal)?;
    }
    let _ = engine.stores.health.delete(id).await;
    Ok(())
}
