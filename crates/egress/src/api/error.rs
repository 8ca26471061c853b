//! The error every route answers: `{"error": {"code", "message", "field"?}}`. A refused request
//! names what was wrong; a failure of the egress or its broker answers a generic 503, and its
//! cause goes to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hookbus_service::HttpError;

use crate::engine::EventError;
use crate::records::RecordError;
use crate::store::StoreError;

/// An error answer of the API: the services' one [`HttpError`], with the egress's codes and a
/// `Retry-After: 1` on every 503.
#[derive(Debug)]
pub struct ApiError(HttpError);

pub use hookbus_service::ErrorBody;

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let error = HttpError::new(status, code, message);
        Self(if status == StatusCode::SERVICE_UNAVAILABLE {
            error.retry_after(1)
        } else {
            error
        })
    }

    /// `field: message`, naming `field`.
    fn about(
        status: StatusCode,
        code: &'static str,
        field: String,
        message: impl std::fmt::Display,
    ) -> Self {
        let text = format!("{field}: {message}");
        Self(Self::new(status, code, text).0.field(field))
    }

    /// A request that cannot be read (400): `field` names the part that is wrong.
    pub fn unreadable(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self::about(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            field.into(),
            message,
        )
    }

    /// A well-formed request with a value that is refused (422).
    pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self::about(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            field.into(),
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn no_endpoint(id: &str) -> Self {
        Self::not_found(format!("no endpoint {id}"))
    }

    /// A failure of the egress or its broker: the cause goes to the log, the client gets a
    /// generic answer to try again.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "egress API failure");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the egress could not complete the request; try again",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The request field that was wrong, when one was.
    pub fn field(&self) -> Option<&str> {
        self.0.field.as_deref()
    }

    /// What the client is told.
    pub fn message(&self) -> &str {
        &self.0.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
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
            RecordError::NotFound(id) => Self::no_endpoint(&id),
            other => Self::internal(other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::internal(e)
    }
}
