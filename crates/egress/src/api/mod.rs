//! The management API: endpoints, secrets, messages, attempts, resend, recover and dead letters,
//! behind a bearer token compared in constant time. The OpenAPI document at `/openapi.json` is
//! built from the same handler annotations that build the router, so the two cannot drift.
//!
//! One file per resource; [`error`] holds the error body every route answers, [`input`] the
//! extractors and checks they share, and [`page`] the `limit` and `iterator` of every list.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::engine::Engine;

mod attempts;
mod dead_letters;
mod endpoints;
mod error;
mod event_types;
mod input;
mod messages;
mod page;
mod portal;
mod recovery;
mod secrets;

pub use attempts::{AttemptList, AttemptOut, AttemptQuery, MessageAttemptQuery};
pub use dead_letters::{DeadLetterList, DeadLetterOut, DeadLetterQuery};
pub use endpoints::{EndpointIn, EndpointList, EndpointOut, EndpointPatch, ListQuery};
pub use error::{ApiError, ApiResult, ErrorBody};
pub use event_types::{EventTypeList, EventTypeOut, EventTypeQuery};
pub use input::rfc3339;
pub use messages::{MessageDetail, MessageIn, TestOut};
pub use recovery::{Queued, RecoverIn};
pub use secrets::{RotateIn, SecretOut};

/// What the console calls: the same operations the routes call, with the caller's scope.
pub mod ops {
    pub use super::attempts::{list_for_message_in as message_attempts, list_in as attempts};
    pub use super::dead_letters::{list_in as dead_letters, retry_in as retry_dead_letter};
    pub use super::endpoints::{
        create_in as create_endpoint, delete_in as delete_endpoint, list_in as endpoints,
        load as endpoint, out as endpoint_out, update_in as update_endpoint,
    };
    pub use super::event_types::list_in as event_types;
    pub use super::messages::{get_in as message, test_in as send_test};
    pub use super::recovery::{recover_in as recover, resend_in as resend};
    pub use super::secrets::{get_in as secret, rotate_in as rotate_secret};
}

pub struct ApiState {
    pub engine: Arc<Engine>,
    pub token: SecretString,
    pub access: Arc<crate::access::Access>,
}

type AppState = State<Arc<ApiState>>;

async fn require_token(State(state): AppState, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = state.token.expose_secret().as_bytes();
    if !bool::from(expected.ct_eq(presented.as_bytes())) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required (Authorization: Bearer <egress.api_token>)",
        )
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
        .routes(routes!(endpoints::create, endpoints::list))
        .routes(routes!(
            endpoints::get,
            endpoints::update,
            endpoints::delete
        ))
        .routes(routes!(secrets::get))
        .routes(routes!(secrets::rotate))
        .routes(routes!(messages::create))
        .routes(routes!(messages::get))
        .routes(routes!(messages::test))
        .routes(routes!(portal::create))
        .routes(routes!(event_types::list))
        .routes(routes!(attempts::list))
        .routes(routes!(attempts::list_for_message))
        .routes(routes!(recovery::resend))
        .routes(routes!(recovery::recover))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::retry))
        .split_for_parts();
    let routes = routes
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state);
    (routes, document)
}
