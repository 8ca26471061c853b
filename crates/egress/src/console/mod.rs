//! The web console under `/console`: server-rendered pages for operators, and the same pages
//! scoped to one tenant for the portal. Every action a page offers calls the operation its API
//! route calls ([`crate::api::ops`]), with the session's [`Scope`], so the console has no power
//! the API lacks and a tenant reaches only what is its own.
//!
//! - [`session`]: sign-in, sign-out, portal links, and the session every page reads;
//! - [`view`]: the templates and assets, embedded in the binary, and the security headers;
//! - [`form`]: reading a posted form into an API input, and its errors back to the fields;
//! - [`pages`], [`endpoint`], [`overview`], [`live`]: the pages.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::access::Access;
use crate::engine::Engine;

mod endpoint;
mod form;
pub mod live;
mod overview;
mod pages;
mod session;
mod view;

pub use view::{Views, security_headers};

/// What every console page shares.
pub struct ConsoleState {
    pub engine: Arc<Engine>,
    pub access: Arc<Access>,
    pub token: secrecy::SecretString,
    /// The ingress's sources, when the egress reads its configuration (secrets left out).
    pub sources: std::collections::BTreeMap<String, crate::config::SourceView>,
    views: Views,
}

impl ConsoleState {
    /// The console's state, with its templates and assets ([`Views::new`], read before the
    /// egress starts anything, so a missing logo stops start-up).
    pub fn new(
        engine: Arc<Engine>,
        access: Arc<Access>,
        token: secrecy::SecretString,
        sources: std::collections::BTreeMap<String, crate::config::SourceView>,
        views: Views,
    ) -> Self {
        Self {
            engine,
            access,
            token,
            sources,
            views,
        }
    }
}

type AppState = axum::extract::State<Arc<ConsoleState>>;

/// The console's routes, to nest under `/console`.
pub fn router(state: Arc<ConsoleState>) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route(
            "/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/sign-out", post(session::sign_out))
        .route("/portal/{token}", get(session::open_portal))
        .route("/overview", get(overview::page))
        .route("/endpoints", get(pages::endpoints))
        .route(
            "/endpoints/new",
            get(endpoint::new_page).post(endpoint::create),
        )
        .route("/endpoints/{id}", get(endpoint::detail))
        .route(
            "/endpoints/{id}/edit",
            get(endpoint::edit_page).post(endpoint::edit),
        )
        .route("/endpoints/{id}/enable", post(endpoint::enable))
        .route("/endpoints/{id}/disable", post(endpoint::disable))
        .route(
            "/endpoints/{id}/delete",
            get(endpoint::delete_page).post(endpoint::delete),
        )
        .route("/endpoints/{id}/secret", get(endpoint::secret))
        .route("/endpoints/{id}/secret/rotate", post(endpoint::rotate))
        .route("/endpoints/{id}/test", post(endpoint::test))
        .route("/endpoints/{id}/recover", post(endpoint::recover))
        .route("/endpoints/{id}/resend/{event_id}", post(endpoint::resend))
        .route("/messages/{id}", get(pages::message))
        .route("/sources", get(live::sources))
        .route("/tail", get(live::tail))
        .route("/tail/stream", get(live::tail_stream))
        .route("/dead-letters", get(pages::dead_letters))
        .route("/dead-letters/{id}/retry", post(pages::retry_dead_letter))
        .route("/assets/{name}", get(view::asset))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            view::security_headers,
        ))
        .with_state(state)
}
