//! A posted form: its fields, read into the API's inputs, and the API's refusals turned back
//! into messages next to the fields they name. A form that is refused changes nothing: the
//! checks are the API operation's own, made before it stores anything.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};

use crate::api::{ApiError, EndpointIn, EndpointPatch};

/// The fields of a posted `application/x-www-form-urlencoded` body, in order.
pub struct Form(Vec<(String, String)>);

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Form(
            url::form_urlencoded::parse(&body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}

impl Form {
    /// The first value of `name`, or "".
    pub fn one(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The fields as they were typed, to show the form again: the event types ticked in the
    /// catalogue join those typed.
    pub fn values(&self) -> BTreeMap<String, String> {
        let mut values = BTreeMap::new();
        for (k, v) in &self.0 {
            if k != "csrf" && k != "known_type" {
                values.insert(k.clone(), v.clone());
            }
        }
        values.insert("event_types".into(), self.event_types().join("\n"));
        values
    }

    /// The event types typed and those ticked, each once.
    fn event_types(&self) -> Vec<String> {
        let mut types = list(self.one("event_types"));
        for ticked in self.all("known_type") {
            if !types.iter().any(|t| t == ticked) {
                types.push(ticked.to_owned());
            }
        }
        types
    }
}

/// Messages by form field.
pub type FieldErrors = BTreeMap<String, String>;

/// The form field an API error names (`event_types[2]` → `event_types`, `headers.X` →
/// `headers`), with its message; `None` for an error of no field (the page shows it).
pub fn field_error(error: &ApiError) -> Option<(String, String)> {
    let field = error.field()?;
    let name = field.split(['[', '.']).next().unwrap_or(field).to_owned();
    Some((name, error.message().to_owned()))
}

/// A list typed one per line or separated by commas.
pub fn list(text: &str) -> Vec<String> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `Name: value` lines.
fn headers(text: &str, errors: &mut FieldErrors) -> BTreeMap<String, String> {
    let mut headers = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => {
                headers.insert(name.trim().to_owned(), value.trim().to_owned());
            }
            _ => {
                errors.insert(
                    "headers".into(),
                    format!("{line:?} is not a `Name: value` line"),
                );
            }
        }
    }
    headers
}

fn number(form: &Form, name: &str, errors: &mut FieldErrors) -> Option<u32> {
    let text = form.one(name).trim();
    if text.is_empty() {
        return None;
    }
    match text.parse::<u32>() {
        Ok(n) => Some(n),
        Err(_) => {
            errors.insert(name.into(), format!("{name}: must be a whole number"));
            None
        }
    }
}

/// A new endpoint from the form; `with_tenant` when the form shows the tenant field.
pub fn endpoint_in(form: &Form, with_tenant: bool) -> Result<EndpointIn, FieldErrors> {
    let mut errors = FieldErrors::new();
    let input = EndpointIn {
        url: form.one("url").trim().to_owned(),
        description: form.one("description").trim().to_owned(),
        event_types: form.event_types(),
        sources: list(form.one("sources")),
        tenant: Some(form.one("tenant").trim().to_owned()).filter(|t| with_tenant && !t.is_empty()),
        secret: None,
        rate_limit: number(form, "rate_limit", &mut errors).unwrap_or(0),
        max_in_flight: number(form, "max_in_flight", &mut errors),
        headers: headers(form.one("headers"), &mut errors),
        disabled: form.one("disabled") == "on",
    };
    if input.url.is_empty() {
        errors.insert("url".into(), "url: is required".into());
    }
    if errors.is_empty() {
        Ok(input)
    } else {
        Err(errors)
    }
}

/// A change to an endpoint: every field the form shows.
pub fn endpoint_patch(form: &Form, with_tenant: bool) -> Result<EndpointPatch, FieldErrors> {
    let input = endpoint_in(form, with_tenant)?;
    Ok(EndpointPatch {
        url: Some(input.url),
        description: Some(input.description),
        event_types: Some(input.event_types),
        sources: Some(input.sources),
        tenant: with_tenant.then(|| input.tenant.unwrap_or_default()),
        rate_limit: Some(input.rate_limit),
        max_in_flight: input.max_in_flight,
        headers: Some(input.headers),
        disabled: None,
    })
}
