//! The HTTP shell of every service: `/healthz`, `/readyz` from the service's checks, `/metrics`,
//! and the one error body, `{"error": {"code", "message", "field"?}}`.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The body of every error a service answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable code: `invalid_request`, `invalid_field`, `unauthorized`, `not_found`,
    /// `unavailable`, and each service's own (docs/<service>.md).
    pub code: String,
    pub message: String,
    /// The request field that was wrong, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error answer: status, code, message, and the field or `Retry-After` when there is one.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl HttpError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// A failure of the service or what it depends on: `cause` goes to the log as `what`, the
    /// client gets a generic 500 that leaks nothing.
    pub fn internal(what: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// With a `Retry-After` of `seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Naming the request field that was wrong.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// `/readyz`'s answer: 200 `{"status": "ready", <check>: true, …}` when every check holds, else
/// 503 with `not_ready` and each check's value.
pub fn readiness(checks: &[(&str, bool)]) -> Response {
    let ready = checks.iter().all(|(_, ok)| *ok);
    let mut body = serde_json::Map::new();
    body.insert(
        "status".into(),
        (if ready { "ready" } else { "not_ready" }).into(),
    );
    for (name, ok) in checks {
        body.insert((*name).into(), (*ok).into());
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(serde_json::Value::Object(body))).into_response()
}

/// `GET /readyz` of a service with a database and a broker connection: ready while the
/// database answers and the broker is connected.
pub fn readyz_of(store: hookbus_store::Store, client: async_nats::Client) -> axum::Router {
    axum::Router::new().route(
        "/readyz",
        axum::routing::get(move || {
            let (store, client) = (store.clone(), client.clone());
            async move {
                readiness(&[
                    ("database", store.is_reachable().await),
                    ("broker_connected", hookbus_bus::is_connected(&client)),
                ])
            }
        }),
    )
}

/// Serves a service's `app` (its routes and its `/readyz`) with `/healthz` and `/metrics` (from
/// `registry`) added, until `shutdown` completes; in-flight requests finish first.
pub async fn serve(
    service: &str,
    listener: tokio::net::TcpListener,
    app: axum::Router,
    registry: prometheus_client::registry::Registry,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = with_health(app).merge(hookbus_telemetry::metrics_router(Arc::new(registry)));
    tracing::info!(addr = ?listener.local_addr().ok(), "{service} listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// `app` with `GET /healthz`: 200 `{"status": "ok"}` while the process serves.
pub fn with_health(app: axum::Router) -> axum::Router {
    app.route(
        "/healthz",
        axum::routing::get(|| async { Json(serde_json::json!({"status": "ok"})) }),
    )
}
