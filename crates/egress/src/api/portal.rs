//! `POST /v1/tenants/{tenant}/portal`: a link that opens the console scoped to one tenant.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::input::{check_tenant, parse, rfc3339};

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalIn {
    /// Seconds the link may wait to be opened (default `egress.console.portal_link_ttl`).
    #[schema(minimum = 60, maximum = 86400)]
    expires_in: Option<u64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PortalOut {
    /// Opens the tenant's portal once; give it to the tenant's browser (or an iframe).
    #[schema(format = "uri")]
    pub url: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// A signed, short-lived, single-use link that opens the console scoped to `tenant`: its
/// endpoints, their attempts and its messages, nothing else.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/portal", tag = "portal", operation_id = "create_portal_link",
    params(("tenant" = String, Path)),
    request_body(content = PortalIn, description = "optional"),
    responses((status = 201, body = PortalOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): AppState,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<PortalOut>)> {
    let input: PortalIn = parse(&body)?;
    check_tenant(&tenant)?;
    let console = &state.engine.settings.console;
    if !console.enabled {
        return Err(ApiError::not_found(
            "the console is disabled (egress.console.enabled = false), so there is no portal",
        ));
    }
    let ttl = match input.expires_in {
        None => console.portal_link_ttl.as_secs(),
        Some(seconds) if (60..=86_400).contains(&seconds) => seconds,
        Some(_) => {
            return Err(ApiError::invalid(
                "expires_in",
                "must be 60 to 86400 seconds",
            ));
        }
    };
    let (token, expires_at) = state.access.portal_link(&tenant, ttl as i64);
    let base = match &console.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '@']))
                .ok_or_else(|| {
                    ApiError::unreadable(
                        "host",
                        "no Host header to build the link from; set egress.console.public_url",
                    )
                })?;
            format!("http://{host}")
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(PortalOut {
            url: format!("{base}/console/portal/{token}"),
            expires_at: rfc3339(expires_at),
        }),
    ))
}
