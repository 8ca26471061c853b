//! Isolation between endpoints, the per-endpoint limits as a receiver measures them, two
//! replicas sharing the work, and SSRF refusals at send and connect time.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Egress, Receiver, Reply, settings, until};
use futures_util::future::BoxFuture;
use hookbus_egress::Lookup;
use serde_json::json;

/// Publishes `n` messages through the API, 16 at a time; returns their ids.
async fn send_many(egress: &Egress, event_type: &str, n: usize) -> Vec<String> {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..n)
        .map(|i| egress.message(event_type, json!({"i": i}), None))
        .buffer_unordered(16)
        .collect()
        .await
}

#[tokio::test]
async fn a_slow_and_a_failing_endpoint_do_not_delay_a_healthy_one() {
    let nats = hookbus_testkit::NatsServer::start();
    let mut config = settings();
    config.request_timeout = Duration::from_secs(10);
    let egress = Egress::start(&nats.url(), config).await;
    let slow = Receiver::start(|_| Reply::status(200).after(Duration::from_secs(60))).await;
    let failing = Receiver::start(|_| Reply::status(500)).await;
    let healthy = Receiver::ok().await;
    for receiver in [&slow, &failing, &healthy] {
        egress.endpoint(json!({"url": receiver.url})).await;
    }
    send_many(&egress, "order.created", 1000).await;
    let hits = healthy.wait_for(1000, Duration::from_secs(60)).await;
    let first_slow = slow.hits()[0].at;
    let last_healthy = hits[999].at;
    assert!(
        last_healthy < first_slow + Duration::from_secs(10),
        "the healthy endpoint's 1000th event came {:?} after the slow one's first request",
        last_healthy - first_slow
    );
    let mut ids: Vec<String> = hits.iter().map(common::Hit::id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1000);
    assert!(failing.count() >= 16, "the failing endpoint was tried too");
    assert!(
        slow.most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
            <= 16,
        "the slow endpoint holds at most its max_in_flight"
    );
    egress.shutdown.cancel();
}

#[tokio::test]
async fn rate_limit_and_max_in_flight_hold_at_the_receiver() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let limited = Receiver::start(|_| Reply::status(200).after(Duration::from_millis(150))).await;
    let capped = Receiver::start(|_| Reply::status(200).after(Duration::from_millis(100))).await;
    egress
        .endpoint(json!({"url": limited.url, "rate_limit": 10, "max_in_flight": 50, "event_types": ["a"]}))
        .await;
    egress
        .endpoint(json!({"url": capped.url, "max_in_flight": 3, "event_types": ["a"]}))
        .await;
    send_many(&egress, "a", 45).await;
    let hits = limited.wait_for(45, Duration::from_secs(30)).await;
    capped.wait_for(45, Duration::from_secs(30)).await;
    // No second holds more than 10 starts: any 11 consecutive arrivals span at least a second.
    for window in hits.windows(11) {
        let span = window[10].at - window[0].at;
        assert!(
            span >= Duration::from_secs(1),
            "11 requests within {span:?}"
        );
    }
    assert_eq!(
        capped
            .most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst),
        3,
        "max_in_flight 3 is reached and never passed"
    );
    egress.stop().await;
}

/// Each endpoint's deliveries go through the one replica that owns its partition; with many
/// endpoints both replicas own some partitions, and every event arrives once.
#[tokio::test]
async fn two_replicas_share_the_partitions_and_deliver_each_event_once() {
    let nats = hookbus_testkit::NatsServer::start();
    let first = Egress::start(&nats.url(), settings()).await;
    let second = Egress::start(&nats.url(), settings()).await;
    let receiver = Receiver::start(|_| Reply::status(200).after(Duration::from_millis(5))).await;
    let mut endpoints = Vec::new();
    for i in 0..16 {
        let (endpoint, _) = first
            .endpoint(json!({"url": receiver.url, "event_types": [format!("t{i}")]}))
            .await;
        endpoints.push(endpoint);
    }
    // The second replica knows the endpoints from the bucket.
    let last = endpoints.last().unwrap().clone();
    until(
        Duration::from_secs(5),
        "the endpoints on the second replica",
        || async {
            Some(
                second
                    .call("GET", &format!("/v1/endpoints/{last}"), None)
                    .await
                    .0,
            )
            .filter(|status| *status == 200)
        },
    )
    .await;
    // Both replicas own partitions once each has seen the other.
    for egress in [&first, &second] {
        until(Duration::from_secs(20), "partitions shared", || async {
            let owned = common::metric(egress, "hookbus_egress_partitions_owned").await;
            (owned > 0.0 && owned < 64.0).then_some(())
        })
        .await;
    }
    let mut ids = send_spread(&first, 250, 0).await;
    ids.extend(send_spread(&second, 250, 7).await);
    receiver.wait_for(500, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut seen: Vec<String> = receiver.hits().iter().map(common::Hit::id).collect();
    assert_eq!(seen.len(), 500, "no event delivered twice");
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    for egress in [&first, &second] {
        let delivered = common::metric(
            egress,
            "hookbus_egress_attempts_total{outcome=\"delivered\"}",
        )
        .await;
        assert!(delivered > 0.0, "{} delivered nothing", egress.base);
    }
    first.stop().await;
    second.stop().await;
}

/// Publishes `n` messages over the types `t0` … `t15` (starting at `offset`), 16 at a time.
async fn send_spread(egress: &Egress, n: usize, offset: usize) -> Vec<String> {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..n)
        .map(|i| {
            let event_type = format!("t{}", (i + offset) % 16);
            async move { egress.message(&event_type, json!({"i": i}), None).await }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// A resolver with fixed answers: a public-looking name that leads to 127.0.0.1.
struct FixedLookup;

impl Lookup for FixedLookup {
    fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let found: Option<Vec<IpAddr>> =
            (host == "hooks.example.com").then(|| vec!["127.0.0.1".parse().unwrap()]);
        Box::pin(async move {
            found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
        })
    }
}

#[tokio::test]
async fn private_destinations_are_refused_at_send_and_connect_time_and_logged() {
    let nats = hookbus_testkit::NatsServer::start();
    let inside = Receiver::ok().await;
    let port = inside
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    // Endpoints recorded while private networks were open (an earlier configuration).
    let open = Egress::start(&nats.url(), settings()).await;
    let literal = [
        format!("http://127.0.0.1:{port}/hook"),
        "http://10.1.2.3/hook".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        format!("http://[::1]:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://localhost:{port}/hook"),
    ];
    let mut endpoints = Vec::new();
    for url in &literal {
        let (id, _) = open.endpoint(json!({"url": url})).await;
        endpoints.push((id, url.clone()));
    }
    open.stop().await;

    // Now closed: 127.0.0.2 is opened explicitly, for a receiver that redirects inside.
    let redirector = Receiver::start_on("127.0.0.2", {
        let to = inside.url.clone();
        move |_| Reply::status(302).header("location", &to)
    })
    .await;
    let mut strict = settings();
    strict.allow_private_networks = false;
    strict.allowed_subnets = vec!["127.0.0.2/32".parse().unwrap()];
    strict.retry_schedule = Vec::new();
    let egress = Egress::start_with_lookup(&nats.url(), strict, Arc::new(FixedLookup)).await;
    let (named, _) = egress
        .endpoint(json!({"url": format!("http://hooks.example.com:{port}/hook")}))
        .await;
    endpoints.push((named, "hooks.example.com".into()));
    let (redirecting, _) = egress.endpoint(json!({"url": redirector.url})).await;

    egress.message("order.created", json!({"n": 1}), None).await;
    for (id, url) in &endpoints {
        let attempts = until(Duration::from_secs(20), url, || async {
            Some(egress.attempts(id).await).filter(|a| !a.is_empty())
        })
        .await;
        let error = attempts[0]["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("refused:"), "{url}: {}", attempts[0]);
        assert!(attempts[0]["response_status"].is_null());
    }
    let attempts = until(Duration::from_secs(20), "the redirect", || async {
        Some(egress.attempts(&redirecting).await).filter(|a| !a.is_empty())
    })
    .await;
    assert_eq!(attempts[0]["response_status"], 302);
    assert_eq!(redirector.count(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inside.count(), 0, "nothing reached the inside receiver");
    egress.stop().await;
}
