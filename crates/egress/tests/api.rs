//! The management API against a real nats-server: the token on every route, validation that
//! names the field, and the OpenAPI document listing every route.

mod common;

use common::{Egress, TOKEN, settings};
use serde_json::json;

/// The routes DESIGN.md promises.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/endpoints"),
    ("get", "/v1/endpoints"),
    ("get", "/v1/endpoints/{id}"),
    ("patch", "/v1/endpoints/{id}"),
    ("delete", "/v1/endpoints/{id}"),
    ("get", "/v1/endpoints/{id}/secret"),
    ("post", "/v1/endpoints/{id}/secret/rotate"),
    ("post", "/v1/messages"),
    ("get", "/v1/messages/{id}"),
    ("post", "/v1/endpoints/{id}/test"),
    ("post", "/v1/tenants/{tenant}/portal"),
    ("get", "/v1/event-types"),
    ("get", "/v1/endpoints/{id}/attempts"),
    ("get", "/v1/messages/{id}/attempts"),
    ("post", "/v1/endpoints/{id}/messages/{event_id}/resend"),
    ("post", "/v1/endpoints/{id}/recover"),
    ("get", "/v1/dead-letters"),
    ("post", "/v1/dead-letters/{id}/retry"),
];

#[tokio::test]
async fn every_route_is_documented_and_answers_401_without_the_token() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let (id, _) = egress
        .endpoint(json!({"url": "http://127.0.0.1:9/hook"}))
        .await;

    let document = egress.openapi().await;
    let paths = document["paths"].as_object().expect("paths");
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "patch", "put", "delete"] {
            if item.get(method).is_some() {
                documented.push((method.to_owned(), path.clone()));
            }
        }
    }
    for (method, path) in ROUTES {
        assert!(
            documented.contains(&((*method).to_owned(), (*path).to_owned())),
            "{method} {path} missing from /openapi.json"
        );
    }
    assert_eq!(documented.len(), ROUTES.len(), "{documented:?}");
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());

    // Each documented route exists (401, not 404 or 405) and is guarded.
    for (method, path) in &documented {
        let path = path
            .replace("{id}", &id)
            .replace("{event_id}", "0193a0c4-7c1e-7000-8000-000000000001")
            .replace("{tenant}", "acme");
        let path = if path.starts_with("/v1/dead-letters/") {
            path.replace(&id, "1")
        } else {
            path
        };
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        for token in [None, Some("wrong-token-0123456789"), Some("")] {
            let mut request = egress
                .client
                .request(method.clone(), format!("{}{path}", egress.base))
                .json(&json!({}));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path} with {token:?}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
        // A token that differs only at the end is refused too.
        let almost = format!("{}X", &TOKEN[..TOKEN.len() - 1]);
        let response = egress
            .client
            .request(method.clone(), format!("{}{path}", egress.base))
            .bearer_auth(almost)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    egress.stop().await;
}

#[tokio::test]
async fn the_openapi_document_states_the_page_parameters_and_the_errors_the_handlers_answer() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let document = egress.openapi().await;
    let mut operation_ids = std::collections::BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap_or_default();
            assert!(
                operation_ids.insert(id.to_owned()),
                "{method} {path}: {id} twice"
            );
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.contains_key("401"), "{method} {path}");
        }
    }
    for list in [
        "/v1/endpoints",
        "/v1/endpoints/{id}/attempts",
        "/v1/dead-letters",
    ] {
        let operation = &document["paths"][list]["get"];
        let parameters = operation["parameters"].as_array().unwrap();
        let named = |name: &str| {
            parameters
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{list} has no {name}"))
        };
        assert_eq!(named("limit")["in"], "query");
        assert_eq!(named("limit")["schema"]["minimum"], 1, "{list}");
        assert_eq!(named("limit")["schema"]["maximum"], 250, "{list}");
        assert_eq!(named("iterator")["in"], "query");
        for status in ["200", "400", "422"] {
            assert!(
                operation["responses"].get(status).is_some(),
                "{list} documents {status}"
            );
        }
        // What each list answers holds its `iterator` and `done`.
        let schema = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        let properties = &document["components"]["schemas"][&schema]["properties"];
        for field in ["items", "iterator", "done"] {
            assert!(properties.get(field).is_some(), "{schema}.{field}");
        }
    }
    let endpoint_in = &document["components"]["schemas"]["EndpointIn"]["properties"];
    assert_eq!(endpoint_in["max_in_flight"]["maximum"], 10_000);
    assert_eq!(endpoint_in["rate_limit"]["maximum"], 100_000);
    assert_eq!(endpoint_in["tenant"]["maxLength"], 128);
    egress.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_4xx_naming_the_field_and_changes_nothing() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let cases = [
        (json!({"url": "not a url"}), 422, "url"),
        (json!({"url": "ftp://127.0.0.1/x"}), 422, "url"),
        (
            json!({"url": "http://127.0.0.1:9/", "colour": "red"}),
            400,
            "colour",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "event_types": ["order..created"]}),
            422,
            "event_types[0]",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "event_types": ["ok.*", "bad.>.x"]}),
            422,
            "event_types[1]",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "rate_limit": "fast"}),
            400,
            "rate_limit",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "max_in_flight": 0}),
            422,
            "max_in_flight",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "secret": "nope"}),
            422,
            "secret",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "sources": ["a b"]}),
            422,
            "sources[0]",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "headers": {"webhook-id": "x"}}),
            422,
            "headers.webhook-id",
        ),
        (json!({"description": "no url"}), 400, "url"),
    ];
    for (body, status, field) in cases {
        let (got, answer) = egress
            .call("POST", "/v1/endpoints", Some(body.clone()))
            .await;
        assert_eq!(got, status, "{body} → {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} → {answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    let (_, list) = egress.call("GET", "/v1/endpoints", None).await;
    assert_eq!(list["items"], json!([]), "nothing was created");

    let (id, _) = egress.endpoint(json!({"url": "http://127.0.0.1:9/"})).await;
    let (status, answer) = egress
        .call(
            "PATCH",
            &format!("/v1/endpoints/{id}"),
            Some(json!({"event_types": ["*x"]})),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (422, Some("event_types[0]"))
    );
    let (status, answer) = egress
        .call(
            "POST",
            "/v1/messages",
            Some(json!({"event_type": "order.*", "payload": {}})),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (422, Some("event_type"))
    );
    let (status, answer) = egress
        .call("POST", "/v1/messages", Some(json!({"payload": {}})))
        .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("event_type")),
        "{answer}"
    );
    let (status, answer) = egress
        .call(
            "POST",
            &format!("/v1/endpoints/{id}/recover"),
            Some(json!({"since": "yesterday"})),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (422, Some("since"))
    );
    let (status, _) = egress.call("GET", "/v1/endpoints/ep_nope", None).await;
    assert_eq!(status, 404);
    egress.stop().await;
}

#[tokio::test]
async fn endpoints_are_created_listed_by_tenant_changed_and_deleted_and_secrets_never_listed() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (a, returned) = egress
        .endpoint(json!({"url": "http://127.0.0.1:9/a", "tenant": "acme", "secret": secret, "event_types": ["order.*"]}))
        .await;
    assert_eq!(returned, secret);
    let (b, generated) = egress
        .endpoint(json!({"url": "http://127.0.0.1:9/b"}))
        .await;
    assert!(generated.starts_with("whsec_"));

    let (_, all) = egress.call("GET", "/v1/endpoints", None).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    assert!(
        !all.to_string().contains("whsec_"),
        "no secret in a list: {all}"
    );
    let (_, acme) = egress.call("GET", "/v1/endpoints?tenant=acme", None).await;
    let ids: Vec<&str> = acme["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str()]);

    let (status, got) = egress
        .call("GET", &format!("/v1/endpoints/{a}/secret"), None)
        .await;
    assert_eq!((status, got["key"].as_str()), (200, Some(secret)));
    let (status, changed) = egress
        .call(
            "PATCH",
            &format!("/v1/endpoints/{a}"),
            Some(json!({"description": "orders", "rate_limit": 5})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (
            changed["description"].as_str(),
            changed["rate_limit"].as_u64()
        ),
        (Some("orders"), Some(5))
    );
    assert_eq!(
        changed["event_types"],
        json!(["order.*"]),
        "unchanged fields stay"
    );

    // The secret is encrypted at rest: the bucket's bytes do not hold it.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = js.get_key_value("egress_endpoints").await.unwrap();
    let raw = kv.get(&a).await.unwrap().unwrap();
    let key = &secret["whsec_".len()..];
    assert!(!String::from_utf8_lossy(&raw).contains(key));
    assert!(!raw.windows(8).any(|w| w == &base64_decoded(key)[..8]));

    let (status, _) = egress
        .call("DELETE", &format!("/v1/endpoints/{b}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = egress
        .call("GET", &format!("/v1/endpoints/{b}"), None)
        .await;
    assert_eq!(status, 404);
    egress.stop().await;
}

fn base64_decoded(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

#[tokio::test]
async fn literal_private_addresses_and_localhost_are_refused_at_creation() {
    let nats = hookbus_testkit::NatsServer::start();
    let mut strict = settings();
    strict.allow_private_networks = false;
    let egress = Egress::start(&nats.url(), strict).await;
    for url in [
        "http://127.0.0.1/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://localhost/hook",
    ] {
        let (status, answer) = egress
            .call("POST", "/v1/endpoints", Some(json!({"url": url})))
            .await;
        assert_eq!(status, 422, "{url}: {answer}");
        assert_eq!(answer["error"]["field"], "url");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("address") || message.contains("localhost"),
            "{url}: {message}"
        );
    }
    // A name is checked when it is resolved, at connect time.
    let (status, _) = egress
        .call(
            "POST",
            "/v1/endpoints",
            Some(json!({"url": "https://hooks.example.com/x"})),
        )
        .await;
    assert_eq!(status, 201);
    egress.stop().await;
}

#[tokio::test]
async fn the_event_type_catalogue_lists_what_was_seen_with_examples_and_schemas() {
    use hookbus_proto::commerce::v1::{LineItem, Money, OrderCreated};
    use prost::Message;

    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    egress
        .message("invoice.paid", json!({"invoice": "in_1"}), None)
        .await;
    egress
        .message("invoice.paid", json!({"invoice": "in_2"}), Some("acme"))
        .await;
    // A typed event, as the services publish them.
    let order = OrderCreated {
        order_id: "1001".into(),
        line_items: vec![LineItem {
            sku: "SKU-1".into(),
            quantity: 2,
            unit_price: Some(Money {
                currency: "EUR".into(),
                amount_minor: 1250,
            }),
        }],
        ..Default::default()
    };
    let event = hookbus_proto::v1::Event {
        id: "typed-1".into(),
        source: "shop".into(),
        r#type: "order.created".into(),
        provider: "shopify".into(),
        content_type: hookbus_proto::content_type_for::<OrderCreated>(),
        payload: order.encode_to_vec().into(),
        ..Default::default()
    };
    let client = async_nats::connect(nats.url()).await.unwrap();
    hookbus_bus::Publisher::new(client, 8)
        .publish_event(
            "events.shop.order.created".into(),
            &event,
            "typed-1",
            tokio::time::Instant::now() + std::time::Duration::from_secs(5),
            &Default::default(),
        )
        .await
        .unwrap();

    let pages = egress.pages("/v1/event-types?limit=1").await;
    let types: Vec<_> = pages.iter().flatten().collect();
    assert_eq!(pages.len(), 2, "one type a page: {pages:?}");
    let names: Vec<_> = types
        .iter()
        .map(|t| t["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["invoice.paid", "order.created"]);

    let invoice = types[0];
    assert_eq!(invoice["sources"], json!(["api"]));
    assert_eq!(invoice["count"], 2);
    assert_eq!(invoice["example"], json!({"invoice": "in_2"}), "the latest");
    assert!(invoice["schema"].is_null());

    let typed = types[1];
    assert_eq!(typed["content_type"], "application/json");
    assert_eq!(typed["example"]["orderId"], "1001");
    let schema = &typed["schema"];
    assert_eq!(schema["title"], "hookbus.commerce.v1.OrderCreated");
    let properties = &schema["$defs"]["hookbus.commerce.v1.OrderCreated"]["properties"];
    assert_eq!(properties["orderId"]["type"], "string");
    assert_eq!(properties["lineItems"]["type"], "array");
    egress.stop().await;
}

#[tokio::test]
async fn a_service_consumers_dead_letters_are_listed_and_retried_through_the_api() {
    use prost::Message;

    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let event = hookbus_proto::v1::Event {
        id: "ev-poison".into(),
        source: "shop".into(),
        r#type: "order.created".into(),
        ..Default::default()
    };
    hookbus_bus::dlq::publish_dead_letter(
        &js,
        hookbus_bus::dlq::DeadLetter {
            consumer: "inventory",
            subject: "events.shop.order.created",
            stream_sequence: 7,
            attempts: 5,
            reason: "unknown SKU",
            payload: event.encode_to_vec().into(),
            headers: None,
        },
    )
    .await
    .unwrap();
    // The egress's own list does not hold it; the consumer's does.
    assert!(egress.every("/v1/dead-letters").await.is_empty());
    let letters = egress.every("/v1/dead-letters?consumer=inventory").await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["consumer"], "inventory");
    assert_eq!(letter["event_id"], "ev-poison");
    assert_eq!(letter["subject"], "events.shop.order.created");
    assert_eq!(letter["reason"], "unknown SKU");
    assert!(letter["endpoint_id"].is_null());
    let (status, answer) = egress
        .call("GET", "/v1/dead-letters?consumer=not+a+name", None)
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "consumer");

    // Retried: published again on its subject, with the same event id, and gone from DLQ.
    let (status, answer) = egress
        .call(
            "POST",
            &format!("/v1/dead-letters/{}/retry", letter["id"]),
            None,
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert!(
        egress
            .every("/v1/dead-letters?consumer=inventory")
            .await
            .is_empty()
    );
    let again = common::events_on(&nats.url(), "events.shop.order.created").await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, "ev-poison");
    egress.stop().await;
}

#[tokio::test]
async fn endpoints_are_listed_by_status_and_url() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    for (url, disabled) in [
        ("http://127.0.0.1:9/orders", false),
        ("http://127.0.0.1:9/orders-eu", true),
        ("http://127.0.0.1:9/invoices", false),
    ] {
        egress
            .endpoint(json!({"url": url, "disabled": disabled}))
            .await;
    }
    let urls = |items: Vec<serde_json::Value>| -> Vec<String> {
        items
            .iter()
            .map(|e| {
                e["url"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(
        urls(egress.every("/v1/endpoints?disabled=true").await),
        ["orders-eu"]
    );
    assert_eq!(
        urls(egress.every("/v1/endpoints?disabled=false").await),
        ["orders", "invoices"]
    );
    assert_eq!(
        urls(
            egress
                .every("/v1/endpoints?url_contains=orders&limit=1")
                .await
        ),
        ["orders", "orders-eu"]
    );
    assert_eq!(
        urls(
            egress
                .every("/v1/endpoints?url_contains=orders&disabled=false")
                .await
        ),
        ["orders"]
    );
    egress.stop().await;
}
