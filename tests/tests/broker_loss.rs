//! Broker loss: with nats-server down the ingress answers 503 with Retry-After within the publish
//! deadline and never 2xx; it recovers by itself; under concurrent load across a restart, every id
//! answered 200 is stored exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hookbus_e2e::{config, spawn_ingress, stored_events, wait_for};
use hookbus_signature::{Outgoing, Scheme, sign_as_provider};
use hookbus_testkit::NatsServer;
use tokio::time::Instant;

const SOURCES: &str = r#"
[ingress.sources.github]
verifier = "github"
secrets = ["s3cret"]
"#;

fn signed(delivery_id: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let body = format!(r#"{{"action":"opened","delivery":"{delivery_id}"}}"#).into_bytes();
    let headers = sign_as_provider(
        &Scheme::Github,
        "s3cret",
        Outgoing {
            body: &body,
            delivery_id,
            event_type: "issues",
            timestamp: 0,
        },
    );
    (headers, body)
}

#[tokio::test]
async fn with_the_broker_down_the_answer_is_503_within_the_deadline_and_recovery_is_automatic() {
    let mut server = NatsServer::start();
    let ingress = spawn_ingress(config(&server, SOURCES, &[])).await;
    let (headers, body) = signed("before");
    assert_eq!(ingress.post("github", &headers, body).await.status(), 200);

    server.stop();
    for i in 0..3 {
        let (headers, body) = signed(&format!("down-{i}"));
        let started = Instant::now();
        let response = ingress.post("github", &headers, body).await;
        let waited = started.elapsed();
        assert_eq!(response.status(), 503);
        assert!(
            response.headers().get("retry-after").is_some(),
            "503 carries Retry-After"
        );
        assert!(
            waited < Duration::from_millis(2500 + 500),
            "answered after {waited:?}"
        );
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["error"]["code"], "broker_unavailable");
    }
    let ready = ingress
        .http
        .get(ingress.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "not ready without the broker");

    server.start_again();
    wait_for(Duration::from_secs(20), || {
        let (headers, body) = signed("after");
        let ingress = &ingress;
        async move { ingress.post("github", &headers, body).await.status() == 200 }
    })
    .await
    .expect("the ingress recovers without a restart");

    let ids: Vec<String> = stored_events(&server.url())
        .await
        .into_iter()
        .map(|s| s.event.delivery_id)
        .collect();
    assert!(
        ids.contains(&"before".to_owned()) && ids.contains(&"after".to_owned()),
        "{ids:?}"
    );
    assert_eq!(ids.iter().filter(|id| *id == "after").count(), 1);
    ingress.stop().await;
}

#[tokio::test]
async fn every_id_answered_200_across_a_restart_is_stored_exactly_once() {
    const REQUESTS: usize = 2400;
    const CONCURRENCY: usize = 128;
    let mut server = NatsServer::start();
    let ingress = Arc::new(spawn_ingress(config(&server, SOURCES, &[])).await);

    let answered = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (ingress, answered, next) = (ingress.clone(), answered.clone(), next.clone());
        workers.spawn(async move {
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= REQUESTS {
                    return results;
                }
                let delivery_id = format!("load-{i}");
                let (headers, body) = signed(&delivery_id);
                let response = ingress.post("github", &headers, body).await;
                let status = response.status().as_u16();
                let id = if status == 200 {
                    let json: serde_json::Value = response.json().await.unwrap();
                    Some(json["id"].as_str().unwrap().to_owned())
                } else {
                    None
                };
                answered.fetch_add(1, Ordering::Relaxed);
                results.push((delivery_id, status, id));
                // Pace the load (about 500 requests/s in all) so that it spans the restart.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }

    // Restart the broker once a quarter of the requests have been answered.
    wait_for(Duration::from_secs(60), || {
        let answered = answered.clone();
        async move { answered.load(Ordering::Relaxed) >= REQUESTS / 4 }
    })
    .await
    .unwrap();
    server.stop();
    // The outage itself (longer than the publish deadline, so some requests must fail), not a
    // synchronisation.
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.start_again();

    let mut results = Vec::new();
    while let Some(worker) = workers.join_next().await {
        results.extend(worker.unwrap());
    }
    assert_eq!(results.len(), REQUESTS);
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for (_, status, _) in &results {
        *by_status.entry(*status).or_default() += 1;
    }
    assert!(
        by_status.keys().all(|s| *s == 200 || *s == 503),
        "only 200 or 503: {by_status:?}"
    );
    assert!(
        by_status.get(&503).copied().unwrap_or(0) > 0,
        "the restart was felt: {by_status:?}"
    );
    assert!(
        by_status.get(&200).copied().unwrap_or(0) > REQUESTS / 4,
        "{by_status:?}"
    );

    let stored = stored_events(&server.url()).await;
    let mut count: HashMap<&str, usize> = HashMap::new();
    for s in &stored {
        *count.entry(s.event.id.as_str()).or_default() += 1;
    }
    for (delivery_id, status, id) in &results {
        if *status == 200 {
            let id = id.as_deref().unwrap();
            assert_eq!(
                count.get(id).copied(),
                Some(1),
                "{delivery_id} ({id}) answered 200"
            );
        }
    }
    println!("statuses: {by_status:?}; stored: {}", stored.len());
}
