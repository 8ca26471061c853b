//! `/v1/endpoints/{id}/secret`: read an endpoint's signing secrets, and rotate them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use hookbus_proto::egress::v1::{Endpoint, EndpointSecret};
use hookbus_signature::SigningSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::endpoints::{load, update_record};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::input::{parse, rfc3339};
use crate::access::Scope;
use crate::engine::{Engine, timestamp, unix_now};

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SecretOut {
    /// The current secret.
    #[schema(pattern = "^whsec_")]
    pub key: String,
    /// Earlier secrets that still sign, until `expires_at`.
    pub previous: Vec<PreviousSecret>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PreviousSecret {
    #[schema(pattern = "^whsec_")]
    pub key: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// The endpoint's signing secrets.
#[utoipa::path(get, path = "/v1/endpoints/{id}/secret", tag = "endpoints", operation_id = "get_secret",
    params(("id" = String, Path)),
    responses((status = 200, body = SecretOut), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get(State(state): AppState, Path(id): Path<String>) -> ApiResult<Json<SecretOut>> {
    get_in(&state.engine, &Scope::Operator, &id).await.map(Json)
}

/// The signing secrets of an endpoint that `scope` sees.
pub async fn get_in(engine: &Engine, scope: &Scope, id: &str) -> ApiResult<SecretOut> {
    let (record, _) = load(engine, scope, id).await?;
    secret_out(engine, &record)
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
    #[schema(pattern = "^whsec_")]
    pub key: Option<String>,
}

/// Rotate the secret: the new one signs from now on, the old one alongside it until the overlap
/// (`egress.rotation_overlap`, 24 h by default) ends.
#[utoipa::path(post, path = "/v1/endpoints/{id}/secret/rotate", tag = "endpoints", operation_id = "rotate_secret",
    params(("id" = String, Path)),
    request_body = RotateIn,
    responses((status = 200, body = SecretOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn rotate(
    State(state): AppState,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<SecretOut>> {
    let input: RotateIn = parse(&body)?;
    rotate_in(&state.engine, &Scope::Operator, &id, input)
        .await
        .map(Json)
}

/// Rotates the secret of an endpoint that `scope` sees.
pub async fn rotate_in(
    engine: &Engine,
    scope: &Scope,
    id: &str,
    input: RotateIn,
) -> ApiResult<SecretOut> {
    let secret = match &input.key {
        Some(text) => SigningSecret::parse(text).map_err(|e| ApiError::invalid("key", e))?,
        None => SigningSecret::from_key(engine.secrets.random_key()),
    };
    let now = unix_now();
    let until = now + engine.settings.rotation_overlap.as_secs() as i64;
    let sealed = bytes::Bytes::from(engine.secrets.seal(id, secret.key()));
    let record = update_record(engine, scope, id, |record| {
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
    .await?;
    secret_out(engine, &record)
}
