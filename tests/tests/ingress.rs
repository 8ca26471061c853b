//! The ingress end to end against a real nats-server: every verifier, dedup, errors, rotation,
//! Slack's challenge, health routes, configuration errors.

use std::collections::BTreeMap;

use hookbus_e2e::{config, now, spawn_ingress, stored_events, try_config};
use hookbus_signature::{
    Algorithm, Encoding, Extract, HmacScheme, Outgoing, PayloadTemplate, Scheme, sign_as_provider,
};
use hookbus_testkit::NatsServer;
use serde::Deserialize;

const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Sources for the known-answer vectors (their timestamps are years old, so these sources get a
/// tolerance that covers them) and for freshly signed requests (default tolerance).
const SOURCES: &str = r#"
[ingress.sources.v-sw]
verifier = "standard-webhooks"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
tolerance = "10000days"

[ingress.sources.v-svix]
verifier = "standard-webhooks"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
tolerance = "10000days"

[ingress.sources.v-github]
verifier = "github"
secrets = ["It's a Secret to Everybody"]

[ingress.sources.v-stripe]
verifier = "stripe"
secrets = ["whsec_test_secret"]
tolerance = "10000days"

[ingress.sources.v-slack]
verifier = "slack"
secrets = ["8f742231b10e8888abcd99yyyzzz85a5"]
tolerance = "10000days"

[ingress.sources.v-shop]
verifier = "shopify"
secrets = ["shpss_0123456789abcdef0123456789abcdef"]

[ingress.sources.sw]
verifier = "standard-webhooks"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]

[ingress.sources.github]
verifier = "github"
secrets = ["old-secret", "new-secret"]

[ingress.sources.stripe]
verifier = "stripe"
secrets = ["whsec_stripe"]

[ingress.sources.shop]
verifier = "shopify"
secrets = ["shpss_fresh"]

[ingress.sources.slack]
verifier = "slack"
secrets = ["slack-secret"]

[ingress.sources.acme]
verifier = "hmac"
secrets = ["acme-secret"]
type_pointer = "/kind"
id_header = "X-Acme-Delivery"
[ingress.sources.acme.hmac]
header = "X-Acme-Signature"
prefix = "sha512="
encoding = "base64"
algorithm = "sha512"
payload = "{timestamp}.{id}.{body}"
timestamp_header = "X-Acme-Timestamp"

[ingress.sources.open]
verifier = "none"
type_header = "X-Event"
id_pointer = "/id"
"#;

#[derive(Deserialize)]
struct Vectors {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    scheme: String,
    headers: BTreeMap<String, String>,
    body: String,
}

fn vectors() -> Vec<Vector> {
    serde_json::from_str::<Vectors>(include_str!(
        "../../crates/signature/tests/data/signatures.json"
    ))
    .unwrap()
    .vectors
}

fn headers_of(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[tokio::test]
async fn every_verifier_accepts_its_providers_requests_as_exactly_one_event() {
    let server = NatsServer::start();
    let ingress = spawn_ingress(config(&server, SOURCES, &[])).await;

    // (source, headers, body, subject, provider, delivery id, type)
    let mut expected = Vec::new();
    for v in vectors() {
        let source = match (v.scheme.as_str(), v.headers.contains_key("svix-id")) {
            ("standard-webhooks", true) => "v-svix",
            ("standard-webhooks", false) => "v-sw",
            ("github", _) => "v-github",
            ("stripe", _) => "v-stripe",
            ("slack", _) => "v-slack",
            ("shopify", _) => "v-shop",
            (other, _) => panic!("vector for unknown scheme {other}"),
        };
        let (event_type, delivery_id) = match v.scheme.as_str() {
            "standard-webhooks" => ("unknown", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            "github" => ("ping", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            "stripe" => ("payment_intent.succeeded", "evt_1"),
            "slack" => (
                "slash_command",
                "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c",
            ),
            "shopify" => ("orders.create", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
            _ => unreachable!(),
        };
        expected.push((
            source.to_owned(),
            headers_of(&v.headers),
            v.body.clone().into_bytes(),
            event_type.to_owned(),
            v.scheme.clone(),
            delivery_id.to_owned(),
        ));
    }

    // Freshly signed, for every scheme including the generic ones.
    let acme = Scheme::Hmac(HmacScheme {
        header: "x-acme-signature".into(),
        prefix: "sha512=".into(),
        encoding: Encoding::Base64,
        algorithm: Algorithm::Sha512,
        payload: PayloadTemplate::parse("{timestamp}.{id}.{body}").unwrap(),
        timestamp_header: Some("x-acme-timestamp".into()),
        extract: Extract {
            id_header: Some("x-acme-delivery".into()),
            ..Extract::default()
        },
    });
    let open = Scheme::None(Extract {
        type_header: Some("x-event".into()),
        ..Extract::default()
    });
    let fresh: Vec<(&str, Scheme, &str, String, &str, &str, &str)> = vec![
        (
            "sw",
            Scheme::StandardWebhooks,
            SW_SECRET,
            r#"{"type":"invoice.paid"}"#.into(),
            "msg_fresh",
            "invoice.paid",
            "invoice.paid",
        ),
        (
            "github",
            Scheme::Github,
            "new-secret",
            r#"{"action":"opened","number":7}"#.into(),
            "gh-fresh",
            "pull_request",
            "pull_request.opened",
        ),
        (
            "stripe",
            Scheme::Stripe,
            "whsec_stripe",
            r#"{"id":"evt_fresh","type":"charge.refunded"}"#.into(),
            "evt_fresh",
            "",
            "charge.refunded",
        ),
        (
            "shop",
            Scheme::Shopify,
            "shpss_fresh",
            r#"{"id":820982911946154508}"#.into(),
            "shop-fresh",
            "orders/cancelled",
            "orders.cancelled",
        ),
        (
            "slack",
            Scheme::Slack,
            "slack-secret",
            r#"{"type":"event_callback","event_id":"Ev1","event":{"type":"app_mention"}}"#.into(),
            "Ev1",
            "",
            "app_mention",
        ),
        (
            "acme",
            acme,
            "acme-secret",
            r#"{"kind":"widget.made"}"#.into(),
            "acme-1",
            "",
            "widget.made",
        ),
        (
            "open",
            open,
            "",
            r#"{"id":"open-1"}"#.into(),
            "open-1",
            "user.created",
            "user.created",
        ),
    ];
    for (source, scheme, secret, body, delivery_id, header_type, event_type) in fresh {
        let headers = sign_as_provider(
            &scheme,
            secret,
            Outgoing {
                body: body.as_bytes(),
                delivery_id,
                event_type: header_type,
                timestamp: now(),
            },
        );
        let provider = scheme.name().to_owned();
        expected.push((
            source.to_owned(),
            headers,
            body.into_bytes(),
            event_type.to_owned(),
            provider,
            delivery_id.to_owned(),
        ));
    }

    let mut ids = Vec::new();
    for (source, headers, body, ..) in &expected {
        let response = ingress.post(source, headers, body.clone()).await;
        let status = response.status();
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{source}: {json}");
        assert_eq!(json["duplicate"], false, "{source}: {json}");
        ids.push(json["id"].as_str().unwrap().to_owned());
    }

    let stored = stored_events(&server.url()).await;
    assert_eq!(stored.len(), expected.len(), "one message per request");
    for ((source, _, body, event_type, provider, delivery_id), (stored, id)) in
        expected.iter().zip(stored.iter().zip(&ids))
    {
        assert_eq!(stored.subject, format!("events.{source}.{event_type}"));
        let e = &stored.event;
        assert_eq!(&e.id, id);
        assert_eq!(&e.source, source);
        assert_eq!(&e.r#type, event_type);
        assert_eq!(&e.provider, provider);
        assert_eq!(&e.delivery_id, delivery_id, "{source}");
        assert_eq!(
            e.payload.as_ref(),
            body.as_slice(),
            "{source}: payload is the body verbatim"
        );
        assert!(e.received_at.is_some());
        for signature_header in [
            "x-hub-signature-256",
            "stripe-signature",
            "webhook-signature",
            "svix-signature",
            "x-slack-signature",
            "x-shopify-hmac-sha256",
            "x-acme-signature",
        ] {
            assert!(
                !e.headers.contains_key(signature_header),
                "{source} kept {signature_header}"
            );
        }
        let msg_id = stored.headers.get("Nats-Msg-Id").unwrap().as_str();
        if delivery_id.is_empty() {
            assert_eq!(msg_id, id);
        } else {
            assert_eq!(msg_id, format!("{source}:{delivery_id}"));
            let expected_id =
                uuid::Uuid::new_v5(&hookbus_ingress::EVENT_ID_NAMESPACE, msg_id.as_bytes())
                    .to_string();
            assert_eq!(id, &expected_id, "event id is deterministic");
        }
        assert_eq!(
            stored.headers.get("Hookbus-Type").unwrap().as_str(),
            event_type
        );
        assert!(
            stored.headers.get("traceparent").is_some(),
            "trace context on every event"
        );
    }
    assert_eq!(
        stored[0]
            .event
            .headers
            .get("webhook-id")
            .map(String::as_str),
        Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
        "non-secret headers are kept"
    );
    ingress.stop().await;
}

#[tokio::test]
async fn a_repeated_delivery_is_answered_as_a_duplicate_and_stored_once() {
    let server = NatsServer::start();
    let ingress = spawn_ingress(config(&server, SOURCES, &[])).await;
    let body = br#"{"action":"closed"}"#;
    let headers = sign_as_provider(
        &Scheme::Github,
        "old-secret",
        Outgoing {
            body,
            delivery_id: "same-delivery",
            event_type: "issues",
            timestamp: now(),
        },
    );
    let first: serde_json::Value = ingress
        .post("github", &headers, body.to_vec())
        .await
        .json()
        .await
        .unwrap();
    let second: serde_json::Value = ingress
        .post("github", &headers, body.to_vec())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["id"], second["id"]);
    assert_eq!(stored_events(&server.url()).await.len(), 1);
}

#[tokio::test]
async fn an_incoming_traceparent_continues_into_the_event() {
    let server = NatsServer::start();
    let ingress = spawn_ingress(config(&server, SOURCES, &[])).await;
    let mut headers = sign_as_provider(
        &Scheme::Github,
        "new-secret",
        Outgoing {
            body: b"{}",
            delivery_id: "traced",
            event_type: "push",
            timestamp: 0,
        },
    );
    headers.push((
        "traceparent".into(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    ));
    assert_eq!(
        ingress
            .post("github", &headers, b"{}".to_vec())
            .await
            .status(),
        200
    );
    let stored = stored_events(&server.url()).await;
    let traceparent = stored[0]
        .headers
        .get("traceparent")
        .unwrap()
        .as_str()
        .to_owned();
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{traceparent}"
    );
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "the event's parent is the ingress's own span: {traceparent}"
    );
}

/// (description, source, headers, body, status, code)
type Case = (
    &'static str,
    &'static str,
    Vec<(String, String)>,
    Vec<u8>,
    u16,
    &'static str,
);

#[tokio::test]
async fn bad_requests_get_their_status_and_code_and_publish_nothing() {
    let server = NatsServer::start_with_config("max_payload: 2MB");
    let ingress = spawn_ingress(config(
        &server,
        SOURCES,
        &[("HOOKBUS_INGRESS__BODY_LIMIT", "64KiB")],
    ))
    .await;
    let body = br#"{"id":"evt_x","type":"charge.failed"}"#.to_vec();
    let sign = |secret: &str, ts: i64| {
        sign_as_provider(
            &Scheme::Stripe,
            secret,
            Outgoing {
                body: &body,
                delivery_id: "",
                event_type: "",
                timestamp: ts,
            },
        )
    };
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let sig_only = |value: &str| vec![("stripe-signature".to_owned(), value.to_owned())];
    let github_body = b"{}".to_vec();
    let github = sign_as_provider(
        &Scheme::Github,
        "old-secret",
        Outgoing {
            body: &github_body,
            delivery_id: "g",
            event_type: "push",
            timestamp: 0,
        },
    );
    let big = vec![b'x'; 64 * 1024 + 1];

    let cases: Vec<Case> = vec![
        (
            "tampered body",
            "stripe",
            sign("whsec_stripe", now()),
            tampered,
            401,
            "invalid_signature",
        ),
        (
            "wrong secret",
            "stripe",
            sign("whsec_other", now()),
            body.clone(),
            401,
            "invalid_signature",
        ),
        (
            "missing signature",
            "stripe",
            vec![],
            body.clone(),
            401,
            "invalid_signature",
        ),
        (
            "malformed signature",
            "stripe",
            sig_only("v1=zz"),
            body.clone(),
            401,
            "invalid_signature",
        ),
        (
            "310 s old",
            "stripe",
            sign("whsec_stripe", now() - 310),
            body.clone(),
            401,
            "timestamp_out_of_tolerance",
        ),
        (
            "310 s ahead",
            "stripe",
            sign("whsec_stripe", now() + 310),
            body.clone(),
            401,
            "timestamp_out_of_tolerance",
        ),
        (
            "unreadable JSON",
            "stripe",
            sign_as_provider(
                &Scheme::Stripe,
                "whsec_stripe",
                Outgoing {
                    body: b"nope",
                    delivery_id: "",
                    event_type: "",
                    timestamp: now(),
                },
            ),
            b"nope".to_vec(),
            400,
            "invalid_body",
        ),
        (
            "unknown source",
            "nobody",
            github.clone(),
            github_body.clone(),
            404,
            "unknown_source",
        ),
        (
            "over the limit",
            "github",
            github.clone(),
            big.clone(),
            413,
            "payload_too_large",
        ),
        (
            "over the limit, unknown source",
            "nobody",
            vec![],
            big,
            413,
            "payload_too_large",
        ),
    ];
    for (what, source, headers, body, status, code) in cases {
        let response = ingress.post(source, &headers, body).await;
        assert_eq!(response.status().as_u16(), status, "{what}");
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["error"]["code"], code, "{what}: {json}");
        assert!(
            !json["error"]["message"].as_str().unwrap().is_empty(),
            "{what}"
        );
    }

    // Chunked (no Content-Length) and over the limit: cut off while reading.
    let chunks =
        futures_util::stream::iter((0..80).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 1024])));
    let response = ingress
        .post("github", &github, reqwest::Body::wrap_stream(chunks))
        .await;
    assert_eq!(response.status(), 413);

    let mut js_stream =
        async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap())
            .get_stream("EVENTS")
            .await
            .unwrap();
    assert_eq!(
        js_stream.info().await.unwrap().state.messages,
        0,
        "no refused request publishes"
    );

    // During a rotation both secrets verify.
    for secret in ["old-secret", "new-secret"] {
        let headers = sign_as_provider(
            &Scheme::Github,
            secret,
            Outgoing {
                body: b"{}",
                delivery_id: secret,
                event_type: "push",
                timestamp: 0,
            },
        );
        assert_eq!(
            ingress
                .post("github", &headers, b"{}".to_vec())
                .await
                .status(),
            200,
            "{secret}"
        );
    }
}

#[tokio::test]
async fn slack_challenge_is_answered_and_github_ping_accepted() {
    let server = NatsServer::start();
    let ingress = spawn_ingress(config(&server, SOURCES, &[])).await;
    let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let headers = sign_as_provider(
        &Scheme::Slack,
        "slack-secret",
        Outgoing {
            body,
            delivery_id: "",
            event_type: "",
            timestamp: now(),
        },
    );
    let response = ingress.post("slack", &headers, body.to_vec()).await;
    assert_eq!(response.status(), 200);
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        json["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    assert!(
        stored_events(&server.url()).await.is_empty(),
        "a challenge is not an event"
    );

    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let headers = sign_as_provider(
        &Scheme::Github,
        "new-secret",
        Outgoing {
            body: ping,
            delivery_id: "ping-1",
            event_type: "ping",
            timestamp: 0,
        },
    );
    assert_eq!(
        ingress
            .post("github", &headers, ping.to_vec())
            .await
            .status(),
        200
    );
    assert_eq!(
        stored_events(&server.url()).await[0].subject,
        "events.github.ping"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = NatsServer::start();
    let ingress = spawn_ingress(config(&server, SOURCES, &[])).await;
    let get = |path: &str| ingress.http.get(ingress.url(path)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let headers = sign_as_provider(
        &Scheme::Github,
        "new-secret",
        Outgoing {
            body: b"{}",
            delivery_id: "m-1",
            event_type: "push",
            timestamp: 0,
        },
    );
    ingress.post("github", &headers, b"{}".to_vec()).await;
    ingress.post("github", &[], b"{}".to_vec()).await;
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"hookbus_ingress_requests_total{source="github",outcome="accepted"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"hookbus_ingress_verification_failures_total{source="github",reason="missing_header"} 1"#), "{metrics}");
    assert!(
        metrics.contains("hookbus_ingress_publish_seconds_count 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn configuration_errors_name_the_key() {
    let server = NatsServer::start();
    let cases = [
        ("[ingress]\nbody_limt = 5\n", "ingress.body_limt"),
        (
            "[ingress]\npublish_timeout = \"soonish\"\n",
            "ingress.publish_timeout",
        ),
        (
            "[ingress.sources.gh]\nverifier = \"github\"\n",
            "ingress.sources.gh.secrets",
        ),
        (
            "[ingress.sources.gh]\nverifier = \"gitlab\"\nsecrets = [\"x\"]\n",
            "ingress.sources.gh.verifier",
        ),
        (
            "[ingress.sources.Bad]\nverifier = \"github\"\nsecrets = [\"x\"]\n",
            "ingress.sources.Bad",
        ),
        (
            "[ingress.sources.x]\nverifier = \"hmac\"\nsecrets = [\"x\"]\n",
            "ingress.sources.x.hmac",
        ),
    ];
    for (toml, key) in cases {
        let err = try_config(&server, toml, &[]).unwrap_err();
        match &err {
            hookbus_config::ConfigError::Invalid { key: k, .. } => assert_eq!(k, key, "{err}"),
            other => panic!("{toml}: {other}"),
        }
    }
    // The environment overrides the file.
    let config = config(
        &server,
        "[ingress]\npublish_timeout = \"1s\"\n",
        &[("HOOKBUS_INGRESS__PUBLISH_TIMEOUT", "2s")],
    );
    assert_eq!(
        config.service.publish_timeout,
        std::time::Duration::from_secs(2)
    );
    let err = try_config(&server, "", &[("HOOKBUS_INGRESS__MAX_IN_FLIGHT", "many")]).unwrap_err();
    assert!(
        err.to_string().contains("HOOKBUS_INGRESS__MAX_IN_FLIGHT"),
        "{err}"
    );
}

#[tokio::test]
async fn a_body_limit_the_server_cannot_carry_stops_start_up() {
    let server = NatsServer::start_with_config("max_payload: 262144");
    let config = config(
        &server,
        SOURCES,
        &[("HOOKBUS_INGRESS__BODY_LIMIT", "512KiB")],
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = hookbus_ingress::run(config, listener, Default::default())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("max_payload") && message.contains("ingress.body_limit"),
        "{message}"
    );
}

#[tokio::test]
async fn a_rate_limited_source_answers_429_and_stores_only_what_it_accepted() {
    let server = NatsServer::start();
    let toml =
        "[ingress.sources.limited]\nverifier = \"github\"\nsecrets = [\"s\"]\nrate_limit = 3\n";
    let ingress = spawn_ingress(config(&server, toml, &[])).await;
    let mut accepted = 0;
    let mut limited = 0;
    for i in 0..10 {
        let id = format!("burst-{i}");
        let headers = sign_as_provider(
            &Scheme::Github,
            "s",
            Outgoing {
                body: b"{}",
                delivery_id: &id,
                event_type: "push",
                timestamp: 0,
            },
        );
        let response = ingress.post("limited", &headers, b"{}".to_vec()).await;
        match response.status().as_u16() {
            200 => accepted += 1,
            429 => {
                assert_eq!(response.headers()["retry-after"], "1");
                let json: serde_json::Value = response.json().await.unwrap();
                assert_eq!(json["error"]["code"], "rate_limited");
                limited += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        accepted >= 3 && limited >= 1,
        "accepted {accepted}, limited {limited}"
    );
    assert_eq!(stored_events(&server.url()).await.len(), accepted);
}
