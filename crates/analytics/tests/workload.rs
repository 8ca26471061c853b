//! 10,000 events across sources, types and minutes, with duplicates and a restart (redeliveries)
//! mixed in: the counts and revenue the API serves equal what the test computes itself. On SQLite
//! and on the machine's PostgreSQL.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use hookbus_analytics::{AnalyticsConfig, Config};
use hookbus_bus::NatsConfig;
use hookbus_proto::commerce::v1::{LineItem, Money, OrderCreated};
use hookbus_proto::v1::Event;
use hookbus_store::testing::{drop_postgres_database, fresh_postgres_database};
use hookbus_testkit::NatsServer;
use prost::Message;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const EVENTS: usize = 10_000;
const BASE: i64 = 1_790_000_000 - 1_790_000_000 % 3600;

/// A deterministic workload: (subject, event), with duplicates of earlier event ids.
fn workload() -> Vec<(String, Event)> {
    let sources = ["github", "shop", "stripe", "slack"];
    let types = [
        "push",
        "order.created",
        "charge.succeeded",
        "app_mention",
        "issues.opened",
    ];
    let currencies = ["EUR", "JPY", "KWD"];
    let mut seed: u64 = 42;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut out: Vec<(String, Event)> = Vec::with_capacity(EVENTS);
    while out.len() < EVENTS {
        if out.len() > 100 && next(20) == 0 {
            // A duplicate: the same event again (a provider retry published anew).
            let (subject, event) = out[next(out.len() as u64) as usize].clone();
            out.push((subject, event));
            continue;
        }
        let i = out.len();
        let source = sources[next(4) as usize];
        let event_type = types[next(5) as usize];
        let received = BASE + next(3 * 3600) as i64; // three hours, 180 minutes
        let (content_type, payload) = if event_type == "order.created" {
            let currency = currencies[next(3) as usize];
            let order = OrderCreated {
                order_id: format!("o-{i}"),
                line_items: vec![LineItem {
                    sku: "S".into(),
                    quantity: 1,
                    unit_price: None,
                }],
                total: Some(Money {
                    currency: currency.into(),
                    amount_minor: 100 + next(10_000) as i64,
                }),
                ..Default::default()
            };
            ("application/json", serde_json::to_vec(&order).unwrap())
        } else {
            ("application/json", b"{}".to_vec())
        };
        let event = Event {
            id: format!("evt-{i}"),
            source: source.into(),
            r#type: event_type.into(),
            received_at: Some(hookbus_proto::Timestamp {
                seconds: received,
                nanos: 0,
            }),
            content_type: content_type.into(),
            payload: payload.into(),
            ..Event::default()
        };
        out.push((format!("events.{source}.{event_type}"), event));
    }
    out
}

type Counts = BTreeMap<(i64, String, String), i64>;
type Revenue = BTreeMap<(i64, String), (i64, i64)>;

fn expected(workload: &[(String, Event)]) -> (Counts, Revenue) {
    let mut seen = std::collections::HashSet::new();
    let (mut counts, mut revenue) = (Counts::new(), Revenue::new());
    for (_, e) in workload {
        if !seen.insert(e.id.clone()) {
            continue;
        }
        let t = e.received_at.as_ref().unwrap().seconds;
        *counts
            .entry((t - t % 60, e.source.clone(), e.r#type.clone()))
            .or_default() += 1;
        if e.r#type == "order.created" {
            let order: OrderCreated = serde_json::from_slice(&e.payload).unwrap();
            let total = order.total.unwrap();
            let entry = revenue.entry((t - t % 3600, total.currency)).or_default();
            entry.0 += total.amount_minor;
            entry.1 += 1;
        }
    }
    (counts, revenue)
}

async fn start(
    nats: &NatsConfig,
    database_url: &str,
) -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), hookbus_service::ServiceError>>,
) {
    let config = Config {
        nats: nats.clone(),
        telemetry: Default::default(),
        service: AnalyticsConfig {
            database_url: database_url.into(),
            ..AnalyticsConfig::default()
        },
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(hookbus_analytics::run(config, listener, shutdown.clone()));
    (base, shutdown, handle)
}

async fn served(http: &reqwest::Client, base: &str) -> (Counts, Revenue, i64) {
    let events: serde_json::Value =
        hookbus_testkit::get_json(http, &format!("{base}/v1/stats/events?bucket=minute")).await;
    let mut counts = Counts::new();
    let mut total = 0;
    for item in events["items"].as_array().unwrap() {
        let count = item["count"].as_i64().unwrap();
        total += count;
        counts.insert(
            (
                item["bucket"].as_i64().unwrap(),
                item["source"].as_str().unwrap().into(),
                item["type"].as_str().unwrap().into(),
            ),
            count,
        );
    }
    let revenue_json: serde_json::Value =
        hookbus_testkit::get_json(http, &format!("{base}/v1/stats/revenue")).await;
    let mut revenue = Revenue::new();
    for item in revenue_json["items"].as_array().unwrap() {
        revenue.insert(
            (
                item["hour"].as_i64().unwrap(),
                item["currency"].as_str().unwrap().into(),
            ),
            (
                item["amount_minor"].as_i64().unwrap(),
                item["orders"].as_i64().unwrap(),
            ),
        );
    }
    (counts, revenue, total)
}

async fn run_workload(database_url: &str) {
    let server = NatsServer::start();
    let nats = NatsConfig {
        url: server.url(),
        ..NatsConfig::default()
    };
    let client = hookbus_bus::connect(&nats, "test").await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    hookbus_bus::ensure_events_stream(&js, &Default::default())
        .await
        .unwrap();
    let workload = workload();
    let (want_counts, want_revenue) = expected(&workload);
    let unique: i64 = want_counts.values().sum();
    assert!(unique < EVENTS as i64, "the workload has duplicates");

    // Publish everything, each message with its own message id, up to 500 PubAcks in flight (an
    // ack future holds its in-flight slot until awaited).
    let mut acks = futures_util::stream::FuturesUnordered::new();
    for (n, (subject, event)) in workload.iter().enumerate() {
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(event.encode_to_vec().into())
            .message_id(format!("m-{n}"));
        acks.push(
            js.send_publish(subject.clone(), message)
                .await
                .unwrap()
                .into_future(),
        );
        while acks.len() >= 500 {
            acks.next().await.unwrap().unwrap();
        }
    }
    while let Some(ack) = acks.next().await {
        ack.unwrap();
    }

    // Count with a restart in the middle: what was in flight is NAK'd and delivered again.
    let http = http_client();
    let (base, shutdown, handle) = start(&nats, database_url).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = http.get(format!("{base}/v1/stats/events")).send().await
            && let Ok(json) = r.json::<serde_json::Value>().await
            && json["items"].as_array().is_some_and(|a| {
                a.iter()
                    .map(|i| i["count"].as_i64().unwrap_or(0))
                    .sum::<i64>()
                    > unique / 3
            })
        {
            break;
        }
        assert!(Instant::now() < deadline, "analytics is not counting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    let (base, shutdown, handle) = start(&nats, database_url).await;
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            let (_, _, total) = served(&http, &base).await;
            if total == unique {
                break;
            }
            assert!(
                total < unique,
                "counted {total} of {unique} unique events: more than there are"
            );
        }
        assert!(
            Instant::now() < deadline,
            "analytics did not finish counting"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (counts, revenue, _) = served(&http, &base).await;
    assert_eq!(counts, want_counts);
    assert_eq!(revenue, want_revenue);

    // Hourly buckets are the sums of the minutes.
    let hours: serde_json::Value = hookbus_testkit::get_json(
        &http,
        &format!(
            "{base}/v1/stats/events?bucket=hour&from={BASE}&to={}",
            BASE + 3600
        ),
    )
    .await;
    let first_hour: i64 = hours["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["count"].as_i64().unwrap())
        .sum();
    let want_first_hour: i64 = want_counts
        .iter()
        .filter(|((m, _, _), _)| *m < BASE + 3600)
        .map(|(_, c)| c)
        .sum();
    assert_eq!(first_hour, want_first_hour);
    assert_eq!(
        http.get(format!("{base}/v1/stats/events?bucket=week"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        http.get(format!("{base}/v1/stats/events?from=yesterday"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_workload_is_counted_exactly_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    run_workload(&format!(
        "sqlite://{}",
        dir.path().join("analytics.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_workload_is_counted_exactly_once_on_postgres() {
    let url = fresh_postgres_database()
        .await
        .expect("the machine's PostgreSQL");
    run_workload(&url).await;
    drop_postgres_database(&url).await.unwrap();
}

/// An HTTP client for the test (reqwest needs the process's rustls provider first).
fn http_client() -> reqwest::Client {
    hookbus_service::install_crypto_provider();
    reqwest::Client::new()
}
