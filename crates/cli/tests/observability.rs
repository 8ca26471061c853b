//! What an operator sees, checked against the service processes.
//!
//! - One trace: a real OTLP/HTTP receiver decodes the protobuf the services export. One webhook
//!   through the ingress, a consumer (analytics) and the egress gives spans of one trace id with
//!   the right parent links, and the subscriber's request carries that trace in `traceparent`.
//! - Metrics: `/metrics` of every service, read with a Prometheus text-format parser, has each
//!   metric `docs/operations.md` lists, and each moves when events flow.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Stack, wait_for};
use hookbus_testkit::{NatsServer, SmtpServer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

/// One exported span, as the receiver decoded it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: BTreeMap<String, String>,
}

type Spans = Arc<Mutex<Vec<Span>>>;

fn text_of(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// An OTLP/HTTP receiver on 127.0.0.1 (`POST /v1/traces`, protobuf): its base URL, for
/// `OTEL_EXPORTER_OTLP_ENDPOINT`, and the spans it decoded.
async fn otlp_receiver() -> (String, Spans) {
    let spans = Spans::default();
    let record = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: bytes::Bytes| {
            let record = record.clone();
            async move {
                let request = match ExportTraceServiceRequest::decode(body.clone()) {
                    Ok(request) => request,
                    Err(e) => panic!("undecodable OTLP export of {} bytes: {e}", body.len()),
                };
                let mut record = record.lock().unwrap();
                for resource_spans in request.resource_spans {
                    let resource = resource_spans
                        .resource
                        .map(|r| text_of(&r.attributes))
                        .unwrap_or_default();
                    let service = resource.get("service.name").cloned().unwrap_or_default();
                    for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                        record.push(Span {
                            service: service.clone(),
                            name: span.name.clone(),
                            trace_id: hex::encode(&span.trace_id),
                            span_id: hex::encode(&span.span_id),
                            parent_span_id: hex::encode(&span.parent_span_id),
                            attributes: text_of(&span.attributes),
                        });
                    }
                }
                http::StatusCode::OK
            }
        }),
    );
    (common::serve(app).await, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_webhook_is_one_trace_from_the_ingress_to_the_subscribers_request() {
    let nats = NatsServer::start();
    let logs = tempfile::tempdir().unwrap();
    let compose = common::compose();
    let credentials = common::credentials(&compose);
    let (otlp, spans) = otlp_receiver().await;
    let stack = Stack::start(
        &compose,
        &["ingress", "analytics", "egress"],
        &nats.url(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        logs.path(),
    )
    .await;
    common::wait_for_consumers(&nats.url(), &["analytics", "egress-dispatcher"]).await;
    let http = common::http_client();
    let seen =
        common::subscribe_to_orders(&http, (&stack.url("egress"), &credentials.egress_token)).await;

    let (status, answer) = common::post_shopify(
        (&http, &credentials.shop_secret),
        &stack.url("ingress"),
        "orders/create",
        "wh-trace-1",
        &common::order(1, "ada@example.com", ("SKU-A", 1), "1.00", "1.00"),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{answer}");

    // The subscriber's request carries the trace: 00-<trace id>-<parent span id>-<flags>.
    let headers = wait_for("the order at the subscriber", async || {
        seen.lock().unwrap().first().map(|(h, _)| h.clone())
    })
    .await;
    let traceparent = headers["traceparent"].to_str().unwrap().to_owned();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    let (trace_id, request_parent) = (parts[1].to_owned(), parts[2].to_owned());

    // Every hop exported its spans under that trace id.
    let wanted = [
        ("hookbus-ingress", "webhook"),
        ("hookbus-ingress", "publish"),
        ("hookbus-analytics", "consume"),
        ("hookbus-egress", "consume"),
        ("hookbus-egress", "deliver"),
        ("hookbus-egress", "POST"),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let trace = loop {
        let trace: Vec<Span> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect();
        let complete = wanted.iter().all(|(service, name)| {
            trace
                .iter()
                .any(|s| s.service == *service && s.name == *name)
        });
        if complete {
            break trace;
        }
        if std::time::Instant::now() > deadline {
            let got: Vec<String> = spans
                .lock()
                .unwrap()
                .iter()
                .map(|s| {
                    format!(
                        "{} {} {} {} <- {}",
                        s.service, s.name, s.trace_id, s.span_id, s.parent_span_id
                    )
                })
                .collect();
            let counted = common::get_json(
                &http,
                &format!("{}/v1/stats/events?bucket=hour", stack.url("analytics")),
            )
            .await;
            panic!(
                "not every hop exported a span of trace {trace_id}; the receiver got {got:#?}; analytics: {counted:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let one = |service: &str, name: &str| -> Span {
        let found: Vec<&Span> = trace
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .collect();
        assert_eq!(found.len(), 1, "one {name} span in {service}: {trace:#?}");
        found[0].clone()
    };
    let webhook = one("hookbus-ingress", "webhook");
    let publish = one("hookbus-ingress", "publish");
    let counted = one("hookbus-analytics", "consume");
    let dispatched = one("hookbus-egress", "consume");
    let deliver = one("hookbus-egress", "deliver");
    let request = one("hookbus-egress", "POST");

    // The parent links: request → publish → each consumer; dispatch → task → HTTP request.
    assert_eq!(webhook.parent_span_id, "", "the webhook starts the trace");
    assert_eq!(publish.parent_span_id, webhook.span_id);
    assert_eq!(counted.parent_span_id, publish.span_id);
    assert_eq!(dispatched.parent_span_id, publish.span_id);
    assert_eq!(deliver.parent_span_id, dispatched.span_id);
    assert_eq!(request.parent_span_id, deliver.span_id);
    assert_eq!(
        request_parent, request.span_id,
        "traceparent names the request span"
    );

    // The semantic-convention fields.
    assert_eq!(webhook.attributes["http.request.method"], "POST");
    assert_eq!(webhook.attributes["http.route"], "/webhooks/{source}");
    for span in [&publish, &counted, &dispatched, &deliver] {
        assert_eq!(span.attributes["messaging.system"], "nats", "{span:?}");
    }
    assert_eq!(
        counted.attributes["messaging.consumer.group.name"],
        "analytics"
    );
    assert_eq!(
        dispatched.attributes["messaging.consumer.group.name"],
        "egress-dispatcher"
    );
    assert_eq!(request.attributes["http.request.method"], "POST");
    assert_eq!(request.attributes["http.response.status_code"], "200");
    assert_eq!(request.attributes["server.address"], "127.0.0.1");
    stack.stop().await;
}

// ------------------------------------------------------------------------------------- metrics

/// The samples of a `/metrics` page: (name, labels) → value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

async fn scrape(http: &reqwest::Client, base: &str) -> Samples {
    let text = hookbus_testkit::get_text(http, &format!("{base}/metrics")).await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("{base}/metrics does not parse: {e}\n{text}"));
    let mut samples = Samples::new();
    for sample in scrape.samples {
        let labels: BTreeMap<String, String> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut add = |suffix: &str, value: f64| {
            samples.insert(
                (format!("{}{suffix}", sample.metric), labels.clone()),
                value,
            );
        };
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => add("", v),
            prometheus_parse::Value::Histogram(buckets) => add("_buckets", buckets.len() as f64),
            prometheus_parse::Value::Summary(_) => {}
        }
    }
    samples
}

/// Label pairs that a sample must have.
type Labels<'a> = &'a [(&'a str, &'a str)];

/// The sum of `name`'s samples whose labels include `labels`.
fn total(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|((n, l), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_its_metrics_and_they_move_when_events_flow() {
    let nats = NatsServer::start();
    let smtp = SmtpServer::start();
    let logs = tempfile::tempdir().unwrap();
    let compose = common::compose();
    let credentials = common::credentials(&compose);
    // A chat webhook that always fails: notifications retries it once, then dead-letters.
    let failing_chat = common::serve(
        axum::Router::new()
            .fallback(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "down") }),
    )
    .await;
    let smtp_url = smtp.url();
    let stack = Stack::start(
        &compose,
        common::SERVICES,
        &nats.url(),
        &[
            ("HOOKBUS_NOTIFICATIONS__SMTP__URL", &smtp_url),
            ("HOOKBUS_NOTIFICATIONS__MAX_DELIVERIES", "2"),
            ("HOOKBUS_NOTIFICATIONS__RETRY_BACKOFF", r#"["100ms"]"#),
            (
                "HOOKBUS_NOTIFICATIONS__RULES__CHAT_ORDERS__SUBJECTS",
                r#"["events.*.orders.create"]"#,
            ),
            (
                "HOOKBUS_NOTIFICATIONS__RULES__CHAT_ORDERS__CHANNEL",
                "webhook",
            ),
            (
                "HOOKBUS_NOTIFICATIONS__RULES__CHAT_ORDERS__URL",
                &failing_chat,
            ),
            (
                "HOOKBUS_NOTIFICATIONS__RULES__CHAT_ORDERS__TEMPLATE",
                "order {{ order.id }}",
            ),
        ],
        logs.path(),
    )
    .await;
    common::wait_for_consumers(&nats.url(), common::CONSUMERS).await;
    let http = common::http_client();
    let services = [
        "ingress",
        "inventory",
        "notifications",
        "analytics",
        "egress",
    ];
    let mut before = BTreeMap::new();
    for service in services {
        before.insert(service, scrape(&http, &stack.url(service)).await);
    }

    // A subscriber that takes 2 s per request, one at a time: tasks wait for it.
    let slow = {
        let app = axum::Router::new().fallback(|| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            "ok"
        });
        common::serve(app).await
    };
    let created: serde_json::Value = hookbus_testkit::json_of(
        http.post(format!("{}/v1/endpoints", stack.url("egress")))
            .bearer_auth(&credentials.egress_token)
            .json(&json!({"url": slow, "event_types": ["orders.*"], "max_in_flight": 1})),
    )
    .await;
    let endpoint = created["id"].as_str().expect("an endpoint id").to_owned();
    common::set_stock(
        &http,
        (&stack.url("inventory"), &credentials.inventory_token),
        1,
        100,
    )
    .await;

    // Orders flow; one more is badly signed; one has a line the inventory cannot read.
    for id in 1..=4 {
        common::send_until_stored(
            (&http, &credentials.shop_secret),
            &stack.url("ingress"),
            id,
            1,
        )
        .await;
    }
    let (status, _) = common::post_shopify(
        (&http, "not the secret"),
        &stack.url("ingress"),
        "orders/create",
        "wh-forged",
        &common::order(99, "eve@example.com", ("SKU-0", 1), "1.00", "1.00"),
    )
    .await
    .unwrap();
    assert_eq!(status, 401);
    let (status, _) = common::post_shopify(
        (&http, &credentials.shop_secret),
        &stack.url("ingress"),
        "orders/create",
        "wh-unreadable",
        &json!({"id": 98, "currency": "EUR", "line_items": [{"sku": "SKU-0", "quantity": "many"}]}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);

    // Tasks wait for the slow endpoint, and the egress reports them (every 5 s).
    wait_for("tasks waiting for the slow endpoint", async || {
        let samples = scrape(&http, &stack.url("egress")).await;
        let waiting = total(
            &samples,
            "hookbus_egress_tasks_waiting",
            &[("endpoint", &endpoint)],
        ) + total(
            &samples,
            "hookbus_egress_tasks_in_flight",
            &[("endpoint", &endpoint)],
        );
        (waiting > 0.0).then_some(())
    })
    .await;

    // Each named metric is there and has moved.
    let moved: &[(&str, &str, Labels)] = &[
        (
            "ingress",
            "hookbus_ingress_requests_total",
            &[("source", "shop"), ("outcome", "accepted")],
        ),
        (
            "ingress",
            "hookbus_ingress_verification_failures_total",
            &[("source", "shop")],
        ),
        ("ingress", "hookbus_ingress_publish_seconds_count", &[]),
        (
            "inventory",
            "hookbus_consumer_processed_total",
            &[("consumer", "inventory")],
        ),
        (
            "inventory",
            "hookbus_consumer_dead_lettered_total",
            &[("consumer", "inventory")],
        ),
        (
            "inventory",
            "hookbus_consumer_handler_seconds_count",
            &[("consumer", "inventory")],
        ),
        (
            "notifications",
            "hookbus_consumer_retried_total",
            &[("consumer", "notifications")],
        ),
        (
            "notifications",
            "hookbus_consumer_dead_lettered_total",
            &[("consumer", "notifications")],
        ),
        ("notifications", "hookbus_notifications_sent_total", &[]),
        (
            "analytics",
            "hookbus_consumer_processed_total",
            &[("consumer", "analytics")],
        ),
        ("analytics", "hookbus_analytics_events_counted_total", &[]),
        (
            "egress",
            "hookbus_consumer_processed_total",
            &[("consumer", "egress-dispatcher")],
        ),
        (
            "egress",
            "hookbus_egress_attempts_total",
            &[("outcome", "delivered")],
        ),
        (
            "egress",
            "hookbus_egress_delivery_latency_seconds_count",
            &[],
        ),
    ];
    for (service, name, labels) in moved {
        let now = wait_for(
            &format!("{service}: {name} {labels:?} to move"),
            async || {
                let samples = scrape(&http, &stack.url(service)).await;
                let now = total(&samples, name, labels);
                (now > total(&before[service], name, labels)).then_some(now)
            },
        )
        .await;
        assert!(now > 0.0);
    }

    // Present even when they have not moved: disabled endpoints, and the consumers' backlog.
    let egress = scrape(&http, &stack.url("egress")).await;
    assert!(
        egress
            .keys()
            .any(|(n, _)| n == "hookbus_egress_endpoints_disabled")
    );
    for service in ["inventory", "notifications", "analytics", "egress"] {
        let samples = scrape(&http, &stack.url(service)).await;
        for name in ["hookbus_consumer_pending", "hookbus_consumer_ack_pending"] {
            assert!(
                samples.keys().any(|(n, _)| n == name),
                "{service} has no {name}"
            );
        }
    }
    smtp.wait_for(4, Duration::from_secs(30)).unwrap();
    stack.stop().await;
}
