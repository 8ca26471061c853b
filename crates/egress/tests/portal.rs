//! The console's sessions and the tenant portal over plain HTTP: tenant isolation on every
//! route a portal session can reach, CSRF on every form, the cookie's attributes and the
//! security headers. The browser tests (`console.rs`) show the same through Chromium.

mod common;

use std::time::Duration;

use common::{Egress, Receiver, TOKEN, settings};
use reqwest::header;
use serde_json::json;

/// A client that keeps no cookies and follows no redirects: the test carries the cookie.
fn plain() -> reqwest::Client {
    hookbus_service::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A signed-in session: its cookie (`name=value`) and a page's CSRF token.
struct Session {
    cookie: String,
    csrf: String,
    set_cookie: String,
}

fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a form with a CSRF token") + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

impl Session {
    async fn get(&self, egress: &Egress, path: &str) -> (u16, String) {
        let response = plain()
            .get(format!("{}{path}", egress.base))
            .header(header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn post(&self, egress: &Egress, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let mut form: Vec<(&str, &str)> = vec![("csrf", &self.csrf)];
        form.extend_from_slice(fields);
        self.post_raw(egress, path, &form).await
    }

    async fn post_raw(
        &self,
        egress: &Egress,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (u16, String) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let response = plain()
            .post(format!("{}{path}", egress.base))
            .header(header::COOKIE, &self.cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

fn session_cookie(response: &reqwest::Response) -> (String, String) {
    let set = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("hookbus_session="))
        .expect("a session cookie");
    (set.split(';').next().unwrap().to_owned(), set)
}

async fn with_csrf(egress: &Egress, cookie: String, set_cookie: String) -> Session {
    let mut session = Session {
        cookie,
        csrf: String::new(),
        set_cookie,
    };
    let (status, page) = session.get(egress, "/console/endpoints").await;
    assert_eq!(status, 200, "{page}");
    session.csrf = csrf_of(&page);
    session
}

async fn portal(egress: &Egress, tenant: &str) -> Session {
    let (status, link) = egress
        .call("POST", &format!("/v1/tenants/{tenant}/portal"), None)
        .await;
    assert_eq!(status, 201, "{link}");
    let response = plain()
        .get(link["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[header::LOCATION], "/console/endpoints");
    let (cookie, set) = session_cookie(&response);
    with_csrf(egress, cookie, set).await
}

async fn operator(egress: &Egress) -> Session {
    let client = plain();
    let page = client
        .get(format!("{}/console/sign-in", egress.base))
        .send()
        .await
        .unwrap();
    let nonce = page
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = csrf_of(&page.text().await.unwrap());
    let response = client
        .post(format!("{}/console/sign-in", egress.base))
        .header(header::COOKIE, &nonce)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs([("csrf", csrf.as_str()), ("token", TOKEN)])
                .finish(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let (cookie, set) = session_cookie(&response);
    with_csrf(egress, cookie, set).await
}

#[tokio::test]
async fn a_portal_session_reaches_nothing_of_another_tenant_on_any_route() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let (own, _) = egress
        .endpoint(json!({"url": "http://127.0.0.1:9/acme", "tenant": "acme"}))
        .await;
    let receiver = Receiver::ok().await;
    let (theirs, _) = egress
        .endpoint(json!({"url": format!("{}/globex", receiver.url), "tenant": "globex"}))
        .await;
    let (operators, _) = egress
        .endpoint(json!({"url": "http://127.0.0.1:9/operator"}))
        .await;
    let message = egress
        .message("invoice.paid", json!({"n": 1}), Some("globex"))
        .await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let before = egress
        .call("GET", &format!("/v1/endpoints/{theirs}"), None)
        .await;
    let secret_before = egress
        .call("GET", &format!("/v1/endpoints/{theirs}/secret"), None)
        .await;
    let acme = portal(&egress, "acme").await;
    assert!(acme.set_cookie.contains("HttpOnly"), "{}", acme.set_cookie);
    assert!(
        acme.set_cookie.contains("SameSite=Strict"),
        "{}",
        acme.set_cookie
    );
    assert!(
        acme.set_cookie.contains("Path=/console"),
        "{}",
        acme.set_cookie
    );

    // Every page and action a portal session has, on another tenant's endpoint, the operator's
    // own endpoint, and one that does not exist: the same 404.
    let gets = [
        "/console/endpoints/{id}",
        "/console/endpoints/{id}/edit",
        "/console/endpoints/{id}/delete",
        "/console/endpoints/{id}/secret",
    ];
    let posts: [(&str, &[(&str, &str)]); 8] = [
        (
            "/console/endpoints/{id}/edit",
            &[("url", "http://127.0.0.1:9/taken")],
        ),
        ("/console/endpoints/{id}/enable", &[]),
        ("/console/endpoints/{id}/disable", &[]),
        ("/console/endpoints/{id}/secret/rotate", &[]),
        ("/console/endpoints/{id}/test", &[]),
        (
            "/console/endpoints/{id}/recover",
            &[("since", "2020-01-01T00:00:00Z")],
        ),
        ("/console/endpoints/{id}/resend/{event}", &[]),
        ("/console/endpoints/{id}/delete", &[]),
    ];
    let missing = "ep_does_not_exist";
    for id in [theirs.as_str(), operators.as_str()] {
        for path in gets {
            let (status, page) = acme.get(&egress, &path.replace("{id}", id)).await;
            assert_eq!(status, 404, "{path}: {page}");
            let (_, absent) = acme.get(&egress, &path.replace("{id}", missing)).await;
            assert_eq!(page.replace(id, missing), absent, "{path}");
        }
        for (path, fields) in posts {
            let path = path.replace("{event}", &message);
            let (status, page) = acme.post(&egress, &path.replace("{id}", id), fields).await;
            assert_eq!(status, 404, "{path}: {page}");
            let (_, absent) = acme
                .post(&egress, &path.replace("{id}", missing), fields)
                .await;
            assert_eq!(page.replace(id, missing), absent, "{path}");
        }
    }
    // Nothing of theirs changed, nothing was sent.
    assert_eq!(
        egress
            .call("GET", &format!("/v1/endpoints/{theirs}"), None)
            .await,
        before
    );
    assert_eq!(
        egress
            .call("GET", &format!("/v1/endpoints/{theirs}/secret"), None)
            .await,
        secret_before
    );
    // (No test message, resend or recover reached it: what arrives after a second.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.count(), 1);
    assert_eq!(egress.attempts(&theirs).await.len(), 1);

    // Their message, the operator's pages, and a list asked for another tenant.
    for path in [
        format!("/console/messages/{message}"),
        "/console/overview".to_owned(),
        "/console/dead-letters".to_owned(),
    ] {
        let (status, page) = acme.get(&egress, &path).await;
        assert_eq!(status, 404, "{path}: {page}");
    }
    let (status, _) = acme
        .post(&egress, "/console/dead-letters/1/retry", &[])
        .await;
    assert_eq!(status, 404);
    let (status, page) = acme.get(&egress, "/console/endpoints?tenant=globex").await;
    assert_eq!(status, 200);
    assert!(!page.contains(&theirs) && !page.contains(&own), "{page}");
    let (_, page) = acme.get(&egress, "/console/endpoints").await;
    assert!(
        page.contains(&own) && !page.contains(&theirs) && !page.contains(&operators),
        "{page}"
    );

    // A tenant cannot move its own endpoint to another tenant, nor create one for another.
    let (status, page) = acme
        .post(
            &egress,
            &format!("/console/endpoints/{own}/edit"),
            &[("url", "http://127.0.0.1:9/acme"), ("tenant", "globex")],
        )
        .await;
    assert_eq!(status, 303, "{page}");
    let (_, record) = egress
        .call("GET", &format!("/v1/endpoints/{own}"), None)
        .await;
    assert_eq!(
        record["tenant"], "acme",
        "the tenant field is not the portal's"
    );
    let (status, _) = acme
        .post(
            &egress,
            "/console/endpoints/new",
            &[("url", "http://127.0.0.1:9/acme-2"), ("tenant", "globex")],
        )
        .await;
    assert_eq!(status, 303);
    let (_, list) = egress
        .call("GET", "/v1/endpoints?tenant=globex", None)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    egress.stop().await;
}

#[tokio::test]
async fn every_console_form_needs_its_csrf_token_and_pages_send_a_strict_policy() {
    let nats = hookbus_testkit::NatsServer::start();
    let mut config = settings();
    config.console.frame_ancestors = vec!["https://app.example.com".into()];
    let logo = tempfile::Builder::new().suffix(".svg").tempfile().unwrap();
    let svg = "<svg xmlns='http://www.w3.org/2000/svg' width='8' height='8'/>";
    std::fs::write(logo.path(), svg).unwrap();
    config.console.logo_file = Some(logo.path().to_owned());
    config.console.accent_color = "#0f766e".into();
    config.console.brand_name = "Acme webhooks".into();
    let egress = Egress::start(&nats.url(), config).await;
    let receiver = Receiver::ok().await;
    let (id, _) = egress
        .endpoint(json!({"url": receiver.url, "tenant": "acme"}))
        .await;
    let message = egress
        .message("invoice.paid", json!({}), Some("acme"))
        .await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let before = egress
        .call("GET", &format!("/v1/endpoints/{id}"), None)
        .await;
    let operator = operator(&egress).await;
    assert!(operator.set_cookie.contains("SameSite=Strict"));
    assert!(operator.set_cookie.contains("HttpOnly"));

    let forms = [
        format!("/console/endpoints/{id}/edit"),
        format!("/console/endpoints/{id}/enable"),
        format!("/console/endpoints/{id}/disable"),
        format!("/console/endpoints/{id}/secret/rotate"),
        format!("/console/endpoints/{id}/test"),
        format!("/console/endpoints/{id}/recover"),
        format!("/console/endpoints/{id}/resend/{message}"),
        format!("/console/endpoints/{id}/delete"),
        "/console/endpoints/new".to_owned(),
        "/console/dead-letters/1/retry".to_owned(),
        "/console/sign-out".to_owned(),
    ];
    let fields = [
        ("url", "http://127.0.0.1:9/changed"),
        ("since", "2020-01-01T00:00:00Z"),
    ];
    for path in &forms {
        for csrf in [None, Some("forged"), Some("")] {
            let mut form = fields.to_vec();
            if let Some(token) = csrf {
                form.push(("csrf", token));
            }
            let (status, page) = operator.post_raw(&egress, path, &form).await;
            assert_eq!(status, 403, "{path} with {csrf:?}: {page}");
            assert!(page.contains("CSRF token"), "{page}");
        }
    }
    // A portal session's token is not the operator's.
    let acme = portal(&egress, "acme").await;
    let (status, _) = operator
        .post_raw(
            &egress,
            &format!("/console/endpoints/{id}/disable"),
            &[("csrf", &acme.csrf)],
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        egress
            .call("GET", &format!("/v1/endpoints/{id}"), None)
            .await,
        before
    );
    assert_eq!(egress.every("/v1/endpoints").await.len(), 1);
    // (No test message, resend or recover was sent: what arrives after a second.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.count(), 1);

    // The headers of an operator's page, a portal page, and the sign-in page.
    let client = plain();
    for (cookie, frame) in [
        (Some(&operator.cookie), "frame-ancestors 'none'"),
        (
            Some(&acme.cookie),
            "frame-ancestors https://app.example.com",
        ),
        (None, "frame-ancestors 'none'"),
    ] {
        let mut request = client.get(format!("{}/console/endpoints/{id}", egress.base));
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie.as_str());
        }
        let response = request.send().await.unwrap();
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.starts_with("default-src 'none'; script-src 'self'; style-src 'self'"),
            "{csp}"
        );
        assert!(csp.contains(frame), "{csp}");
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
        assert_eq!(response.headers()[header::REFERRER_POLICY], "no-referrer");
    }
    // The brand: its name on the pages, its colour as a stylesheet, its logo from the egress.
    let (_, page) = acme.get(&egress, "/console/endpoints").await;
    assert!(page.contains("Acme webhooks") && page.contains("src=\"/console/assets/logo\""));
    let brand = hookbus_testkit::get_text(
        &client,
        &format!("{}/console/assets/brand.css", egress.base),
    )
    .await;
    assert!(brand.contains("--accent: #0f766e"), "{brand}");
    let served = client
        .get(format!("{}/console/assets/logo", egress.base))
        .send()
        .await
        .unwrap();
    assert_eq!(served.headers()[header::CONTENT_TYPE], "image/svg+xml");
    assert_eq!(served.text().await.unwrap(), svg);
    // A framed portal's session cookie must cross sites: SameSite=None, Secure, Partitioned.
    assert!(
        acme.set_cookie.contains("SameSite=None"),
        "{}",
        acme.set_cookie
    );
    assert!(acme.set_cookie.contains("Secure") && acme.set_cookie.contains("Partitioned"));
    // Signing out of the framed portal clears the cookie with the attributes it was set with.
    let response = plain()
        .post(format!("{}/console/sign-out", egress.base))
        .header(header::COOKIE, &acme.cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("csrf={}", acme.csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, cleared) = session_cookie(&response);
    assert!(
        cleared.contains("Max-Age=0") && cleared.contains("Partitioned"),
        "{cleared}"
    );
    // A portal session that ended says so, rather than asking a tenant for the API token.
    let key =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, common::KEY).unwrap();
    let ended = hookbus_egress::access::Access::new(&key)
        .start_session(&hookbus_egress::access::Scope::Tenant("acme".into()), -1);
    let response = client
        .get(format!("{}/console/endpoints", egress.base))
        .header(header::COOKIE, format!("hookbus_session={ended}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("portal session has ended")
    );
    // Without a session, a page sends the browser to sign in; the token is never in a URL.
    let response = client
        .get(format!("{}/console/endpoints", egress.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[header::LOCATION], "/console/sign-in");
    egress.stop().await;
}

#[tokio::test]
async fn portal_links_are_checked_when_made() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    for (path, body, field) in [
        (
            "/v1/tenants/acme/portal",
            json!({"expires_in": 5}),
            "expires_in",
        ),
        (
            "/v1/tenants/acme/portal",
            json!({"expires_in": 86_401}),
            "expires_in",
        ),
        ("/v1/tenants/acme/portal", json!({"ttl": 60}), "ttl"),
    ] {
        let (status, answer) = egress.call("POST", path, Some(body)).await;
        assert!(status == 422 || status == 400, "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (status, answer) = egress
        .call(
            "POST",
            "/v1/tenants/acme/portal",
            Some(json!({"expires_in": 60})),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    assert!(
        answer["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/console/portal/", egress.base))
    );
    egress.stop().await;
}

#[tokio::test]
async fn bad_input_in_every_form_is_shown_next_to_its_field_and_changes_nothing() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let (id, _) = egress
        .endpoint(json!({"url": "http://127.0.0.1:9/hook", "event_types": ["order.*"]}))
        .await;
    let before = egress
        .call("GET", &format!("/v1/endpoints/{id}"), None)
        .await;
    let operator = operator(&egress).await;
    let edit = format!("/console/endpoints/{id}/edit");
    let recover = format!("/console/endpoints/{id}/recover");
    let good = [
        ("url", "http://127.0.0.1:9/hook"),
        ("event_types", "order.*"),
        ("rate_limit", ""),
        ("max_in_flight", "16"),
        ("headers", ""),
        ("sources", ""),
    ];
    let with = |field: &'static str, value: &'static str| -> Vec<(&'static str, &'static str)> {
        good.iter()
            .map(|(k, v)| (*k, if *k == field { value } else { *v }))
            .collect()
    };
    // (form, its fields, the id of the message expected next to the field)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            edit.as_str(),
            with("url", "ftp://127.0.0.1/hook"),
            "url-error",
        ),
        (edit.as_str(), with("url", ""), "url-error"),
        (
            edit.as_str(),
            with("rate_limit", "fast"),
            "rate_limit-error",
        ),
        (
            edit.as_str(),
            with("rate_limit", "100001"),
            "rate_limit-error",
        ),
        (
            edit.as_str(),
            with("max_in_flight", "0"),
            "max_in_flight-error",
        ),
        (
            edit.as_str(),
            with("headers", "no colon here"),
            "headers-error",
        ),
        (
            edit.as_str(),
            with("headers", "webhook-id: mine"),
            "headers-error",
        ),
        (
            edit.as_str(),
            with("event_types", "order..created"),
            "event_types-error",
        ),
        (
            edit.as_str(),
            with("sources", "bad source!"),
            "sources-error",
        ),
        (
            "/console/endpoints/new",
            with("event_types", "a.>.b"),
            "event_types-error",
        ),
        (
            recover.as_str(),
            vec![("since", "yesterday")],
            "since-error",
        ),
    ];
    for (path, fields, error) in &cases {
        let (status, page) = operator.post(&egress, path, fields).await;
        assert_eq!(status, 422, "{path} {fields:?}: {page}");
        assert!(
            page.contains(&format!("id=\"{error}\"")),
            "{path} {fields:?}: {page}"
        );
        assert!(page.contains("aria-invalid=\"true\""), "{path}");
    }
    let long_tenant = format!("/console/endpoints?tenant={}", "t".repeat(129));
    for (path, error) in [
        (long_tenant.as_str(), "f-tenant-error"),
        (
            "/console/dead-letters?consumer=not%20a%20name",
            "consumer-error",
        ),
        ("/console/tail?subject=orders.%3E", "subject-error"),
        ("/console/tail?subject=events.%3E.x", "subject-error"),
    ] {
        let (status, page) = operator.get(&egress, path).await;
        assert_eq!(status, 422, "{path}: {page}");
        assert!(page.contains(&format!("id=\"{error}\"")), "{path}: {page}");
    }
    // Nothing changed, nothing was created, nothing was queued.
    assert_eq!(
        egress
            .call("GET", &format!("/v1/endpoints/{id}"), None)
            .await,
        before
    );
    assert_eq!(egress.every("/v1/endpoints").await.len(), 1);
    egress.stop().await;
}
