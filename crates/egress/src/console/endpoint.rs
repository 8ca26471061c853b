//! One endpoint's pages and actions: create and edit (a form whose refusals show next to their
//! fields), its attempts, enable and disable, delete, its secret and rotation, a test message,
//! resend and recover. Each action is the API operation of the same name, in the session's
//! scope: a tenant's session that names another tenant's endpoint gets the API's 404.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::form::{self, FieldErrors, Form};
use super::pages::{error_page, notice};
use super::session::{Posted, Viewer};
use super::{AppState, ConsoleState};
use crate::api::{ApiError, AttemptQuery, EndpointOut, EndpointPatch, RecoverIn, RotateIn, ops};
use crate::dispatch::TEST_EVENT_TYPE;

fn done(id: &str, code: &str) -> Response {
    Redirect::to(&format!("/console/endpoints/{id}?notice={code}")).into_response()
}

/// What an action answers: `ok` when the operation went through, else the API's error as a page.
fn answer<T>(
    state: &ConsoleState,
    viewer: &Viewer,
    outcome: crate::api::ApiResult<T>,
    ok: impl FnOnce(T) -> Response,
) -> Response {
    match outcome {
        Ok(value) => ok(value),
        Err(e) => error_page(state, viewer, e),
    }
}

/// The event types the form offers: those seen on `EVENTS` (a tenant is not offered the
/// egress's own `hookbus.*`), never the test messages'.
async fn known_types(state: &ConsoleState, viewer: &Viewer) -> Vec<String> {
    let engine = &state.engine;
    match engine.catalogue.seen(&engine.stores.events).await {
        Ok(seen) => seen
            .types
            .keys()
            .filter(|t| t.as_str() != TEST_EVENT_TYPE)
            .filter(|t| viewer.scope().is_operator() || !t.starts_with("hookbus."))
            .cloned()
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "event types not offered");
            Vec::new()
        }
    }
}

/// The endpoint form, with what was typed and the messages next to its fields.
async fn form_page(
    state: &ConsoleState,
    viewer: &Viewer,
    status: StatusCode,
    endpoint: Option<&str>,
    values: serde_json::Value,
    errors: &FieldErrors,
) -> Response {
    let chosen = form::list(values["event_types"].as_str().unwrap_or_default());
    let known: Vec<_> = known_types(state, viewer)
        .await
        .into_iter()
        .map(|t| json!({ "name": t, "chosen": chosen.contains(&t) }))
        .collect();
    state.views.render(
        status,
        "endpoint_form.html",
        json!({
            "layout": viewer.layout(state, "endpoints"),
            "endpoint": endpoint,
            "values": values,
            "errors": errors,
            "known_types": known,
        }),
    )
}

/// The form's fields of a stored endpoint.
fn values_of(endpoint: &EndpointOut) -> serde_json::Value {
    json!({
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": endpoint.event_types.join("\n"),
        "sources": endpoint.sources.join(", "),
        "tenant": endpoint.tenant,
        "rate_limit": if endpoint.rate_limit == 0 { String::new() } else { endpoint.rate_limit.to_string() },
        "max_in_flight": endpoint.max_in_flight.to_string(),
        "headers": endpoint.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("\n"),
    })
}

/// A refusal of the API: next to its field when it names one the form has, else on the page.
async fn refused(
    state: &ConsoleState,
    viewer: &Viewer,
    endpoint: Option<&str>,
    form: &Form,
    error: ApiError,
) -> Response {
    const FIELDS: &[&str] = &[
        "url",
        "description",
        "event_types",
        "sources",
        "tenant",
        "rate_limit",
        "max_in_flight",
        "headers",
    ];
    match form::field_error(&error) {
        Some((field, message)) if FIELDS.contains(&field.as_str()) => {
            let errors = FieldErrors::from([(field, message)]);
            form_page(
                state,
                viewer,
                error.status(),
                endpoint,
                json!(form.values()),
                &errors,
            )
            .await
        }
        _ => error_page(state, viewer, error),
    }
}

/// `GET /console/endpoints/new`.
pub async fn new_page(State(state): AppState, viewer: Viewer) -> Response {
    form_page(
        &state,
        &viewer,
        StatusCode::OK,
        None,
        json!({}),
        &FieldErrors::new(),
    )
    .await
}

/// `POST /console/endpoints/new`.
pub async fn create(State(state): AppState, Posted { viewer, form }: Posted) -> Response {
    let input = match form::endpoint_in(&form, viewer.scope().is_operator()) {
        Ok(input) => input,
        Err(errors) => {
            return form_page(
                &state,
                &viewer,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                json!(form.values()),
                &errors,
            )
            .await;
        }
    };
    match ops::create_endpoint(&state.engine, viewer.scope(), input).await {
        Ok(created) => done(&created.id, "created"),
        Err(e) => refused(&state, &viewer, None, &form, e).await,
    }
}

#[derive(Deserialize)]
pub struct DetailQuery {
    iterator: Option<String>,
    notice: Option<String>,
}

/// The recover form as it was posted, when its time was refused.
struct RecoverRefused<'a> {
    since: &'a str,
    error: &'a str,
}

/// The endpoint's page: the endpoint, its actions and a page of its attempts, newest first;
/// with the recover form's refusal, when there is one.
async fn detail_page(
    state: &ConsoleState,
    viewer: &Viewer,
    id: &str,
    query: DetailQuery,
    recover: Option<RecoverRefused<'_>>,
) -> Response {
    let engine = &state.engine;
    let (record, _) = match ops::endpoint(engine, viewer.scope(), id).await {
        Ok(found) => found,
        Err(e) => return error_page(state, viewer, e),
    };
    let attempts = AttemptQuery {
        event_id: None,
        limit: Some(50),
        iterator: query.iterator,
    };
    let attempts = match ops::attempts(engine, viewer.scope(), id, attempts).await {
        Ok(page) => page,
        Err(e) => return error_page(state, viewer, e),
    };
    let (status, since, error) = match recover {
        Some(refused) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            refused.since.to_owned(),
            Some(refused.error),
        ),
        None => (
            StatusCode::OK,
            crate::api::rfc3339(crate::engine::unix_now() - 3600),
            None,
        ),
    };
    state.views.render(
        status,
        "endpoint.html",
        json!({
            "layout": viewer.layout(state, "endpoints"),
            "endpoint": ops::endpoint_out(&record, engine.settings.default_max_in_flight),
            "attempts": attempts.items,
            "next": attempts.iterator.map(|i| format!("/console/endpoints/{id}?iterator={i}")),
            "notice": notice(query.notice.as_deref()),
            "recover_since": since,
            "recover_error": error,
        }),
    )
}

/// `GET /console/endpoints/{id}`.
pub async fn detail(
    State(state): AppState,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Response {
    detail_page(&state, &viewer, &id, query, None).await
}

/// The endpoint's record for a page about it, or the API's error as the page.
async fn endpoint_of(
    state: &ConsoleState,
    viewer: &Viewer,
    id: &str,
) -> Result<EndpointOut, Response> {
    let engine = &state.engine;
    match ops::endpoint(engine, viewer.scope(), id).await {
        Ok((record, _)) => Ok(ops::endpoint_out(
            &record,
            engine.settings.default_max_in_flight,
        )),
        Err(e) => Err(error_page(state, viewer, e)),
    }
}

/// `GET /console/endpoints/{id}/edit`.
pub async fn edit_page(State(state): AppState, viewer: Viewer, Path(id): Path<String>) -> Response {
    match endpoint_of(&state, &viewer, &id).await {
        Ok(endpoint) => {
            form_page(
                &state,
                &viewer,
                StatusCode::OK,
                Some(&id),
                values_of(&endpoint),
                &FieldErrors::new(),
            )
            .await
        }
        Err(page) => page,
    }
}

/// `POST /console/endpoints/{id}/edit`.
pub async fn edit(
    State(state): AppState,
    Path(id): Path<String>,
    Posted { viewer, form }: Posted,
) -> Response {
    let patch = match form::endpoint_patch(&form, viewer.scope().is_operator()) {
        Ok(patch) => patch,
        Err(errors) => {
            return form_page(
                &state,
                &viewer,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(&id),
                json!(form.values()),
                &errors,
            )
            .await;
        }
    };
    match ops::update_endpoint(&state.engine, viewer.scope(), &id, patch).await {
        Ok(_) => done(&id, "saved"),
        Err(e) => refused(&state, &viewer, Some(&id), &form, e).await,
    }
}

async fn set_disabled(state: &ConsoleState, viewer: &Viewer, id: &str, disabled: bool) -> Response {
    let patch = EndpointPatch {
        disabled: Some(disabled),
        ..Default::default()
    };
    let outcome = ops::update_endpoint(&state.engine, viewer.scope(), id, patch).await;
    answer(state, viewer, outcome, |_| {
        done(id, if disabled { "disabled" } else { "enabled" })
    })
}

/// `POST /console/endpoints/{id}/enable`.
pub async fn enable(
    State(state): AppState,
    Path(id): Path<String>,
    Posted { viewer, .. }: Posted,
) -> Response {
    set_disabled(&state, &viewer, &id, false).await
}

/// `POST /console/endpoints/{id}/disable`.
pub async fn disable(
    State(state): AppState,
    Path(id): Path<String>,
    Posted { viewer, .. }: Posted,
) -> Response {
    set_disabled(&state, &viewer, &id, true).await
}

/// `GET /console/endpoints/{id}/delete`: asks first.
pub async fn delete_page(
    State(state): AppState,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    match endpoint_of(&state, &viewer, &id).await {
        Ok(endpoint) => state.views.render(
            StatusCode::OK,
            "confirm_delete.html",
            json!({ "layout": viewer.layout(&state, "endpoints"), "endpoint": endpoint }),
        ),
        Err(page) => page,
    }
}

/// `POST /console/endpoints/{id}/delete`.
pub async fn delete(
    State(state): AppState,
    Path(id): Path<String>,
    Posted { viewer, .. }: Posted,
) -> Response {
    let outcome = ops::delete_endpoint(&state.engine, viewer.scope(), &id).await;
    answer(&state, &viewer, outcome, |()| {
        Redirect::to("/console/endpoints?notice=deleted").into_response()
    })
}

#[derive(Deserialize)]
pub struct SecretQuery {
    notice: Option<String>,
}

/// `GET /console/endpoints/{id}/secret`: the secret, revealed on its own page.
pub async fn secret(
    State(state): AppState,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(query): Query<SecretQuery>,
) -> Response {
    let outcome = ops::secret(&state.engine, viewer.scope(), &id).await;
    answer(&state, &viewer, outcome, |secret| {
        state.views.render(
            StatusCode::OK,
            "secret.html",
            json!({
                "layout": viewer.layout(&state, "endpoints"),
                "id": id,
                "secret": secret,
                "notice": notice(query.notice.as_deref()),
            }),
        )
    })
}

/// `POST /console/endpoints/{id}/secret/rotate`: a new generated secret.
pub async fn rotate(
    State(state): AppState,
    Path(id): Path<String>,
    Posted { viewer, .. }: Posted,
) -> Response {
    let outcome =
        ops::rotate_secret(&state.engine, viewer.scope(), &id, RotateIn { key: None }).await;
    answer(&state, &viewer, outcome, |_| {
        Redirect::to(&format!("/console/endpoints/{id}/secret?notice=rotated")).into_response()
    })
}

/// `POST /console/endpoints/{id}/test`.
pub async fn test(
    State(state): AppState,
    Path(id): Path<String>,
    Posted { viewer, .. }: Posted,
) -> Response {
    let outcome = ops::send_test(&state.engine, viewer.scope(), &id).await;
    answer(&state, &viewer, outcome, |_| done(&id, "test"))
}

/// `POST /console/endpoints/{id}/recover`: `since`, RFC 3339; a bad time is shown next to the
/// field, on the endpoint's page.
pub async fn recover(
    State(state): AppState,
    Path(id): Path<String>,
    Posted { viewer, form }: Posted,
) -> Response {
    let input = RecoverIn {
        since: form.one("since").trim().to_owned(),
    };
    match ops::recover(&state.engine, viewer.scope(), &id, input).await {
        Ok(_) => done(&id, "recovered"),
        Err(e) if e.field() == Some("since") => {
            let query = DetailQuery {
                iterator: None,
                notice: None,
            };
            let refused = RecoverRefused {
                since: form.one("since"),
                error: e.message(),
            };
            detail_page(&state, &viewer, &id, query, Some(refused)).await
        }
        Err(e) => error_page(&state, &viewer, e),
    }
}

/// `POST /console/endpoints/{id}/resend/{event_id}`.
pub async fn resend(
    State(state): AppState,
    Path((id, event_id)): Path<(String, String)>,
    Posted { viewer, .. }: Posted,
) -> Response {
    let outcome = ops::resend(&state.engine, viewer.scope(), &id, &event_id).await;
    answer(&state, &viewer, outcome, |_| done(&id, "resent"))
}
