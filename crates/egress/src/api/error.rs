//! The error every route answers: `{"error": {"code", "message", "field"?}}`. A refused request
//! names what was wrong; a failure of the egress or its broker answers a generic 503, and its
//! cause goes to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hookbus_service::HttpError;

use crate::engine::EventError;
use crate::records::RecordError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

pub use hookbus_service::ErrorBody;

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// A request that cannot be read (400): `field` names the part that is wrong.
    pub fn unreadable(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self {
            message: format!("{field}: {message}"),
            field: Some(field),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request", "")
        }
    }

    /// A well-formed request with a value that is refused (422).
    pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self {
            message: format!("{field}: {message}"),
            field: Some(field),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "")
        }
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
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The request field that was wrong, when one was.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// What the client is told.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        HttpError {
            status: self.status,
            code: self.code,
            message: self.message,
            field: self.field,
            retry_after: (self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(1),
        }
        .into_response()
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
