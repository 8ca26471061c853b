//! The console and the tenant portal in a real browser: headless Chromium over chromedriver,
//! against an egress on a fresh nats-server and receivers on 127.0.0.1. Each test saves
//! screenshots to `target/console-screenshots/`.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use browser::Browser;
use common::{Egress, KEY, Receiver, TOKEN, fixable, settings, until};
use serde_json::json;

/// Signs in with the API token, from the keyboard: the token typed, then Enter.
async fn sign_in(browser: &Browser, egress: &Egress) {
    browser.goto(&format!("{}/console", egress.base)).await;
    assert_eq!(browser.path().await, "/console/sign-in");
    browser.fill("#token", &format!("{TOKEN}\u{E007}")).await;
    browser.find("#events-in").await;
}

/// Every field a person can fill has a label, and the page is no wider than the window.
async fn check_usable(browser: &Browser) {
    let labelled = browser
        .client
        .execute(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]\
             .every(e => e.labels && e.labels.length > 0)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(labelled, json!(true), "a field without a label");
    let fits = browser
        .client
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, json!(true), "the page is wider than the window");
}

#[tokio::test]
async fn an_operator_signs_in_creates_an_endpoint_tests_it_and_rotates_its_secret() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let receiver = Receiver::ok().await;
    let browser = Browser::start(1280).await;

    // A wrong token is refused next to its field.
    browser.goto(&format!("{}/console", egress.base)).await;
    browser.fill("#token", "not-the-token-at-all").await;
    browser.click("#sign-in").await;
    assert!(
        browser
            .text("#token-error")
            .await
            .contains("not the egress API token")
    );
    sign_in(&browser, &egress).await;
    browser.screenshot("overview").await;

    // Bad input gets a message next to each field, and nothing is created.
    browser.click("a[href='/console/endpoints']").await;
    browser.click("#new-endpoint").await;
    check_usable(&browser).await;
    browser.fill("#url", "ftp://example.com/hook").await;
    browser.fill("#rate_limit", "fast").await;
    browser.click("#save").await;
    assert!(
        browser
            .text("#rate_limit-error")
            .await
            .contains("whole number")
    );
    browser.fill("#rate_limit", "").await;
    browser.fill("#event_types", "order.*\nbad..type").await;
    browser.click("#save").await;
    let message = browser.text("#url-error").await;
    assert!(message.contains("url"), "{message}");
    browser.screenshot("endpoint-form-errors").await;
    assert!(egress.every("/v1/endpoints").await.is_empty());
    browser.fill("#url", &receiver.url).await;
    browser.click("#save").await;
    assert!(
        browser
            .text("#event_types-error")
            .await
            .contains("event_types")
    );
    assert!(egress.every("/v1/endpoints").await.is_empty());

    // Now a good one.
    browser.fill("#event_types", "order.*").await;
    browser.fill("#description", "Orders to the shop").await;
    browser.click("#save").await;
    let id = browser.text("#endpoint-id").await;
    let (status, record) = egress
        .call("GET", &format!("/v1/endpoints/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(record["url"], receiver.url.as_str());
    assert_eq!(record["event_types"], json!(["order.*"]));

    // A test message goes to this endpoint, and its attempt shows.
    browser.click("#send-test").await;
    browser
        .reload_until("#attempts", "delivered", Duration::from_secs(20))
        .await;
    let hits = receiver.wait_for(1, Duration::from_secs(10)).await;
    let (_, secret) = egress
        .call("GET", &format!("/v1/endpoints/{id}/secret"), None)
        .await;
    let key = secret["key"].as_str().unwrap().to_owned();
    assert!(hits[0].verifies_with(&key));
    assert_eq!(hits[0].json()["type"], "hookbus.endpoint.test");
    assert!(browser.text("#attempts").await.contains("200"));
    browser.screenshot("endpoint").await;

    // Reveal the secret, then rotate it: the old one signs alongside.
    browser.click("#reveal-secret").await;
    assert_eq!(browser.text("#secret").await, key);
    browser.click("#rotate").await;
    browser.find("#previous").await;
    assert!(browser.text("#previous").await.contains(&key));
    let (_, rotated) = egress
        .call("GET", &format!("/v1/endpoints/{id}/secret"), None)
        .await;
    assert_ne!(rotated["key"], key.as_str());
    assert_eq!(
        browser.text("#secret").await,
        rotated["key"].as_str().unwrap()
    );
    assert_eq!(rotated["previous"][0]["key"], key.as_str());
    browser.screenshot("secret-rotated").await;

    // A form posted without its CSRF token changes nothing.
    browser
        .goto(&format!("{}/console/endpoints/{id}", egress.base))
        .await;
    browser
        .client
        .execute(
            "document.querySelector('form[action$=\"/disable\"] input[name=csrf]').remove()",
            vec![],
        )
        .await
        .unwrap();
    browser.click("#disable").await;
    assert!(browser.page_text().await.contains("CSRF token"));
    assert!(!egress.is_disabled(&id).await);

    // With the token it does.
    browser
        .goto(&format!("{}/console/endpoints/{id}", egress.base))
        .await;
    browser.click("#disable").await;
    browser.find(".notice").await;
    assert!(egress.is_disabled(&id).await);

    // At 390 px the list still fits and can be used.
    browser.client.set_window_size(390, 844).await.unwrap();
    browser
        .goto(&format!("{}/console/endpoints", egress.base))
        .await;
    check_usable(&browser).await;
    browser.screenshot("endpoints-390").await;

    browser.stop().await;
    egress.stop().await;
}

#[tokio::test]
async fn a_dead_lettered_delivery_is_retried_from_the_console_and_delivered() {
    let nats = hookbus_testkit::NatsServer::start();
    let mut config = settings();
    config.retry_schedule = vec![Duration::from_millis(200)];
    let egress = Egress::start(&nats.url(), config).await;
    let (receiver, fixed) = fixable(500).await;
    let (id, _) = egress.endpoint(json!({"url": receiver.url})).await;
    let event = egress
        .message("invoice.paid", json!({"invoice": 7}), None)
        .await;
    let letters = until(Duration::from_secs(20), "a dead letter", || async {
        let letters = egress.every("/v1/dead-letters").await;
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters[0]["event_id"], event.as_str());
    until(Duration::from_secs(20), "the exhaustion notice", || async {
        (!common::events_on(&nats.url(), "events.hookbus.delivery.exhausted")
            .await
            .is_empty())
        .then_some(())
    })
    .await;

    let browser = Browser::start(1280).await;
    sign_in(&browser, &egress).await;
    // The overview counts from the broker and the stores: the event and the egress's notice of
    // its exhaustion, its two attempts (both failed), the dead letter, and the endpoint failing
    // since its first attempt.
    assert_eq!(browser.text("#events-in").await, "2");
    assert_eq!(browser.text("#attempts-out").await, "2");
    assert_eq!(browser.text("#failure-rate").await, "100.0 %");
    assert_eq!(browser.text("#dead-letters").await, "1");
    assert!(browser.text("#failing").await.contains(&id));
    browser.screenshot("overview-failing").await;
    browser.click("a[href='/console/dead-letters']").await;
    let table = browser.text("#dead-letters").await;
    assert!(table.contains(&event) && table.contains(&id), "{table}");
    browser.screenshot("dead-letters").await;

    fixed.store(true, Ordering::SeqCst);
    let letter = letters[0]["id"].as_u64().unwrap();
    browser.click(&format!("#retry-{letter}")).await;
    assert!(browser.text(".notice").await.contains("queued again"));
    receiver.wait_for(3, Duration::from_secs(20)).await;
    assert!(egress.every("/v1/dead-letters").await.is_empty());

    // The endpoint's page shows the delivery after the dead ones; the message's page shows them all.
    browser
        .goto(&format!("{}/console/endpoints/{id}", egress.base))
        .await;
    browser
        .reload_until("#attempts", "delivered", Duration::from_secs(20))
        .await;
    assert!(browser.text("#attempts").await.contains("dead"));
    browser
        .goto(&format!("{}/console/messages/{event}", egress.base))
        .await;
    assert!(browser.text("#payload").await.contains("\"invoice\": 7"));
    let attempts = browser.text("#attempts").await;
    assert!(
        attempts.contains("dead") && attempts.contains("delivered"),
        "{attempts}"
    );
    browser.screenshot("message").await;

    browser.stop().await;
    egress.stop().await;
}

#[tokio::test]
async fn a_portal_link_opens_only_its_tenants_endpoints_and_only_once() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let (acme_a, _) = egress
        .endpoint(json!({"url": "http://127.0.0.1:9/acme-orders", "tenant": "acme"}))
        .await;
    egress
        .endpoint(json!({"url": "http://127.0.0.1:9/acme-invoices", "tenant": "acme"}))
        .await;
    let (globex, _) = egress
        .endpoint(json!({"url": "http://127.0.0.1:9/globex", "tenant": "globex"}))
        .await;
    egress
        .endpoint(json!({"url": "http://127.0.0.1:9/operator"}))
        .await;
    let (status, link) = egress
        .call("POST", "/v1/tenants/acme/portal", Some(json!({})))
        .await;
    assert_eq!(status, 201, "{link}");
    let url = link["url"].as_str().unwrap().to_owned();

    let browser = Browser::start(1280).await;
    browser.goto(&url).await;
    assert_eq!(browser.path().await, "/console/endpoints");
    let list = browser.text("#endpoints").await;
    assert!(
        list.contains("/acme-orders") && list.contains("/acme-invoices"),
        "{list}"
    );
    assert!(
        !list.contains("/globex") && !list.contains("/operator"),
        "{list}"
    );
    let nav = browser.text("nav").await;
    assert!(
        !nav.contains("Overview") && !nav.contains("Dead letters"),
        "{nav}"
    );
    browser.screenshot("portal").await;

    // Another tenant's endpoint, typed in, is not there, as one that does not exist.
    for path in [
        format!("/console/endpoints/{globex}"),
        format!("/console/endpoints/{globex}/secret"),
        "/console/endpoints/ep_does_not_exist".to_owned(),
        "/console/overview".to_owned(),
        "/console/dead-letters".to_owned(),
    ] {
        browser.goto(&format!("{}{path}", egress.base)).await;
        assert_eq!(browser.text("h1").await, "Not found", "{path}");
    }
    // Its own is.
    browser
        .goto(&format!("{}/console/endpoints/{acme_a}", egress.base))
        .await;
    assert!(browser.text("#endpoint-url").await.contains("/acme-orders"));

    // An endpoint made in the portal is the tenant's: the form has no tenant field.
    browser
        .goto(&format!("{}/console/endpoints/new", egress.base))
        .await;
    assert!(
        browser
            .client
            .find(fantoccini::Locator::Css("#tenant"))
            .await
            .is_err()
    );
    browser.fill("#url", "http://127.0.0.1:9/acme-new").await;
    browser.click("#save").await;
    let created = browser.text("#endpoint-id").await;
    let (_, record) = egress
        .call("GET", &format!("/v1/endpoints/{created}"), None)
        .await;
    assert_eq!(record["tenant"], "acme");
    browser.stop().await;

    // The link opens nothing a second time, nor once expired, nor altered.
    let other = Browser::start(1280).await;
    other.goto(&url).await;
    assert!(other.page_text().await.contains("already used"));
    other.screenshot("portal-link-used").await;
    let key = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, KEY).unwrap();
    let (expired, _) = hookbus_egress::access::Access::new(&key).portal_link("acme", -5);
    other
        .goto(&format!("{}/console/portal/{expired}", egress.base))
        .await;
    assert!(other.page_text().await.contains("expired"));
    let (fresh, _) = hookbus_egress::access::Access::new(&[9u8; 32]).portal_link("acme", 600);
    other
        .goto(&format!("{}/console/portal/{fresh}", egress.base))
        .await;
    assert!(other.page_text().await.contains("not valid"));
    // And none of these signed it in.
    other
        .goto(&format!("{}/console/endpoints", egress.base))
        .await;
    assert_eq!(other.path().await, "/console/sign-in");
    other.stop().await;
    egress.stop().await;
}

/// One file for the ingress and the egress, as `hookbus dev` and a deployment share one.
fn shared_config(nats_url: &str) -> (hookbus_ingress::Config, hookbus_egress::Config) {
    let toml = format!(
        r#"
[ingress]
listen = "127.0.0.1:0"

[ingress.sources.shop]
verifier = "none"
type_pointer = "/type"

[ingress.sources.gh]
verifier = "github"
secrets = ["shh-github-secret-do-not-show"]

[egress]
listen = "127.0.0.1:0"
api_token = "{TOKEN}"
encryption_key = "{KEY}"
allow_private_networks = true
"#
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), toml).unwrap();
    let loader = hookbus_config::Loader::with_env(
        Some(file.path()),
        vec![("NATS_URL".to_owned(), nats_url.to_owned())],
    )
    .unwrap();
    (
        hookbus_ingress::Config::load(&loader).unwrap(),
        hookbus_egress::Config::load(&loader).unwrap(),
    )
}

#[tokio::test]
async fn the_live_tail_shows_an_event_sent_through_the_ingress_and_sources_show_verifiers() {
    let nats = hookbus_testkit::NatsServer::start();
    let (ingress_config, egress_config) = shared_config(&nats.url());
    let egress = Egress::start_config(
        egress_config,
        std::sync::Arc::new(hookbus_egress::SystemLookup),
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingress = format!("http://{}", listener.local_addr().unwrap());
    let stop_ingress = tokio_util::sync::CancellationToken::new();
    let ingress_task = tokio::spawn(hookbus_ingress::run(
        ingress_config,
        listener,
        stop_ingress.clone(),
    ));
    let post = |body: serde_json::Value| {
        let client = egress.client.clone();
        let url = format!("{ingress}/webhooks/shop");
        async move {
            until(
                Duration::from_secs(15),
                "the ingress stores the event",
                || {
                    let (client, url, body) = (client.clone(), url.clone(), body.clone());
                    async move {
                        let response = client.post(url).json(&body).send().await.ok()?;
                        (response.status() == 200).then_some(()).map(|_| response)
                    }
                },
            )
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap()
        }
    };
    post(json!({"type": "order.created", "order": "first"})).await;

    let browser = Browser::start(1280).await;
    sign_in(&browser, &egress).await;
    browser
        .goto(&format!(
            "{}/console/tail?subject=events.shop.>",
            egress.base
        ))
        .await;
    browser
        .wait_text(
            "#tail-status",
            "Watching events.shop.>",
            Duration::from_secs(15),
        )
        .await;
    let stored = post(json!({"type": "order.created", "order": "tailed-1001"})).await;
    let id = stored["id"].as_str().unwrap().to_owned();
    browser
        .wait_text("#tail", &id, Duration::from_secs(15))
        .await;
    let shown = browser.text("#tail").await;
    assert!(
        shown.contains("events.shop.order.created") && shown.contains("tailed-1001"),
        "{shown}"
    );
    assert!(
        !shown.contains("\"first\""),
        "only events from now on: {shown}"
    );
    browser.screenshot("live-tail").await;

    // The tail's consumer is ordered and goes when the page does.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let events = js.get_stream("EVENTS").await.unwrap();
    let tails = || {
        let events = events.clone();
        async move {
            use futures_util::StreamExt;
            let names: Vec<String> = events
                .consumer_names()
                .filter_map(|n| async move { n.ok() })
                .collect()
                .await;
            names
                .into_iter()
                .filter(|n| n.starts_with(hookbus_egress::console::live::TAIL_CONSUMER_PREFIX))
                .count()
        }
    };
    assert_eq!(tails().await, 1);
    // A bad filter is refused next to its field, and opens no consumer.
    browser
        .goto(&format!("{}/console/tail?subject=orders.>", egress.base))
        .await;
    assert!(browser.text("#subject-error").await.contains("events."));
    until(
        Duration::from_secs(15),
        "the tail's consumer deleted",
        || async { (tails().await == 0).then_some(()) },
    )
    .await;

    // The sources: what arrived, and what the configuration says, never its secrets.
    browser.click("a[href='/console/sources']").await;
    let shop = browser.text("#source-shop").await;
    assert!(
        shop.contains("none") && shop.contains("order.created"),
        "{shop}"
    );
    assert!(shop.contains("type_pointer"), "{shop}");
    let gh = browser.text("#source-gh").await;
    assert!(gh.contains("github"), "{gh}");
    assert!(
        !browser
            .client
            .source()
            .await
            .unwrap()
            .contains("shh-github-secret")
    );
    browser.screenshot("sources").await;

    browser.stop().await;
    stop_ingress.cancel();
    ingress_task.await.unwrap().unwrap();
    egress.stop().await;
}
