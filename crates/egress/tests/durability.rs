//! Nothing acknowledged is lost: the egress killed with SIGKILL in the middle of 2,000
//! deliveries and started again, and nats-server restarted under a running egress.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Egress, KEY, Receiver, Reply, TOKEN};
use hookbus_proto::v1::Event;
use serde_json::json;

/// Publishes `n` JSON events on `events.api.order.created`, as `POST /v1/messages` would.
async fn publish(nats_url: &str, n: usize) -> Vec<String> {
    use futures_util::StreamExt;
    let client = async_nats::connect(nats_url).await.unwrap();
    let publisher = hookbus_bus::Publisher::new(client, 256);
    futures_util::stream::iter(0..n)
        .map(|i| {
            let publisher = publisher.clone();
            async move {
                let id = uuid::Uuid::now_v7().to_string();
                let event = Event {
                    id: id.clone(),
                    source: "api".into(),
                    r#type: "order.created".into(),
                    content_type: "application/json".into(),
                    payload: serde_json::to_vec(&json!({"i": i})).unwrap().into(),
                    ..Default::default()
                };
                publisher
                    .publish_event(
                        "events.api.order.created".into(),
                        &event,
                        &id,
                        tokio::time::Instant::now() + Duration::from_secs(10),
                        &Default::default(),
                    )
                    .await
                    .unwrap();
                id
            }
        })
        .buffer_unordered(64)
        .collect()
        .await
}

/// Every id arrived, at least once, each time with its own body.
fn check_arrivals(receiver: &Receiver, ids: &[String]) -> usize {
    let hits = receiver.hits();
    let mut bodies: HashMap<String, serde_json::Value> = HashMap::new();
    for hit in &hits {
        let body = hit.json();
        if let Some(earlier) = bodies.insert(hit.id(), body.clone()) {
            assert_eq!(earlier, body, "a repeat of {} is the same event", hit.id());
        }
    }
    let wanted: HashSet<&String> = ids.iter().collect();
    let got: HashSet<&String> = bodies.keys().collect();
    assert_eq!(got, wanted, "every event arrives, and nothing else");
    hits.len() - ids.len()
}

fn spawn_egress(nats_url: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hookbus-egress"))
        .env("NATS_URL", nats_url)
        .env("HOOKBUS_EGRESS__LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOKBUS_EGRESS__API_TOKEN", TOKEN)
        .env("HOOKBUS_EGRESS__ENCRYPTION_KEY", KEY)
        .env("HOOKBUS_EGRESS__ALLOW_PRIVATE_NETWORKS", "true")
        .env("HOOKBUS_EGRESS__REQUEST_TIMEOUT", "2s")
        .env("HOOKBUS_EGRESS__START", "all")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the hookbus-egress binary starts")
}

#[tokio::test]
async fn a_sigkilled_egress_restarted_delivers_every_event_at_least_once() {
    let nats = hookbus_testkit::NatsServer::start();
    let port = hookbus_testkit::free_port();
    let mut process = spawn_egress(&nats.url(), port);
    let egress = Egress {
        base: format!("http://127.0.0.1:{port}"),
        shutdown: Default::default(),
        handle: tokio::spawn(async { Ok(()) }),
        client: common::http(),
    };
    egress.wait_ready().await;
    let receiver = Receiver::start(|_| Reply::status(200).after(Duration::from_millis(2))).await;
    egress.endpoint(json!({"url": receiver.url})).await;
    let ids = publish(&nats.url(), 2000).await;
    receiver.wait_for(300, Duration::from_secs(60)).await;
    process.kill().unwrap(); // SIGKILL
    process.wait().unwrap();
    let at_kill = receiver.count();
    assert!(at_kill < 2000, "killed in the middle ({at_kill} delivered)");

    let mut process = spawn_egress(&nats.url(), port);
    egress.wait_ready().await;
    common::eventually(
        Duration::from_secs(120),
        "every event after the restart",
        || async {
            let got: HashSet<String> = receiver.hits().iter().map(common::Hit::id).collect();
            got.len() >= ids.len()
        },
    )
    .await;
    let repeats = check_arrivals(&receiver, &ids);
    eprintln!("killed after {at_kill} deliveries; {repeats} repeated after the restart");
    process.kill().unwrap();
    process.wait().unwrap();
}

#[tokio::test]
async fn deliveries_resume_after_nats_server_restarts_without_restarting_the_egress() {
    let mut nats = hookbus_testkit::NatsServer::start();
    let mut config = common::settings();
    config.request_timeout = Duration::from_secs(2);
    let egress = Egress::start(&nats.url(), config).await;
    let receiver = Receiver::start(|_| Reply::status(200).after(Duration::from_millis(2))).await;
    egress.endpoint(json!({"url": receiver.url})).await;
    let ids = publish(&nats.url(), 1000).await;
    receiver.wait_for(200, Duration::from_secs(60)).await;
    nats.restart();
    let at_restart = receiver.count();
    common::eventually(
        Duration::from_secs(120),
        "every event after the broker restart",
        || async {
            let got: HashSet<String> = receiver.hits().iter().map(common::Hit::id).collect();
            got.len() >= ids.len()
        },
    )
    .await;
    let repeats = check_arrivals(&receiver, &ids);
    eprintln!("broker restarted after {at_restart} deliveries; {repeats} repeated");
    // And the egress still takes new work.
    let later = egress
        .message("order.created", json!({"late": true}), None)
        .await;
    common::eventually(
        Duration::from_secs(30),
        "a message after the restart",
        || async { receiver.hits().iter().any(|h| h.id() == later) },
    )
    .await;
    egress.stop().await;
}
