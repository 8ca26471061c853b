//! What the routes read from a request, and the checks they share. A body or query that cannot
//! be read answers 400 naming the field; a value that is refused answers 422.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ApiResult};
use crate::engine::Engine;

/// Parses a JSON body; a bad field (unknown, wrong type, missing) is named.
pub fn parse<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let source = if body.is_empty() { &b"{}"[..] } else { body };
    let mut deserializer = serde_json::Deserializer::from_slice(source);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // A missing field is reported at its parent; name the field itself.
        let field = match message.strip_prefix("missing field `") {
            Some(rest) if path == "." => rest.split('`').next().unwrap_or_default().to_owned(),
            Some(rest) => format!("{path}.{}", rest.split('`').next().unwrap_or_default()),
            None => path,
        };
        ApiError::unreadable(field, message)
    })
}

/// The query string as `T`, like axum's `Query`, but a parameter that cannot be read (an unknown
/// one, `?limit=abc`) answers the JSON error naming it.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Params)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                let field = match message.strip_prefix("unknown field `") {
                    Some(rest) => rest.split('`').next().unwrap_or_default().to_owned(),
                    None if path == "." => "query".to_owned(),
                    None => path,
                };
                ApiError::unreadable(field, message)
            })
    }
}

pub fn rfc3339(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
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
pub fn check_url(engine: &Engine, url: &str) -> ApiResult<String> {
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

pub fn check_event_types(patterns: &[String]) -> ApiResult<()> {
    for (i, pattern) in patterns.iter().enumerate() {
        crate::endpoint::check_pattern(pattern)
            .map_err(|e| ApiError::invalid(format!("event_types[{i}]"), e))?;
    }
    Ok(())
}

pub fn check_sources(sources: &[String]) -> ApiResult<()> {
    for (i, source) in sources.iter().enumerate() {
        hookbus_bus::SourceName::parse(source)
            .map_err(|e| ApiError::invalid(format!("sources[{i}]"), e))?;
    }
    Ok(())
}

pub fn check_tenant(tenant: &str) -> ApiResult<()> {
    if tenant.is_empty() || tenant.len() > 128 || tenant.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "tenant",
            "must be 1 to 128 characters without control characters",
        ));
    }
    Ok(())
}

pub fn check_limits(rate_limit: Option<u32>, max_in_flight: Option<u32>) -> ApiResult<()> {
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

pub fn check_headers(headers: &BTreeMap<String, String>) -> ApiResult<()> {
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
