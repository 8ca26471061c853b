//! `GET /v1/stock/{sku}`, `GET /v1/stock?below=N`, `PUT /v1/stock/{sku}` (bearer token),
//! `/readyz`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookbus_commerce::Sku;
use hookbus_service::HttpError;
use hookbus_store::StoreError;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::batch::{ApplyError, Op};
use crate::store::{Cause, Inventory};

pub struct AppState {
    pub inventory: Arc<Inventory>,
    pub api_token: Option<SecretString>,
    pub wake_relay: Arc<Notify>,
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    HttpError::new(status, code, message).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    HttpError::internal("inventory request failed", e).into_response()
}

pub async fn get_stock(State(state): State<Arc<AppState>>, Path(sku): Path<String>) -> Response {
    match state.inventory.level(&sku).await {
        Ok(Some(level)) => Json(level).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "unknown_sku",
            format!("no stock recorded for SKU {sku:?}"),
        ),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
pub struct BelowQuery {
    below: Option<String>,
}

pub async fn list_stock(
    State(state): State<Arc<AppState>>,
    Query(query): Query<BelowQuery>,
) -> Response {
    let below = match query.below.as_deref().map(str::parse::<i64>) {
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "below: must be an integer",
            );
        }
        None => i64::MAX,
    };
    match state.inventory.below(below).await {
        Ok(levels) => Json(serde_json::json!({ "items": levels })).into_response(),
        Err(e) => internal(e),
    }
}

/// `PUT /v1/stock/{sku}` body: the new level, and optionally the SKU's low-stock threshold.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutStock {
    level: serde_json::Value,
    threshold: Option<serde_json::Value>,
}

/// A field of a stock update that is not a non-negative integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum FieldError {
    #[error("{0}: must not be negative")]
    Negative(&'static str),
    #[error("{0}: must be an integer")]
    NotInteger(&'static str),
}

/// A non-negative integer, or an error naming `field`.
fn non_negative(field: &'static str, value: &serde_json::Value) -> Result<i64, FieldError> {
    match value.as_i64() {
        Some(n) if n >= 0 => Ok(n),
        Some(_) => Err(FieldError::Negative(field)),
        None => Err(FieldError::NotInteger(field)),
    }
}

pub async fn put_stock(
    State(state): State<Arc<AppState>>,
    Path(sku): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let authorized = match (&state.api_token, presented) {
        (Some(token), Some(presented)) => {
            bool::from(token.expose_secret().as_bytes().ct_eq(presented.as_bytes()))
        }
        _ => false,
    };
    if !authorized {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        );
    }
    if Sku::parse(&sku).is_err() || sku.len() > 200 {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "sku: 1 to 200 characters",
        );
    }
    let put: PutStock = match serde_json::from_slice(&body) {
        Ok(put) => put,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()),
    };
    let invalid = |e: FieldError| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            e.to_string(),
        )
    };
    let level = match non_negative("level", &put.level) {
        Ok(level) => level,
        Err(message) => return invalid(message),
    };
    let threshold = match put
        .threshold
        .as_ref()
        .map(|t| non_negative("threshold", t))
        .transpose()
    {
        Ok(threshold) => threshold,
        Err(message) => return invalid(message),
    };
    let cause = Cause {
        event_id: format!("api:{}", uuid::Uuid::now_v7()),
        traceparent: None,
    };
    let result = async {
        let mut tx = state.inventory.store().begin().await?;
        let stock = state
            .inventory
            .adjust(&mut tx, &sku, Op::Set(level), threshold, &cause)
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, ApplyError>(stock)
    }
    .await;
    match result {
        Ok(stock) => {
            state.wake_relay.notify_one();
            Json(stock).into_response()
        }
        Err(e) => internal(e),
    }
}
