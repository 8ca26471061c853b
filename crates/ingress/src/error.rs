//! The ingress's HTTP errors: each has a status and a stable code; the body is
//! `{"error": {"code", "message"}}`. None of these paths publishes anything.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hookbus_service::HttpError;
use hookbus_signature::VerifyError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no source named {0:?} is configured")]
    UnknownSource(String),
    #[error("body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("cannot read the request body: {0}")]
    UnreadableBody(String),
    #[error("{0}")]
    Verify(#[from] VerifyError),
    #[error("source {source_name} accepts at most {limit} requests per second")]
    RateLimited { source_name: String, limit: u32 },
    #[error("the event could not be stored in time ({0}); nothing was accepted, retry later")]
    Unavailable(String, Duration),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownSource(_) => StatusCode::NOT_FOUND,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnreadableBody(_) => StatusCode::BAD_REQUEST,
            Self::Verify(VerifyError::InvalidBody(_)) => StatusCode::BAD_REQUEST,
            Self::Verify(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(..) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownSource(_) => "unknown_source",
            Self::TooLarge { .. } => "payload_too_large",
            Self::UnreadableBody(_) => "invalid_body",
            Self::Verify(e) => e.code(),
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(..) => "broker_unavailable",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = HttpError::new(self.status(), self.code(), self.to_string());
        error.retry_after = match &self {
            Self::RateLimited { .. } => Some(1),
            Self::Unavailable(_, after) => Some(after.as_secs().max(1)),
            _ => None,
        };
        error.into_response()
    }
}
