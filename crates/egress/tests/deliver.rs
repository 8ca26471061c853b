//! One delivery attempt against real HTTP receivers on 127.0.0.1: the signed request, and the
//! meaning of each kind of answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hookbus_egress::deliver::{Attempt, Target, Verdict, attempt, body_of};
use hookbus_egress::{AddressPolicy, SystemLookup, http_client};
use hookbus_proto::Registry;
use hookbus_proto::inventory::v1::LowStock;
use hookbus_proto::v1::Event;
use hookbus_signature::SigningSecret;
use prost::Message;

type Seen = Arc<Mutex<Vec<(http::HeaderMap, Bytes)>>>;

/// A receiver that records each request and answers `status` with `headers`, after `delay`.
async fn receiver(status: u16, headers: &[(&str, &str)], delay: Duration) -> (reqwest::Url, Seen) {
    let seen: Seen = Arc::default();
    let (record, headers) = (
        seen.clone(),
        headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>(),
    );
    let app = axum::Router::new().fallback(move |request_headers: http::HeaderMap, body: Bytes| {
        let (record, headers) = (record.clone(), headers.clone());
        async move {
            record.lock().unwrap().push((request_headers, body));
            tokio::time::sleep(delay).await;
            let mut response = http::Response::builder().status(status);
            for (k, v) in headers {
                response = response.header(k, v);
            }
            response
                .body(axum::body::Body::from("x".repeat(5000)))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (reqwest::Url::parse(&url).unwrap(), seen)
}

/// The trace a task carries: the request continues it.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn caller_trace() -> hookbus_telemetry::TraceContext {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{TRACE_ID}-00f067aa0ba902b7-01").as_str(),
    );
    hookbus_telemetry::context_from_nats(&headers)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn low_stock() -> Event {
    let message = LowStock {
        sku: "SKU-1".into(),
        level: 3,
        threshold: 5,
        cause_event_id: "order-1".into(),
    };
    Event {
        id: "0193a0c4-7c1e-7000-8000-000000000001".into(),
        source: "inventory".into(),
        r#type: "stock.low".into(),
        content_type: hookbus_proto::content_type_for::<LowStock>(),
        payload: message.encode_to_vec().into(),
        ..Event::default()
    }
}

async fn send(url: &reqwest::Url, secrets: &[SigningSecret], event: &Event) -> Attempt {
    send_with(
        url,
        secrets,
        event,
        &BTreeMap::new(),
        Duration::from_secs(5),
    )
    .await
}

async fn send_with(
    url: &reqwest::Url,
    secrets: &[SigningSecret],
    event: &Event,
    headers: &BTreeMap<String, String>,
    timeout: Duration,
) -> Attempt {
    let policy = AddressPolicy {
        allow_private_networks: true,
        allowed_subnets: Vec::new(),
    };
    let client = http_client(policy.clone(), Arc::new(SystemLookup), timeout).unwrap();
    let (body, content_type) = body_of(event, &Registry::default()).unwrap();
    attempt(
        &client,
        &policy,
        Target {
            url,
            secrets,
            headers,
            trace: &caller_trace(),
        },
        event,
        (&body, &content_type),
        now(),
    )
    .await
}

#[tokio::test]
async fn a_typed_event_arrives_as_json_signed_with_every_active_secret() {
    let (url, seen) = receiver(204, &[], Duration::ZERO).await;
    let (new, old) = (
        SigningSecret::from_key(vec![7; 32]),
        SigningSecret::from_key(vec![9; 24]),
    );
    let event = low_stock();
    let headers = BTreeMap::from([
        ("x-tenant".to_owned(), "acme".to_owned()),
        ("webhook-signature".to_owned(), "v1,forged".to_owned()),
    ]);
    let result = send_with(
        &url,
        &[new.clone(), old.clone()],
        &event,
        &headers,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(result.verdict, Verdict::Delivered);
    assert_eq!(result.status, Some(204));

    let (headers, body) = seen.lock().unwrap()[0].clone();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["sku"], "SKU-1");
    assert_eq!(
        json["threshold"], "5",
        "proto3 JSON: 64-bit integers are strings"
    );
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["webhook-id"], event.id.as_str());
    assert_eq!(headers["hookbus-event-type"], "stock.low");
    assert_eq!(headers["x-tenant"], "acme");
    let traceparent = headers["traceparent"].to_str().unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-"))
            && !traceparent.contains("00f067aa0ba902b7"),
        "the request continues the task's trace in a span of its own: {traceparent}"
    );
    assert!(
        headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("hookbus/")
    );
    let signatures = headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert!(
        !signatures.contains("forged"),
        "an endpoint header cannot replace the signature"
    );
    // The independent verifier accepts the request with each secret.
    for secret in [new, old] {
        standardwebhooks::Webhook::new(&secret.expose())
            .unwrap()
            .verify(&body, &headers)
            .unwrap();
    }
}

#[tokio::test]
async fn a_json_event_arrives_byte_for_byte_with_a_fresh_timestamp_each_attempt() {
    let (url, seen) = receiver(200, &[], Duration::ZERO).await;
    let secret = SigningSecret::from_key(vec![1; 32]);
    let event = Event {
        id: "evt-json".into(),
        r#type: "order.created".into(),
        content_type: "application/json".into(),
        payload: Bytes::from_static(br#"{"a": 1,  "b":[2]}"#),
        ..Event::default()
    };
    send(&url, std::slice::from_ref(&secret), &event).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send(&url, std::slice::from_ref(&secret), &event).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].1, event.payload);
    assert_eq!(
        seen[0].0["webhook-id"], seen[1].0["webhook-id"],
        "same id on a retry"
    );
    assert_ne!(
        seen[0].0["webhook-timestamp"], seen[1].0["webhook-timestamp"],
        "signed afresh"
    );
    for (headers, body) in &seen {
        standardwebhooks::Webhook::new(&secret.expose())
            .unwrap()
            .verify(body, headers)
            .unwrap();
    }
}

/// (status, response headers, what it means)
type Case = (u16, &'static [(&'static str, &'static str)], Verdict);

#[tokio::test]
async fn each_kind_of_answer_means_what_the_design_says() {
    let secret = [SigningSecret::from_key(vec![3; 32])];
    let event = low_stock();
    let cases: [Case; 7] = [
        (500, &[], Verdict::Retry { after: None }),
        (404, &[], Verdict::Retry { after: None }),
        (
            302,
            &[("location", "http://127.0.0.1:1/")],
            Verdict::Retry { after: None },
        ),
        (410, &[], Verdict::Disable),
        (
            429,
            &[("retry-after", "7")],
            Verdict::Retry {
                after: Some(Duration::from_secs(7)),
            },
        ),
        (503, &[], Verdict::Retry { after: None }),
        (201, &[], Verdict::Delivered),
    ];
    for (status, headers, verdict) in cases {
        let (url, _) = receiver(status, headers, Duration::ZERO).await;
        let result = send(&url, &secret, &event).await;
        assert_eq!(result.verdict, verdict, "{status}");
        assert_eq!(result.status, Some(status));
        assert_eq!(
            result.response_body.len(),
            1024,
            "the body is kept, truncated"
        );
    }
    // Retry-After as an HTTP date, about a minute ahead.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
    let (url, _) = receiver(503, &[("retry-after", date.as_str())], Duration::ZERO).await;
    match send(&url, &secret, &event).await.verdict {
        Verdict::Retry { after: Some(after) } => {
            assert!((55..=60).contains(&after.as_secs()), "{after:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_timeout_a_dead_port_and_a_refused_address_are_failures_that_say_why() {
    let secret = [SigningSecret::from_key(vec![3; 32])];
    let event = low_stock();
    let (slow, _) = receiver(200, &[], Duration::from_secs(3)).await;
    let result = send_with(
        &slow,
        &secret,
        &event,
        &BTreeMap::new(),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(result.verdict, Verdict::Retry { after: None });
    assert_eq!(result.error.as_deref(), Some("timed out"));

    let dead = reqwest::Url::parse(&format!(
        "http://127.0.0.1:{}/hook",
        hookbus_testkit::free_port()
    ))
    .unwrap();
    let result = send(&dead, &secret, &event).await;
    assert!(
        result
            .error
            .as_deref()
            .unwrap()
            .starts_with("cannot connect"),
        "{result:?}"
    );

    // With the default policy, a literal loopback URL is refused before sending.
    let (url, seen) = receiver(200, &[], Duration::ZERO).await;
    let policy = AddressPolicy::default();
    let client = http_client(
        policy.clone(),
        Arc::new(SystemLookup),
        Duration::from_secs(5),
    )
    .unwrap();
    let (body, content_type) = body_of(&event, &Registry::default()).unwrap();
    let result = attempt(
        &client,
        &policy,
        Target {
            url: &url,
            secrets: &secret,
            headers: &BTreeMap::new(),
            trace: &Default::default(),
        },
        &event,
        (&body, &content_type),
        now(),
    )
    .await;
    assert_eq!(result.verdict, Verdict::Retry { after: None });
    assert!(
        result.error.as_deref().unwrap().contains("loopback"),
        "{result:?}"
    );
    assert!(seen.lock().unwrap().is_empty());
}
