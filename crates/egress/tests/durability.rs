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
    spawn_egress_with(nats_url, port, &[])
}

fn spawn_egress_with(nats_url: &str, port: u16, settings: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hookbus-egress"))
        .envs(settings.iter().copied())
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

/// A child process killed (SIGKILL) when dropped, so a failing test leaves none behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An egress replica started as its own process, reached through its API.
fn api_of(port: u16) -> Egress {
    Egress {
        base: format!("http://127.0.0.1:{port}"),
        shutdown: Default::default(),
        handle: tokio::spawn(async { Ok(()) }),
        client: common::http(),
    }
}

/// Two replicas share the partitions; one is killed with SIGKILL in the middle of 5,000
/// deliveries to 16 endpoints. The survivor takes over its partitions, every event arrives at
/// least once under its one `webhook-id`, and each receiver sees its endpoint's `max_in_flight`
/// and `rate_limit` hold throughout: the dead replica's requests ended with it, seconds before
/// the survivor's pin, and its unacked tasks come back only after their ack wait.
#[tokio::test]
async fn a_replica_killed_mid_delivery_hands_its_partitions_to_the_other() {
    const MAX_IN_FLIGHT: usize = 4;
    const RATE: usize = 60;
    let nats = hookbus_testkit::NatsServer::start();
    let settings = [
        ("HOOKBUS_EGRESS__REPLICA_TIMEOUT", "3s"),
        ("RUST_LOG", "error"),
    ];
    let ports = [hookbus_testkit::free_port(), hookbus_testkit::free_port()];
    let victim = Killed(spawn_egress_with(&nats.url(), ports[0], &settings));
    let _survivor = Killed(spawn_egress_with(&nats.url(), ports[1], &settings));
    let (doomed, surviving) = (api_of(ports[0]), api_of(ports[1]));
    doomed.wait_ready().await;
    surviving.wait_ready().await;
    let mut receivers = Vec::new();
    for i in 0..16 {
        let receiver =
            Receiver::start(|_| Reply::status(200).after(Duration::from_millis(20))).await;
        surviving
            .endpoint(json!({
                "url": receiver.url,
                "event_types": [format!("t{i}")],
                "max_in_flight": MAX_IN_FLIGHT,
                "rate_limit": RATE,
            }))
            .await;
        receivers.push(receiver);
    }
    for egress in [&doomed, &surviving] {
        common::until(Duration::from_secs(30), "partitions shared", || async {
            let owned = common::metric(egress, "hookbus_egress_partitions_owned").await;
            (owned > 0.0 && owned < 64.0).then_some(())
        })
        .await;
    }
    let ids = publish_spread(&nats.url(), 5000, 16).await;
    common::eventually(Duration::from_secs(60), "a third delivered", || async {
        receivers.iter().map(Receiver::count).sum::<usize>() >= 1700
    })
    .await;
    drop(victim); // SIGKILL
    let at_kill: usize = receivers.iter().map(Receiver::count).sum();
    assert!(at_kill < 5000, "killed in the middle ({at_kill} delivered)");

    common::until(
        Duration::from_secs(30),
        "the survivor owns every partition",
        || async {
            let owned = common::metric(&surviving, "hookbus_egress_partitions_owned").await;
            (owned == 64.0).then_some(())
        },
    )
    .await;
    common::eventually(Duration::from_secs(120), "every event", || async {
        let got: HashSet<String> = receivers
            .iter()
            .flat_map(|r| r.hits())
            .map(|h| h.id())
            .collect();
        got.len() >= ids.len()
    })
    .await;
    let all = Receiver::merged(&receivers);
    let repeats = check_arrivals(&all, &ids);
    for receiver in &receivers {
        let most = receiver
            .most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            most <= MAX_IN_FLIGHT,
            "{most} in flight at {}",
            receiver.url
        );
        let hits = receiver.hits();
        for window in hits.windows(RATE + 1) {
            let span = window[RATE].at - window[0].at;
            assert!(
                span >= Duration::from_secs(1),
                "{} requests within {span:?} at {}",
                RATE + 1,
                receiver.url
            );
        }
    }
    eprintln!("killed after {at_kill} deliveries; {repeats} repeated after the hand-over");
}

/// Publishes `n` events over the types `t0` … `t<types - 1>`, as `POST /v1/messages` would.
async fn publish_spread(nats_url: &str, n: usize, types: usize) -> Vec<String> {
    use futures_util::StreamExt;
    let client = async_nats::connect(nats_url).await.unwrap();
    let publisher = hookbus_bus::Publisher::new(client, 256);
    futures_util::stream::iter(0..n)
        .map(|i| {
            let publisher = publisher.clone();
            async move {
                let id = uuid::Uuid::now_v7().to_string();
                let event_type = format!("t{}", i % types);
                let event = Event {
                    id: id.clone(),
                    source: "api".into(),
                    r#type: event_type.clone(),
                    content_type: "application/json".into(),
                    payload: serde_json::to_vec(&json!({"i": i})).unwrap().into(),
                    ..Default::default()
                };
                publisher
                    .publish_event(
                        format!("events.api.{event_type}"),
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

/// An egress that crashes in the middle of a dispatch, at `failpoint`, then starts again: each
/// of the event's 3 endpoints has one task for it in `EGRESS_TASKS`, and gets it (at least once:
/// the crashed process may have sent a task whose ack it lost).
async fn crash_in_a_dispatch(failpoint: &str) {
    let nats = hookbus_testkit::NatsServer::start();
    let port = hookbus_testkit::free_port();
    let crashing = spawn_egress_with(&nats.url(), port, &[("HOOKBUS_FAILPOINTS", failpoint)]);
    let mut crashing = Killed(crashing);
    let egress = api_of(port);
    egress.wait_ready().await;
    let receivers = [
        Receiver::ok().await,
        Receiver::ok().await,
        Receiver::ok().await,
    ];
    let mut endpoints = Vec::new();
    for receiver in &receivers {
        endpoints.push(egress.endpoint(json!({"url": receiver.url})).await.0);
    }
    let ids = publish(&nats.url(), 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while crashing.0.try_wait().unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{failpoint} not hit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _restarted = Killed(spawn_egress(&nats.url(), port));
    egress.wait_ready().await;
    // The event comes back to the dispatcher once its ack wait (30 s) has passed.
    for receiver in &receivers {
        receiver.wait_for(1, Duration::from_secs(90)).await;
    }
    for receiver in &receivers {
        let got: HashSet<String> = receiver.hits().iter().map(common::Hit::id).collect();
        assert_eq!(
            got,
            ids.iter().cloned().collect(),
            "{failpoint}: the event arrives"
        );
    }
    // Count once the event's redelivery to the dispatcher has been handled and acked: a second
    // dispatch would have stored its tasks by then.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let events = js.get_stream("EVENTS").await.unwrap();
    common::eventually(
        Duration::from_secs(90),
        "the dispatcher settled",
        || async {
            let mut dispatcher = events
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>("egress-dispatcher")
                .await
                .unwrap();
            let info = dispatcher.info().await.unwrap();
            info.num_pending == 0 && info.num_ack_pending == 0
        },
    )
    .await;
    let tasks = js.get_stream("EGRESS_TASKS").await.unwrap();
    for endpoint in &endpoints {
        let mut info = tasks
            .info_with_subjects(hookbus_egress::store::endpoint_tasks(endpoint))
            .await
            .unwrap();
        let mut stored = 0;
        while let Some(subject) = futures_util::StreamExt::next(&mut info).await {
            stored += subject.unwrap().1;
        }
        assert_eq!(stored, 1, "{failpoint}: one task for {endpoint}");
    }
}

#[tokio::test]
async fn a_crash_between_a_dispatchs_tasks_its_marker_and_its_ack_sends_each_task_once() {
    tokio::join!(
        crash_in_a_dispatch("egress.dispatch.after_tasks"),
        crash_in_a_dispatch("egress.dispatch.after_marker"),
    );
}
