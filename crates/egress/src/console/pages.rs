//! The list pages (endpoints, dead letters), a message, and what every page answers when it
//! cannot show what was asked: the API's own error, as a page.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::ConsoleState;
use super::session::{Posted, Viewer};
use crate::api::{ApiError, DeadLetterQuery, ListQuery, MessageAttemptQuery, ops};

/// A page for an API error: its status and its message (a 503's is generic; its cause is in
/// the log).
pub fn error_page(state: &ConsoleState, viewer: &Viewer, error: ApiError) -> Response {
    let title = match error.status() {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
        _ => "Refused",
    };
    state.views.render(
        error.status(),
        "message_page.html",
        json!({ "layout": viewer.layout(state, ""), "title": title, "message": error.message() }),
    )
}

/// A page only the operator may open answers a tenant 404, as any page that is not there: the
/// refusal, for a tenant.
pub fn operator_only(state: &ConsoleState, viewer: &Viewer) -> Option<Response> {
    (!viewer.scope().is_operator())
        .then(|| error_page(state, viewer, ApiError::not_found("no such page")))
}

/// What a redirect after an action says on the next page (a fixed text per code, never text
/// from the URL).
pub fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "created" => "Endpoint created. Its signing secret is under “Signing secret”.",
        "saved" => "Changes saved.",
        "enabled" => "Endpoint enabled; what was held meanwhile follows.",
        "disabled" => "Endpoint disabled; its deliveries are held until it is enabled.",
        "deleted" => "Endpoint deleted, with its queued deliveries.",
        "rotated" => "Secret rotated; the previous one signs alongside until it expires.",
        "test" => "Test message queued; its attempt appears below.",
        "resent" => "Message queued again.",
        "recovered" => "Failed and unattempted messages queued again.",
        "retried" => "Dead letter queued again.",
        _ => return None,
    })
}

/// `GET /console`.
pub async fn home(viewer: Viewer) -> Redirect {
    if viewer.scope().is_operator() {
        Redirect::to("/console/overview")
    } else {
        Redirect::to("/console/endpoints")
    }
}

/// Any other path under `/console`.
pub async fn not_found(State(state): AppState, viewer: Viewer) -> Response {
    error_page(&state, &viewer, ApiError::not_found("no such page"))
}

#[derive(Deserialize)]
pub struct EndpointFilter {
    tenant: Option<String>,
    status: Option<String>,
    url: Option<String>,
    iterator: Option<String>,
    notice: Option<String>,
}

/// `GET /console/endpoints`: filtered by tenant, status and URL, a page at a time.
pub async fn endpoints(
    State(state): AppState,
    viewer: Viewer,
    Query(filter): Query<EndpointFilter>,
) -> Response {
    let disabled = match filter.status.as_deref() {
        Some("disabled") => Some(true),
        Some("enabled") => Some(false),
        _ => None,
    };
    let tenant = filter.tenant.clone().filter(|t| !t.is_empty());
    let query = ListQuery {
        tenant: tenant.clone(),
        disabled,
        url_contains: filter.url.clone().filter(|u| !u.is_empty()),
        limit: Some(50),
        iterator: filter.iterator.clone(),
    };
    let page = match ops::endpoints(&state.engine, viewer.scope(), query) {
        Ok(page) => page,
        // A filter that is refused is shown next to its field, with no list.
        Err(e) if matches!(e.field(), Some("tenant" | "iterator" | "url_contains")) => {
            let field = match e.field() {
                Some("url_contains") => "url",
                Some(other) => other,
                None => "",
            };
            return state.views.render(
                e.status(),
                "endpoints.html",
                json!({
                    "layout": viewer.layout(&state, "endpoints"),
                    "endpoints": [],
                    "filter": { "tenant": tenant, "status": filter.status, "url": filter.url },
                    "errors": { field: e.message() },
                }),
            );
        }
        Err(e) => return error_page(&state, &viewer, e),
    };
    // The next page's link keeps the filter.
    let next = page.iterator.as_ref().map(|iterator| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("tenant", tenant.as_deref()),
            ("status", filter.status.as_deref()),
            ("url", filter.url.as_deref()),
            ("iterator", Some(iterator.as_str())),
        ] {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                query.append_pair(key, value);
            }
        }
        format!("/console/endpoints?{}", query.finish())
    });
    state.views.render(
        StatusCode::OK,
        "endpoints.html",
        json!({
            "layout": viewer.layout(&state, "endpoints"),
            "endpoints": page.items,
            "next": next,
            "filter": { "tenant": tenant, "status": filter.status, "url": filter.url },
            "notice": notice(filter.notice.as_deref()),
        }),
    )
}

#[derive(Deserialize)]
pub struct PageQuery {
    iterator: Option<String>,
}

/// `GET /console/messages/{id}`: the payload, its headers and every attempt to every endpoint
/// (a tenant's own only).
pub async fn message(
    State(state): AppState,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Response {
    let message = match ops::message(&state.engine, viewer.scope(), &id).await {
        Ok(message) => message,
        Err(e) => return error_page(&state, &viewer, e),
    };
    let query = MessageAttemptQuery {
        limit: Some(50),
        iterator: page.iterator,
    };
    let attempts = match ops::message_attempts(&state.engine, viewer.scope(), &id, query).await {
        Ok(attempts) => attempts,
        Err(e) => return error_page(&state, &viewer, e),
    };
    let payload = serde_json::from_str::<serde_json::Value>(&message.payload)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| message.payload.clone());
    state.views.render(
        StatusCode::OK,
        "message.html",
        json!({
            "layout": viewer.layout(&state, "endpoints"),
            "message": message,
            "payload": payload,
            "attempts": attempts.items,
            "next": attempts.iterator.map(|i| format!("/console/messages/{id}?iterator={i}")),
        }),
    )
}

#[derive(Deserialize)]
pub struct LetterQuery {
    consumer: Option<String>,
    iterator: Option<String>,
    notice: Option<String>,
}

/// The consumers whose dead letters the page offers; any other name can be typed.
const CONSUMERS: &[&str] = &["egress", "inventory", "notifications", "analytics"];

/// `GET /console/dead-letters`: the egress's or a service consumer's, with retry.
pub async fn dead_letters(
    State(state): AppState,
    viewer: Viewer,
    Query(query): Query<LetterQuery>,
) -> Response {
    if let Some(refused) = operator_only(&state, &viewer) {
        return refused;
    }
    let consumer = query
        .consumer
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "egress".into());
    let request = DeadLetterQuery {
        consumer: Some(consumer.clone()),
        limit: Some(50),
        iterator: query.iterator,
        ..Default::default()
    };
    let page = match ops::dead_letters(&state.engine, request).await {
        Ok(page) => page,
        Err(e) if e.field() == Some("consumer") => {
            return state.views.render(
                e.status(),
                "dead_letters.html",
                json!({
                    "layout": viewer.layout(&state, "dead-letters"),
                    "consumer": consumer,
                    "consumers": CONSUMERS,
                    "letters": [],
                    "error": e.message(),
                }),
            );
        }
        Err(e) => return error_page(&state, &viewer, e),
    };
    state.views.render(
        StatusCode::OK,
        "dead_letters.html",
        json!({
            "layout": viewer.layout(&state, "dead-letters"),
            "consumer": consumer,
            "consumers": CONSUMERS,
            "letters": page.items,
            "next": page.iterator.map(|i| format!("/console/dead-letters?consumer={consumer}&iterator={i}")),
            "notice": notice(query.notice.as_deref()),
        }),
    )
}

/// `POST /console/dead-letters/{id}/retry`.
pub async fn retry_dead_letter(
    State(state): AppState,
    Path(id): Path<String>,
    Posted { viewer, form }: Posted,
) -> Response {
    if let Some(refused) = operator_only(&state, &viewer) {
        return refused;
    }
    match ops::retry_dead_letter(&state.engine, &id).await {
        Ok(_) => {
            let consumer = form.one("consumer");
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair(
                "consumer",
                if consumer.is_empty() {
                    "egress"
                } else {
                    consumer
                },
            );
            query.append_pair("notice", "retried");
            Redirect::to(&format!("/console/dead-letters?{}", query.finish())).into_response()
        }
        Err(e) => error_page(&state, &viewer, e),
    }
}
