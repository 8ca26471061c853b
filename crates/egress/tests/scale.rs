//! Isolation at scale: 5,000 endpoints on one egress, 500 of them answering 500 and 50 holding
//! every request until the timeout. The healthy ones get every event while the slow ones are
//! still in their first timeout, and no endpoint ever has more than its `max_in_flight` in flight.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Egress, settings};
use futures_util::StreamExt;
use serde_json::json;
use tokio::time::Instant;

const ENDPOINTS: usize = 5000;
const FAILING: usize = 500;
const SLOW: usize = 50;
const EVENTS: usize = 3;

#[derive(Default)]
struct Seen {
    /// Per endpoint: requests now in flight, the most ever, and the requests so far.
    endpoints: HashMap<String, (usize, usize, usize)>,
    /// When the first slow request arrived, and when the last healthy delivery did.
    first_slow: Option<Instant>,
    last_healthy: Option<Instant>,
    healthy: usize,
}

/// One receiver for every endpoint: `x-endpoint` says which, `x-kind` how to answer.
async fn receiver(hold: Duration) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = seen.clone();
    let app = axum::Router::new().fallback(move |headers: http::HeaderMap, _body: Bytes| {
        let seen = state.clone();
        async move {
            let endpoint = headers["x-endpoint"].to_str().unwrap().to_owned();
            let kind = headers["x-kind"].to_str().unwrap().to_owned();
            {
                let mut seen = seen.lock().unwrap();
                if kind == "slow" && seen.first_slow.is_none() {
                    seen.first_slow = Some(Instant::now());
                }
                let entry = seen.endpoints.entry(endpoint.clone()).or_default();
                entry.0 += 1;
                entry.1 = entry.1.max(entry.0);
                entry.2 += 1;
            }
            if kind == "slow" {
                tokio::time::sleep(hold).await;
            }
            let mut seen = seen.lock().unwrap();
            seen.endpoints.get_mut(&endpoint).unwrap().0 -= 1;
            if kind == "healthy" {
                seen.healthy += 1;
                seen.last_healthy = Some(Instant::now());
            }
            if kind == "failing" {
                http::StatusCode::INTERNAL_SERVER_ERROR
            } else {
                http::StatusCode::OK
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn five_thousand_endpoints_the_slow_and_failing_hold_up_none_of_the_others() {
    let nats = hookbus_testkit::NatsServer::start();
    let mut config = settings();
    config.request_timeout = Duration::from_secs(30);
    config.retry_schedule = vec![Duration::from_secs(60)];
    config.max_concurrent_requests = 1024;
    let egress = Egress::start(&nats.url(), config).await;
    let (url, seen) = receiver(Duration::from_secs(120)).await;
    let kind = |i: usize| match i {
        i if i < SLOW => "slow",
        i if i < SLOW + FAILING => "failing",
        _ => "healthy",
    };
    let created = Instant::now();
    futures_util::stream::iter(0..ENDPOINTS)
        .map(|i| {
            let mut body = json!({
                "url": url,
                "event_types": ["fanout"],
                "headers": {"x-endpoint": i.to_string(), "x-kind": kind(i)},
            });
            if kind(i) == "slow" {
                body["max_in_flight"] = json!(1);
            }
            let egress = &egress;
            async move { egress.endpoint(body).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    eprintln!("{ENDPOINTS} endpoints created in {:?}", created.elapsed());
    for n in 0..EVENTS {
        egress.message("fanout", json!({"n": n}), None).await;
    }
    let healthy = (ENDPOINTS - SLOW - FAILING) * EVENTS;
    common::eventually(
        Duration::from_secs(120),
        "every healthy delivery",
        || async { seen.lock().unwrap().healthy >= healthy },
    )
    .await;
    let seen = seen.lock().unwrap();
    let (first_slow, last_healthy) = (seen.first_slow.unwrap(), seen.last_healthy.unwrap());
    assert!(
        last_healthy < first_slow + Duration::from_secs(30),
        "the last healthy delivery came {:?} after the first slow request, past its 30 s timeout",
        last_healthy.duration_since(first_slow)
    );
    eprintln!(
        "{healthy} healthy deliveries, the last {:?} after the first slow request",
        last_healthy.duration_since(first_slow)
    );
    assert_eq!(
        seen.healthy, healthy,
        "each healthy endpoint got each event once"
    );
    for (endpoint, (_, most, requests)) in &seen.endpoints {
        let i: usize = endpoint.parse().unwrap();
        let allowed = if kind(i) == "slow" { 1 } else { 16 };
        assert!(
            *most <= allowed,
            "endpoint {i} ({}) had {most} in flight",
            kind(i)
        );
        if kind(i) == "slow" {
            assert_eq!(
                *requests, 1,
                "a slow endpoint is still in its first request"
            );
        }
    }
    let failing = seen
        .endpoints
        .iter()
        .filter(|(e, _)| kind(e.parse().unwrap()) == "failing")
        .count();
    assert_eq!(failing, FAILING, "every failing endpoint was tried");
    drop(seen);
    egress.shutdown.cancel();
}
