//! Templates, assets and headers. Everything a page loads comes from the egress itself: the
//! templates, the stylesheet, the one script and the logo are in the binary or read at start-up,
//! and the Content-Security-Policy lets a page load nothing from anywhere else.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

use super::ConsoleState;
use super::session::{CookieSession, SESSION_COOKIE};
use crate::config::ConsoleConfig;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    (
        "message_page.html",
        include_str!("templates/message_page.html"),
    ),
    ("overview.html", include_str!("templates/overview.html")),
    ("endpoints.html", include_str!("templates/endpoints.html")),
    (
        "endpoint_form.html",
        include_str!("templates/endpoint_form.html"),
    ),
    ("endpoint.html", include_str!("templates/endpoint.html")),
    ("secret.html", include_str!("templates/secret.html")),
    (
        "confirm_delete.html",
        include_str!("templates/confirm_delete.html"),
    ),
    ("message.html", include_str!("templates/message.html")),
    (
        "dead_letters.html",
        include_str!("templates/dead_letters.html"),
    ),
    ("sources.html", include_str!("templates/sources.html")),
    ("tail.html", include_str!("templates/tail.html")),
];

const STYLESHEET: &str = include_str!("assets/console.css");
const TAIL_SCRIPT: &str = include_str!("assets/tail.js");

pub struct Views {
    env: Environment<'static>,
    /// `:root { --accent: … }` from the configuration.
    brand_css: String,
    logo: Option<(Vec<u8>, &'static str)>,
    /// The `frame-ancestors` of portal pages.
    portal_ancestors: String,
    pub brand_name: String,
}

impl Views {
    pub fn new(config: &ConsoleConfig) -> std::io::Result<Self> {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .expect("the console's templates parse");
        }
        let logo = match &config.logo_file {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("egress.console.logo_file {}: {e}", path.display()),
                    )
                })?;
                let kind = if path.extension().is_some_and(|e| e == "svg") {
                    "image/svg+xml"
                } else {
                    "image/png"
                };
                Some((bytes, kind))
            }
            None => None,
        };
        let portal_ancestors = if config.frame_ancestors.is_empty() {
            "'none'".to_owned()
        } else {
            config.frame_ancestors.join(" ")
        };
        Ok(Self {
            env,
            brand_css: format!(":root {{ --accent: {}; }}\n", config.accent_color),
            logo,
            portal_ancestors,
            brand_name: config.brand_name.clone(),
        })
    }

    /// Renders `template` with `context`; a template that fails is a bug, logged, and answered
    /// with a generic 500.
    pub fn render(&self, status: StatusCode, template: &str, context: impl Serialize) -> Response {
        let rendered = self
            .env
            .get_template(template)
            .and_then(|t| t.render(minijinja::value::Serde(&context)));
        match rendered {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(template, error = %e, "console page not rendered");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the console could not render this page",
                )
                    .into_response()
            }
        }
    }

    pub fn has_logo(&self) -> bool {
        self.logo.is_some()
    }
}

/// `/console/assets/{name}`: the stylesheet, the colours, the script and the logo.
pub async fn asset(State(state): State<Arc<ConsoleState>>, Path(name): Path<String>) -> Response {
    let views = &state.views;
    let (body, kind): (Vec<u8>, &str) = match name.as_str() {
        "console.css" => (STYLESHEET.as_bytes().to_vec(), "text/css; charset=utf-8"),
        "brand.css" => (
            views.brand_css.as_bytes().to_vec(),
            "text/css; charset=utf-8",
        ),
        "tail.js" => (
            TAIL_SCRIPT.as_bytes().to_vec(),
            "text/javascript; charset=utf-8",
        ),
        "logo" => match &views.logo {
            Some((bytes, kind)) => (bytes.clone(), kind),
            None => return StatusCode::NOT_FOUND.into_response(),
        },
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// The headers of every console response: a strict CSP (nothing from another origin, no inline
/// script or style), no framing except a portal page on the configured origins, no referrer (a
/// portal link never leaks through one), and no caching of pages. The session cookie is read
/// here, once per request, and handed to the pages ([`CookieSession`]).
pub async fn security_headers(
    State(state): State<Arc<ConsoleState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let session = super::session::cookie(request.headers(), SESSION_COOKIE)
        .and_then(|value| state.access.session(value));
    let portal = request.uri().path().starts_with("/portal/")
        || session.as_ref().is_some_and(|s| !s.scope.is_operator());
    request.extensions_mut().insert(CookieSession(session));
    let asset = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    let ancestors = if portal {
        state.views.portal_ancestors.as_str()
    } else {
        "'none'"
    };
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    );
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !portal {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    if !asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_with_a_bare_context() {
        let views = Views::new(&ConsoleConfig::default()).unwrap();
        let layout = serde_json::json!({"brand": "hookbus", "csrf": "t", "operator": true});
        for (name, _) in TEMPLATES {
            let rendered = views.env.get_template(name).and_then(|t| {
                t.render(minijinja::value::Serde(&serde_json::json!({
                    "layout": layout,
                    "subject": "events.>",
                    "figures": {},
                    "endpoint": {"id": "ep_1"},
                    "secret": {"key": "whsec_x"},
                    "message": {"id": "m"},
                    "filter": {},
                })))
            });
            assert!(rendered.is_ok(), "{name}: {rendered:?}");
        }
        // A logo that cannot be read stops start-up, naming the key.
        let missing = ConsoleConfig {
            logo_file: Some("/nonexistent/logo.svg".into()),
            ..ConsoleConfig::default()
        };
        let error = Views::new(&missing).err().unwrap().to_string();
        assert!(error.contains("egress.console.logo_file"), "{error}");
        // Every template the pages name is here.
        for name in ["sources.html", "tail.html", "message_page.html"] {
            assert!(TEMPLATES.iter().any(|(n, _)| *n == name), "{name}");
        }
    }
}
