//! Every list pages with `limit` and an opaque `iterator` until `done`: 1,000 endpoints (and a
//! tenant's half of them), 1,000 attempts of one endpoint, and dead letters, 50 at a time, each
//! record exactly once and in order; and the page parameters are checked.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Egress, Receiver, Reply, settings};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// The pages of `list`, 50 at a time.
async fn pages(egress: &Egress, list: &str) -> Vec<Vec<Value>> {
    let separator = if list.contains('?') { '&' } else { '?' };
    let pages = egress.pages(&format!("{list}{separator}limit=50")).await;
    for page in &pages {
        assert!(page.len() <= 50, "{}", page.len());
    }
    pages
}

fn ids(pages: &[Vec<Value>], field: &str) -> Vec<String> {
    pages
        .iter()
        .flatten()
        .map(|item| item[field].to_string().trim_matches('"').to_owned())
        .collect()
}

#[tokio::test]
async fn paging_through_1000_endpoints_yields_each_once_in_id_order() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let created: Vec<(String, bool)> = stream::iter(0..1000)
        .map(|i| {
            let egress = &egress;
            async move {
                let acme = i % 2 == 0;
                let mut body = json!({"url": format!("http://127.0.0.1:9/{i}")});
                if acme {
                    body["tenant"] = json!("acme");
                }
                (egress.endpoint(body).await.0, acme)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    let all = pages(&egress, "/v1/endpoints").await;
    assert_eq!(all.len(), 20, "1,000 in pages of 50");
    let listed = ids(&all, "id");
    let mut expected: Vec<String> = created.iter().map(|(id, _)| id.clone()).collect();
    expected.sort();
    assert_eq!(listed, expected, "each once, by id");

    let acme = pages(&egress, "/v1/endpoints?tenant=acme").await;
    assert_eq!(acme.len(), 10);
    let listed = ids(&acme, "id");
    let mut expected: Vec<String> = created
        .iter()
        .filter(|(_, acme)| *acme)
        .map(|(id, _)| id.clone())
        .collect();
    expected.sort();
    assert_eq!(listed, expected, "only acme's, each once, by id");

    // An endpoint created between two pages appears on a later page (ids grow with time).
    let (status, first) = egress.call("GET", "/v1/endpoints?limit=50", None).await;
    assert_eq!(status, 200);
    let (late, _) = egress
        .endpoint(json!({"url": "http://127.0.0.1:9/late"}))
        .await;
    let mut iterator = first["iterator"].as_str().unwrap().to_owned();
    let mut last = None;
    loop {
        let (status, page) = egress
            .call(
                "GET",
                &format!("/v1/endpoints?limit=250&iterator={iterator}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        last = page["items"].as_array().unwrap().last().cloned().or(last);
        match page["iterator"].as_str() {
            Some(next) => iterator = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(last.unwrap()["id"], late.as_str());

    let (_, none) = egress
        .call("GET", "/v1/endpoints?tenant=nobody", None)
        .await;
    assert_eq!(none, json!({"items": [], "iterator": null, "done": true}));
    egress.stop().await;
}

#[tokio::test]
async fn page_parameters_are_checked_and_named() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let (id, _) = egress.endpoint(json!({"url": "http://127.0.0.1:9/"})).await;
    egress.endpoint(json!({"url": "http://127.0.0.1:9/"})).await;
    let (_, first) = egress.call("GET", "/v1/endpoints?limit=1", None).await;
    let endpoints_iterator = first["iterator"].as_str().unwrap().to_owned();
    let cases = [
        ("/v1/endpoints?limit=0".to_owned(), 422, "limit"),
        ("/v1/endpoints?limit=251".to_owned(), 422, "limit"),
        ("/v1/endpoints?limit=abc".to_owned(), 400, "limit"),
        ("/v1/endpoints?tenent=acme".to_owned(), 400, "tenent"),
        ("/v1/endpoints?iterator=bm9wZQ".to_owned(), 422, "iterator"),
        ("/v1/endpoints?tenant=".to_owned(), 422, "tenant"),
        (
            format!("/v1/dead-letters?iterator={endpoints_iterator}"),
            422,
            "iterator",
        ),
        (
            format!("/v1/endpoints/{id}/attempts?iterator={endpoints_iterator}"),
            422,
            "iterator",
        ),
        (
            format!("/v1/endpoints/{id}/attempts?limit=1000"),
            422,
            "limit",
        ),
        (
            "/v1/dead-letters?endpoint_id=a.b".to_owned(),
            422,
            "endpoint_id",
        ),
    ];
    for (path, status, field) in cases {
        let (got, answer) = egress.call("GET", &path, None).await;
        assert_eq!(got, status, "{path} → {answer}");
        assert_eq!(answer["error"]["field"], field, "{path} → {answer}");
    }
    let (status, answer) = egress
        .call("POST", "/v1/dead-letters/abc/retry", None)
        .await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "not_found");
    egress.stop().await;
}

#[tokio::test]
async fn paging_through_1000_attempts_of_one_endpoint_yields_each_once_newest_first() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let receiver = Receiver::ok().await;
    // One at a time, so the attempts are recorded in the order they were made.
    let (endpoint, _) = egress
        .endpoint(json!({"url": receiver.url, "max_in_flight": 1}))
        .await;
    let sent: BTreeSet<String> = stream::iter(0..1000)
        .map(|i| {
            let egress = &egress;
            async move { egress.message("order.created", json!({"n": i}), None).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    receiver.wait_for(1000, WAIT).await;
    // The attempt is recorded just after the answer: wait until the last one is.
    common::eventually(WAIT, "1,000 attempts recorded", || async {
        egress.attempts(&endpoint).await.len() == 1000
    })
    .await;

    let attempts = pages(&egress, &format!("/v1/endpoints/{endpoint}/attempts")).await;
    assert_eq!(attempts.len(), 20);
    let events = ids(&attempts, "event_id");
    assert_eq!(events.len(), 1000);
    assert_eq!(
        events.iter().cloned().collect::<BTreeSet<_>>(),
        sent,
        "each attempt once"
    );
    let times: Vec<&str> = attempts
        .iter()
        .flatten()
        .map(|a| a["attempted_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    // Attempts are read in blocks of 64, the newest block holding 40 (960 to 999): pages of 40
    // end on a block's end, then within blocks; none comes back empty, none twice.
    let pages_of_40 = egress
        .pages(&format!("/v1/endpoints/{endpoint}/attempts?limit=40"))
        .await;
    assert!(
        pages_of_40
            .iter()
            .all(|page| !page.is_empty() && page.len() <= 40)
    );
    assert_eq!(ids(&pages_of_40, "event_id"), events, "the same order");
    egress.stop().await;
}

#[tokio::test]
async fn dead_letters_page_oldest_first_and_by_endpoint() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(
        &nats.url(),
        hookbus_egress::EgressConfig {
            retry_schedule: Vec::new(),
            ..settings()
        },
    )
    .await;
    let failing = Receiver::start(|_| Reply::status(500)).await;
    let (a, _) = egress
        .endpoint(json!({"url": failing.url, "event_types": ["a.*"]}))
        .await;
    let (b, _) = egress
        .endpoint(json!({"url": failing.url, "event_types": ["b.*"]}))
        .await;
    for i in 0..60 {
        egress.message("a.failed", json!({"n": i}), None).await;
        if i % 2 == 0 {
            egress.message("b.failed", json!({"n": i}), None).await;
        }
    }
    common::eventually(WAIT, "90 dead letters", || async {
        egress.every("/v1/dead-letters?limit=250").await.len() == 90
    })
    .await;

    let all = pages(&egress, "/v1/dead-letters").await;
    assert_eq!(all.iter().map(Vec::len).collect::<Vec<_>>(), [50, 40]);
    let sequences: Vec<u64> = all
        .iter()
        .flatten()
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "oldest first, each once"
    );
    for (endpoint, count) in [(&a, 60), (&b, 30)] {
        let mine = pages(&egress, &format!("/v1/dead-letters?endpoint_id={endpoint}")).await;
        let letters: Vec<&Value> = mine.iter().flatten().collect();
        assert_eq!(letters.len(), count);
        assert!(
            letters
                .iter()
                .all(|l| l["endpoint_id"] == endpoint.as_str())
        );
        let events: BTreeSet<&str> = letters
            .iter()
            .map(|l| l["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(events.len(), count, "each once");
    }
    egress.stop().await;
}
