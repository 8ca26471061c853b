//! Signing in and out, opening a portal link, and the session every page reads.
//!
//! - An operator signs in with the API token in a POST form (never in a URL), and gets an
//!   HttpOnly, SameSite=Strict session cookie.
//! - A portal link (`/console/portal/<token>`) is redeemed once, and opens a session scoped to
//!   its tenant; the browser is sent on to a URL without the token.
//! - Every form carries the session's CSRF token; the sign-in form, which has no session yet,
//!   carries one bound to a nonce in a short-lived cookie.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::ExposeSecret;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::form::Form;
use super::{AppState, ConsoleState};
use crate::access::{Access, LinkRefused, Scope, Session};

pub const SESSION_COOKIE: &str = "hookbus_session";
const SIGN_IN_COOKIE: &str = "hookbus_sign_in";

/// The value of the cookie `name`, if the request has it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The session the request's cookie carries, read once by the console's middleware
/// ([`super::security_headers`]); `None` when there is none, or it is not valid.
#[derive(Clone)]
pub struct CookieSession(pub Option<Session>);

/// The signed-in caller of a page: the session, its CSRF token, and what every page shows.
pub struct Viewer {
    pub session: Session,
    pub csrf: String,
}

impl Viewer {
    pub fn scope(&self) -> &Scope {
        &self.session.scope
    }

    /// What the layout needs: who is signed in, the brand and the CSRF token.
    pub fn layout(&self, state: &ConsoleState, active: &str) -> serde_json::Value {
        json!({
            "brand": state.views.brand_name,
            "has_logo": state.views.has_logo(),
            "operator": self.scope().is_operator(),
            "tenant": self.scope().tenant(),
            "csrf": self.csrf,
            "active": active,
        })
    }
}

impl FromRequestParts<Arc<ConsoleState>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ConsoleState>,
    ) -> Result<Self, Response> {
        let session = parts
            .extensions
            .get::<CookieSession>()
            .and_then(|read| read.0.clone());
        let Some(session) = session else {
            // A tenant whose portal session ended cannot sign in with the API token: say so.
            let value = cookie(&parts.headers, SESSION_COOKIE).unwrap_or_default();
            let ended = state.access.ended_session(value);
            if let Some(Scope::Tenant(_)) = ended.map(|s| s.scope) {
                return Err(refused(
                    state,
                    viewer_layout(state, None),
                    "This portal session has ended. Open the portal again from where you came.",
                ));
            }
            return Err(Redirect::to("/console/sign-in").into_response());
        };
        let csrf = state.access.csrf(&session);
        Ok(Viewer { session, csrf })
    }
}

/// A form posted in a session: taking it checks its CSRF token, so a handler of a POST cannot
/// act on a form without the session's token (it is refused with a 403 and changes nothing).
pub struct Posted {
    pub viewer: Viewer,
    pub form: Form,
}

impl FromRequest<Arc<ConsoleState>> for Posted {
    type Rejection = Response;

    async fn from_request(request: Request, state: &Arc<ConsoleState>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let form = Form::from_request(Request::from_parts(parts, body), state).await?;
        if !Access::csrf_matches(&viewer.csrf, form.one("csrf")) {
            return Err(refused(
                state,
                viewer_layout(state, Some(&viewer)),
                CSRF_REFUSED,
            ));
        }
        Ok(Posted { viewer, form })
    }
}

const CSRF_REFUSED: &str = "This form was not sent from this console session (its CSRF token is missing or wrong), so nothing was changed. Reload the page and try again.";

fn viewer_layout(state: &ConsoleState, viewer: Option<&Viewer>) -> serde_json::Value {
    match viewer {
        Some(viewer) => viewer.layout(state, ""),
        None => json!({ "brand": state.views.brand_name, "has_logo": state.views.has_logo() }),
    }
}

/// A 403 page saying why.
fn refused(state: &ConsoleState, layout: serde_json::Value, message: &str) -> Response {
    state.views.render(
        StatusCode::FORBIDDEN,
        "message_page.html",
        json!({ "layout": layout, "title": "Refused", "message": message }),
    )
}

fn set_cookie(name: &str, value: &str, max_age: i64, same_site: &str) -> String {
    format!("{name}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite={same_site}")
}

/// The session cookie for `scope`: SameSite=Strict, except for a portal session when the portal
/// may be framed by another site, where only SameSite=None (Secure, Partitioned) reaches it.
fn session_cookie(state: &ConsoleState, scope: &Scope, ttl: i64) -> String {
    let value = state.access.start_session(scope, ttl);
    session_cookie_of(state, scope, &value, ttl)
}

fn session_cookie_of(state: &ConsoleState, scope: &Scope, value: &str, ttl: i64) -> String {
    let console = &state.engine.settings.console;
    let secure = console
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https:"));
    if !scope.is_operator() && !console.frame_ancestors.is_empty() {
        return format!(
            "{}; Secure; Partitioned",
            set_cookie(SESSION_COOKIE, value, ttl, "None")
        );
    }
    let cookie = set_cookie(SESSION_COOKIE, value, ttl, "Strict");
    if secure {
        format!("{cookie}; Secure")
    } else {
        cookie
    }
}

fn sign_in_form(
    state: &ConsoleState,
    nonce: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let csrf = state.access.sign_in_csrf(nonce);
    let mut response = state.views.render(
        status,
        "sign_in.html",
        json!({ "layout": viewer_layout(state, None), "csrf": csrf, "error": error }),
    );
    if let Ok(value) = set_cookie(SIGN_IN_COOKIE, nonce, 3600, "Strict").parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// `GET /console/sign-in`.
pub async fn sign_in_page(State(state): AppState) -> Response {
    let nonce = state.access.sign_in_nonce();
    sign_in_form(&state, &nonce, None, StatusCode::OK)
}

/// `POST /console/sign-in`: the API token, exchanged for a session cookie.
pub async fn sign_in(State(state): AppState, headers: HeaderMap, form: Form) -> Response {
    let nonce = cookie(&headers, SIGN_IN_COOKIE)
        .unwrap_or_default()
        .to_owned();
    if nonce.is_empty()
        || !Access::csrf_matches(&state.access.sign_in_csrf(&nonce), form.one("csrf"))
    {
        let fresh = state.access.sign_in_nonce();
        return sign_in_form(
            &state,
            &fresh,
            Some(
                "This sign-in form expired or was not sent from this console; nothing was checked. Try again.",
            ),
            StatusCode::FORBIDDEN,
        );
    }
    let presented = form.one("token").trim();
    let expected = state.token.expose_secret().as_bytes();
    if presented.is_empty() || !bool::from(expected.ct_eq(presented.as_bytes())) {
        return sign_in_form(
            &state,
            &nonce,
            Some("That is not the egress API token (egress.api_token)."),
            StatusCode::UNAUTHORIZED,
        );
    }
    let ttl = state.engine.settings.console.session_ttl.as_secs() as i64;
    let mut response = Redirect::to("/console/overview").into_response();
    let headers = response.headers_mut();
    for cookie in [
        session_cookie(&state, &Scope::Operator, ttl),
        set_cookie(SIGN_IN_COOKIE, "", 0, "Strict"),
    ] {
        if let Ok(value) = cookie.parse() {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

/// `POST /console/sign-out`: the session cookie is cleared (with the attributes it was set
/// with, which a partitioned cookie needs). A tenant is not sent to the operator's sign-in.
pub async fn sign_out(State(state): AppState, Posted { viewer, .. }: Posted) -> Response {
    let scope = viewer.scope().clone();
    let mut response = if scope.is_operator() {
        Redirect::to("/console/sign-in").into_response()
    } else {
        state.views.render(
            StatusCode::OK,
            "message_page.html",
            json!({
                "layout": viewer_layout(&state, None),
                "title": "Signed out",
                "message": "You have left the portal. Open it again from where you came.",
            }),
        )
    };
    let cleared = session_cookie_of(&state, &scope, "", 0);
    if let Ok(value) = cleared.parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// `GET /console/portal/{token}`: a portal link, redeemed once for a tenant's session.
pub async fn open_portal(State(state): AppState, Path(token): Path<String>) -> Response {
    match state
        .access
        .redeem(&state.engine.stores.portal_links, &token)
        .await
    {
        Ok(tenant) => {
            let ttl = state.engine.settings.console.portal_session_ttl.as_secs() as i64;
            let mut response = Redirect::to("/console/endpoints").into_response();
            if let Ok(value) = session_cookie(&state, &Scope::Tenant(tenant), ttl).parse() {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            response
        }
        Err(refusal) => {
            let status = match refusal {
                LinkRefused::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::FORBIDDEN,
            };
            state.views.render(
                status,
                "message_page.html",
                json!({
                    "layout": viewer_layout(&state, None),
                    "title": "This link does not open the portal",
                    "message": refusal.to_string(),
                }),
            )
        }
    }
}
