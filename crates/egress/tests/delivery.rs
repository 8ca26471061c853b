//! Signed delivery, retries, disabling, dead letters, rotation, recover and resend, with real
//! HTTP receivers on 127.0.0.1 and a real nats-server.

mod common;

use std::time::Duration;

use common::{Egress, Receiver, Reply, events_on, eventually, settings, until};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_message_reaches_every_matching_endpoint_signed_and_no_other() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let (orders, all, acme, acme_other, notices, shop_only) = (
        Receiver::ok().await,
        Receiver::ok().await,
        Receiver::ok().await,
        Receiver::ok().await,
        Receiver::ok().await,
        Receiver::ok().await,
    );
    let (_, orders_secret) = egress
        .endpoint(json!({"url": orders.url, "event_types": ["order.*"]}))
        .await;
    let (_, all_secret) = egress.endpoint(json!({"url": all.url})).await;
    let (_, acme_secret) = egress
        .endpoint(json!({"url": acme.url, "tenant": "acme", "event_types": ["invoice.>"]}))
        .await;
    egress
        .endpoint(json!({"url": acme_other.url, "tenant": "globex"}))
        .await;
    egress
        .endpoint(json!({"url": notices.url, "event_types": ["hookbus.>"]}))
        .await;
    egress
        .endpoint(json!({"url": shop_only.url, "sources": ["shop"]}))
        .await;

    let order = egress
        .message("order.created", json!({"order": 1, "total": "9.99"}), None)
        .await;
    let refund = egress
        .message("refund.created", json!({"r": 2}), None)
        .await;
    let invoice = egress
        .message("invoice.paid.late", json!({"i": 3}), Some("acme"))
        .await;

    let got = orders.wait_for(1, WAIT).await;
    assert_eq!(got[0].id(), order);
    assert_eq!(got[0].json(), json!({"order": 1, "total": "9.99"}));
    assert_eq!(got[0].headers["hookbus-event-type"], "order.created");
    assert_eq!(got[0].headers["content-type"], "application/json");
    assert!(got[0].verifies_with(&orders_secret));
    assert!(
        !got[0].verifies_with(&all_secret),
        "signed with its own secret"
    );

    let got = all.wait_for(2, WAIT).await;
    let mut ids: Vec<String> = got.iter().map(common::Hit::id).collect();
    ids.sort();
    let mut expected = vec![order.clone(), refund.clone()];
    expected.sort();
    assert_eq!(ids, expected, "the catch-all gets no tenant's message");
    assert!(got.iter().all(|h| h.verifies_with(&all_secret)));

    let got = acme.wait_for(1, WAIT).await;
    assert_eq!(got[0].id(), invoice);
    assert!(got[0].verifies_with(&acme_secret));

    // Give anything misrouted time to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(orders.count(), 1);
    assert_eq!(all.count(), 2);
    assert_eq!(acme.count(), 1);
    assert_eq!(acme_other.count(), 0, "another tenant's endpoint");
    assert_eq!(notices.count(), 0);
    assert_eq!(shop_only.count(), 0, "source filter");

    // The payload reaches subscribers byte for byte: key order and spacing as sent.
    let response = egress
        .client
        .post(format!("{}/v1/messages", egress.base))
        .bearer_auth(common::TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"event_type": "order.created", "payload": {"z": 1, "a": [2,  3]}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let got = orders.wait_for(2, WAIT).await;
    assert_eq!(&got[1].body[..], br#"{"z": 1, "a": [2,  3]}"#);
    egress.stop().await;
}

#[tokio::test]
async fn typed_events_arrive_as_json_and_hookbus_notices_only_where_listed() {
    use prost::Message;
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let (catch_all, stock, notices) = (
        Receiver::start(|_| Reply::status(500)).await,
        Receiver::ok().await,
        Receiver::ok().await,
    );
    let (failing, _) = egress.endpoint(json!({"url": catch_all.url})).await;
    egress
        .endpoint(json!({"url": stock.url, "event_types": ["stock.>"]}))
        .await;
    egress
        .endpoint(json!({"url": notices.url, "event_types": ["hookbus.delivery.exhausted"]}))
        .await;

    // An inventory event, as the inventory's outbox publishes it.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let publisher = hookbus_bus::Publisher::new(client, 16);
    let low = hookbus_proto::inventory::v1::LowStock {
        sku: "SKU-1".into(),
        level: 2,
        threshold: 5,
        cause_event_id: "order-1".into(),
    };
    let event = hookbus_proto::v1::Event {
        id: "0193a0c4-7c1e-7000-8000-00000000aaaa".into(),
        source: "inventory".into(),
        r#type: "stock.low".into(),
        content_type: hookbus_proto::content_type_for::<hookbus_proto::inventory::v1::LowStock>(),
        payload: low.encode_to_vec().into(),
        ..Default::default()
    };
    publisher
        .publish_event(
            "events.inventory.stock.low".into(),
            &event,
            &event.id,
            tokio::time::Instant::now() + Duration::from_secs(5),
            &Default::default(),
        )
        .await
        .unwrap();
    let got = stock.wait_for(1, WAIT).await;
    assert_eq!(got[0].id(), event.id);
    assert_eq!(got[0].headers["content-type"], "application/json");
    assert_eq!(
        got[0].json(),
        // proto3 JSON: 64-bit integers are strings.
        json!({"sku": "SKU-1", "level": "2", "threshold": "5", "causeEventId": "order-1"})
    );

    // The catch-all fails every try: its exhaustion notice goes to the endpoint that lists it,
    // and never to the catch-all itself.
    let notice = notices.wait_for(1, WAIT).await;
    assert_eq!(
        notice[0].headers["hookbus-event-type"],
        "hookbus.delivery.exhausted"
    );
    assert_eq!(notice[0].json()["endpointId"], failing);
    assert_eq!(notice[0].json()["eventId"], event.id);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen: Vec<String> = catch_all
        .hits()
        .iter()
        .map(|h| h.headers["hookbus-event-type"].to_str().unwrap().to_owned())
        .collect();
    assert!(seen.iter().all(|t| t == "stock.low"), "{seen:?}");
    assert_eq!(seen.len(), 3, "the first try and two retries");
    assert_eq!(
        events_on(&nats.url(), "events.hookbus.delivery.exhausted")
            .await
            .len(),
        1
    );
    egress.stop().await;
}

#[tokio::test]
async fn failed_tries_are_retried_on_schedule_with_the_same_id_and_logged() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    // Fails twice, then takes it.
    let receiver = Receiver::start(|n| Reply::status(if n < 2 { 500 } else { 200 })).await;
    let (endpoint, secret) = egress.endpoint(json!({"url": receiver.url})).await;
    let id = egress.message("order.created", json!({"n": 1}), None).await;
    let hits = receiver.wait_for(3, WAIT).await;
    assert!(
        hits.iter().all(|h| h.id() == id),
        "same webhook-id on every try"
    );
    assert!(
        hits.iter().all(|h| h.verifies_with(&secret)),
        "signed afresh each time"
    );
    // The schedule is 400 ms then 800 ms, ±20 %; the server's scheduler adds up to ~300 ms.
    let gaps = [hits[1].at - hits[0].at, hits[2].at - hits[1].at];
    for (gap, planned) in gaps.iter().zip([400u64, 800]) {
        let planned = Duration::from_millis(planned);
        assert!(*gap >= planned.mul_f64(0.8), "{gap:?} before {planned:?}");
        assert!(
            *gap <= planned.mul_f64(1.2) + Duration::from_millis(700),
            "{gap:?} after {planned:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 3, "nothing after the success");
    let attempts = until(WAIT, "three logged attempts", || async {
        Some(egress.attempts(&endpoint).await).filter(|a| a.len() == 3)
    })
    .await;
    let codes: Vec<u64> = attempts
        .iter()
        .map(|a| a["response_status"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [200, 500, 500], "newest first");
    let numbers: Vec<u64> = attempts
        .iter()
        .map(|a| a["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 2, 1]);
    let states: Vec<&str> = attempts
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["delivered", "failed", "failed"],
        "the latest is the status"
    );
    assert!(
        attempts
            .iter()
            .all(|a| a["event_id"] == id.as_str() && a["latency_ms"].is_u64())
    );
    assert_eq!(attempts[0]["status"], "succeeded");
    egress.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_redirect_is_a_failure_never_followed() {
    let nats = hookbus_testkit::NatsServer::start();
    // Retry-After is honoured up to the schedule's longest delay.
    let mut longer = settings();
    longer.retry_schedule = vec![Duration::from_millis(400), Duration::from_millis(2500)];
    let egress = Egress::start(&nats.url(), longer).await;
    let busy = Receiver::start(|n| {
        if n == 0 {
            Reply::status(429).header("retry-after", "2")
        } else {
            Reply::status(200)
        }
    })
    .await;
    let target = Receiver::ok().await;
    let target_url = target.url.clone();
    let moved = Receiver::start(move |_| Reply::status(302).header("location", &target_url)).await;
    egress
        .endpoint(json!({"url": busy.url, "event_types": ["a.b"]}))
        .await;
    let (moved_id, _) = egress
        .endpoint(json!({"url": moved.url, "event_types": ["c.d"]}))
        .await;
    egress.message("a.b", json!({}), None).await;
    egress.message("c.d", json!({}), None).await;
    let hits = busy.wait_for(2, WAIT).await;
    let gap = hits[1].at - hits[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "Retry-After: 2 honoured, came after {gap:?}"
    );

    moved.wait_for(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(target.count(), 0, "the redirect's target is never visited");
    let attempts = egress.attempts(&moved_id).await;
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts
            .iter()
            .all(|a| a["response_status"] == 302 && a["status"] == "failed")
    );
    egress.stop().await;
}

#[tokio::test]
async fn a_410_disables_the_endpoint_keeps_its_tasks_and_reenabling_delivers_them() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let (receiver, fixed) = common::fixable(410).await;
    let (endpoint, _) = egress.endpoint(json!({"url": receiver.url})).await;
    let first = egress.message("order.created", json!({"n": 1}), None).await;
    receiver.wait_for(1, WAIT).await;
    eventually(WAIT, "the endpoint disabled", || {
        egress.is_disabled(&endpoint)
    })
    .await;
    let notices = events_on(&nats.url(), "events.hookbus.endpoint.disabled").await;
    assert_eq!(notices.len(), 1);
    // Queued while disabled, and not attempted.
    let second = egress.message("order.created", json!({"n": 2}), None).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.count(), 1, "nothing sent to a disabled endpoint");

    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, _) = egress
        .call(
            "PATCH",
            &format!("/v1/endpoints/{endpoint}"),
            Some(json!({"disabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    let hits = receiver.wait_for(3, WAIT).await;
    let mut later: Vec<String> = hits[1..].iter().map(common::Hit::id).collect();
    later.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(
        later, expected,
        "the task that got 410 and the one queued meanwhile"
    );
    egress.stop().await;
}

#[tokio::test]
async fn exhaustion_dead_letters_the_task_and_retrying_it_delivers() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let (receiver, healthy) = common::fixable(503).await;
    let (endpoint, _) = egress.endpoint(json!({"url": receiver.url})).await;
    let id = egress.message("order.created", json!({"n": 1}), None).await;
    receiver.wait_for(3, WAIT).await;
    let letters = until(WAIT, "a dead letter", || async {
        Some(egress.call("GET", "/v1/dead-letters", None).await.1)
            .filter(|l| l["items"].as_array().is_some_and(|l| l.len() == 1))
    })
    .await;
    let letter = &letters["items"][0];
    assert_eq!(letter["endpoint_id"], endpoint.as_str());
    assert_eq!(letter["event_id"], id.as_str());
    assert_eq!(letter["attempts"], "3");
    assert!(
        letter["reason"].as_str().unwrap().contains("HTTP 503"),
        "{letter}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.count(), 3, "not tried again once dead");
    // The dead letter is stored first, the record saying `dead` just after it.
    until(WAIT, "the last attempt recorded as dead", || async {
        Some(egress.attempts(&endpoint).await).filter(|a| a[0]["state"] == "dead")
    })
    .await;

    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, _) = egress
        .call(
            "POST",
            &format!("/v1/dead-letters/{}/retry", letter["id"]),
            None,
        )
        .await;
    assert_eq!(status, 202);
    let hits = receiver.wait_for(4, WAIT).await;
    assert_eq!(hits[3].id(), id);
    until(WAIT, "the retry recorded as delivered", || async {
        Some(egress.attempts(&endpoint).await).filter(|a| a[0]["state"] == "delivered")
    })
    .await;
    assert_eq!(
        egress.call("GET", "/v1/dead-letters", None).await.1["items"],
        json!([])
    );
    egress.stop().await;
}

#[tokio::test]
async fn after_a_rotation_both_secrets_sign_until_the_overlap_ends() {
    let nats = hookbus_testkit::NatsServer::start();
    let mut short = settings();
    short.rotation_overlap = Duration::from_secs(3);
    let egress = Egress::start(&nats.url(), short).await;
    let receiver = Receiver::ok().await;
    let (endpoint, old) = egress.endpoint(json!({"url": receiver.url})).await;
    let (status, rotated) = egress
        .call(
            "POST",
            &format!("/v1/endpoints/{endpoint}/secret/rotate"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(rotated["previous"][0]["key"], old.as_str());

    egress.message("order.created", json!({"n": 1}), None).await;
    let hit = receiver.wait_for(1, WAIT).await.remove(0);
    let signatures = hit.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert!(hit.verifies_with(&new) && hit.verifies_with(&old));

    tokio::time::sleep(Duration::from_secs(4)).await;
    egress.message("order.created", json!({"n": 2}), None).await;
    let hit = receiver.wait_for(2, WAIT).await.remove(1);
    let signatures = hit.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 1, "{signatures}");
    assert!(hit.verifies_with(&new) && !hit.verifies_with(&old));
    let (_, secret) = egress
        .call("GET", &format!("/v1/endpoints/{endpoint}/secret"), None)
        .await;
    assert_eq!(secret["previous"], json!([]));
    egress.stop().await;
}

#[tokio::test]
async fn recover_resend_and_delete() {
    let nats = hookbus_testkit::NatsServer::start();
    let mut one_try = settings();
    one_try.retry_schedule = Vec::new();
    let egress = Egress::start(&nats.url(), one_try).await;
    // Takes "good" events and fails the others, until it is fixed.
    let (receiver, fixed) = common::fixable(500).await;
    let good_receiver = Receiver::ok().await;
    let (endpoint, _) = egress
        .endpoint(json!({"url": receiver.url, "event_types": ["bad"]}))
        .await;
    let before = time::OffsetDateTime::now_utc() - Duration::from_secs(1);
    let failed = egress.message("bad", json!({"n": 1}), None).await;
    receiver.wait_for(1, WAIT).await;
    // A delivered one, to the same endpoint after a change of URL.
    let (status, _) = egress
        .call(
            "PATCH",
            &format!("/v1/endpoints/{endpoint}"),
            Some(json!({"url": good_receiver.url})),
        )
        .await;
    assert_eq!(status, 200);
    let delivered = egress.message("bad", json!({"n": 2}), None).await;
    good_receiver.wait_for(1, WAIT).await;
    let (status, _) = egress
        .call(
            "PATCH",
            &format!("/v1/endpoints/{endpoint}"),
            Some(json!({"url": receiver.url})),
        )
        .await;
    assert_eq!(status, 200);
    fixed.store(true, std::sync::atomic::Ordering::SeqCst);

    let since = before
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, answer) = egress
        .call(
            "POST",
            &format!("/v1/endpoints/{endpoint}/recover"),
            Some(json!({"since": since})),
        )
        .await;
    assert_eq!(
        (status, answer["queued"].as_u64()),
        (202, Some(1)),
        "{answer}"
    );
    let hits = receiver.wait_for(2, WAIT).await;
    assert_eq!(
        hits[1].id(),
        failed,
        "the failed one, not the delivered one"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.count(), 2);

    // Resend: the delivered one again, same webhook-id.
    let (status, _) = egress
        .call(
            "POST",
            &format!("/v1/endpoints/{endpoint}/messages/{delivered}/resend"),
            None,
        )
        .await;
    assert_eq!(status, 202);
    let hits = receiver.wait_for(3, WAIT).await;
    assert_eq!(hits[2].id(), delivered);

    // Delete while a task is queued (disabled endpoint): nothing more reaches its URL.
    egress
        .call(
            "PATCH",
            &format!("/v1/endpoints/{endpoint}"),
            Some(json!({"disabled": true})),
        )
        .await;
    let queued = egress.message("bad", json!({"n": 3}), None).await;
    // Wait until it is held: a disabled endpoint's tasks wait on its held subject.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let tasks = js.get_stream("EGRESS_TASKS").await.unwrap();
    let held = format!("egress.held.{endpoint}");
    eventually(WAIT, "the task held", || async {
        use prost::Message;
        tasks
            .get_last_raw_message_by_subject(&held)
            .await
            .ok()
            .and_then(|m| hookbus_proto::egress::v1::DeliveryTask::decode(m.payload).ok())
            .is_some_and(|task| task.event_id == queued)
    })
    .await;
    let (status, _) = egress
        .call("DELETE", &format!("/v1/endpoints/{endpoint}"), None)
        .await;
    assert_eq!(status, 204);
    egress.message("bad", json!({"n": 4}), None).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.count(), 3, "a deleted endpoint gets nothing more");
    let partition = hookbus_egress::store::partition_of(&endpoint, 64);
    for subject in [held, format!("egress.tasks.{partition}.{endpoint}")] {
        assert!(
            tasks
                .get_last_raw_message_by_subject(&subject)
                .await
                .is_err(),
            "its tasks are discarded ({subject})"
        );
    }
    egress.stop().await;
}

#[tokio::test]
async fn an_endpoint_failing_for_disable_after_is_disabled_and_announced() {
    use prost::Message;
    let nats = hookbus_testkit::NatsServer::start();
    let mut config = settings();
    config.disable_after = Duration::from_secs(1);
    config.retry_schedule = vec![Duration::from_millis(400); 6];
    let egress = Egress::start(&nats.url(), config).await;
    let receiver = Receiver::start(|_| Reply::status(500)).await;
    let (endpoint, _) = egress.endpoint(json!({"url": receiver.url})).await;
    egress.message("order.created", json!({"n": 1}), None).await;
    eventually(WAIT, "the endpoint disabled", || {
        egress.is_disabled(&endpoint)
    })
    .await;
    let notices = events_on(&nats.url(), "events.hookbus.endpoint.disabled").await;
    assert_eq!(notices.len(), 1);
    let notice =
        hookbus_proto::egress::v1::EndpointDisabled::decode(notices[0].payload.clone()).unwrap();
    assert_eq!(notice.endpoint_id, endpoint);
    assert!(
        notice.reason.contains("no successful delivery for 1s"),
        "{}",
        notice.reason
    );
    let tries = receiver.count();
    assert!(tries >= 2, "{tries}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.count(), tries, "nothing more while disabled");
    egress.stop().await;
}

/// The dispatcher's check that its endpoints are current: it waits for the watch to apply what
/// was stored before it was asked, and fails, rather than answer, when the watch cannot.
#[tokio::test]
async fn the_directory_is_current_only_once_its_watch_has_every_endpoint_stored_before() {
    use async_nats::jetstream::kv;
    use hookbus_egress::directory::Directory;
    use prost::Message;

    let nats = hookbus_testkit::NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let bucket = js
        .create_key_value(kv::Config {
            bucket: "endpoints".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let directory = Directory::new();
    let asked = tokio::time::Instant::now();
    // An empty bucket: nothing to wait for.
    directory
        .fresh_since(&bucket, asked, Duration::from_secs(1))
        .await
        .unwrap();

    let record = hookbus_proto::egress::v1::Endpoint {
        id: "ep_1".into(),
        url: "http://127.0.0.1:9/hook".into(),
        ..Default::default()
    };
    bucket
        .put("ep_1", record.encode_to_vec().into())
        .await
        .unwrap();
    let after_the_put = tokio::time::Instant::now();
    // The check that answered `asked` covers nothing stored since.
    let unwatched = directory
        .fresh_since(&bucket, after_the_put, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        unwatched.to_string().contains("has not reached revision 1"),
        "{unwatched}"
    );
    assert!(directory.get("ep_1").is_none());
    // A caller that came before that check began shares its answer, without a check of its own.
    let shared = tokio::time::Instant::now();
    assert_eq!(
        directory
            .fresh_since(&bucket, after_the_put, Duration::from_secs(5))
            .await,
        Err(unwatched)
    );
    assert!(shared.elapsed() < Duration::from_millis(200));

    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
    let secrets =
        std::sync::Arc::new(hookbus_egress::crypto::SecretBox::from_base64(&key).unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let follow = tokio::spawn(
        directory
            .clone()
            .follow(bucket.clone(), secrets, shutdown.clone()),
    );
    directory
        .fresh_since(&bucket, tokio::time::Instant::now(), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(directory.get("ep_1").is_some(), "known once current");
    shutdown.cancel();
    follow.await.unwrap();
}

#[tokio::test]
async fn recover_takes_what_failed_since_its_time_and_leaves_what_failed_before() {
    let nats = hookbus_testkit::NatsServer::start();
    let mut one_try = settings();
    one_try.retry_schedule = Vec::new();
    let egress = Egress::start(&nats.url(), one_try).await;
    let (receiver, fixed) = common::fixable(500).await;
    let (endpoint, _) = egress.endpoint(json!({"url": receiver.url})).await;
    let old = egress.message("order.created", json!({"n": 1}), None).await;
    receiver.wait_for(1, WAIT).await;
    // The status records are second-granular: leave a whole second between the two.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let since = time::OffsetDateTime::now_utc() - Duration::from_millis(500);
    let recent = egress.message("order.created", json!({"n": 2}), None).await;
    receiver.wait_for(2, WAIT).await;
    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let recover = |at: time::OffsetDateTime| {
        let egress = &egress;
        let endpoint = &endpoint;
        async move {
            let since = at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            egress
                .call(
                    "POST",
                    &format!("/v1/endpoints/{endpoint}/recover"),
                    Some(json!({"since": since})),
                )
                .await
        }
    };
    let (status, answer) = recover(time::OffsetDateTime::now_utc() + Duration::from_secs(60)).await;
    assert_eq!(
        (status, answer["queued"].as_u64()),
        (202, Some(0)),
        "{answer}"
    );
    let (status, answer) = recover(since).await;
    assert_eq!(
        (status, answer["queued"].as_u64()),
        (202, Some(1)),
        "{answer}"
    );
    let hits = receiver.wait_for(3, WAIT).await;
    assert_eq!(hits[2].id(), recent, "the recent one, not {old}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.count(), 3);
    egress.stop().await;
}

#[tokio::test]
async fn a_message_lists_its_attempts_to_every_endpoint_in_the_order_they_were_made() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let first = Receiver::ok().await;
    let second = Receiver::ok().await;
    // Fails its first request, then takes the retry.
    let flaky = Receiver::start(|n| Reply::status(if n == 0 { 500 } else { 200 })).await;
    let mut endpoints = Vec::new();
    for receiver in [&first, &second, &flaky] {
        endpoints.push(egress.endpoint(json!({"url": receiver.url})).await.0);
    }
    let message = egress.message("order.created", json!({"n": 1}), None).await;
    flaky.wait_for(2, WAIT).await;
    first.wait_for(1, WAIT).await;
    second.wait_for(1, WAIT).await;
    let other = egress.message("order.created", json!({"n": 2}), None).await;
    flaky.wait_for(3, WAIT).await;

    let attempts = until(WAIT, "4 attempts of the message", || async {
        Some(
            egress
                .every(&format!("/v1/messages/{message}/attempts"))
                .await,
        )
        .filter(|a| a.len() == 4)
    })
    .await;
    assert!(
        attempts.iter().all(|a| a["event_id"] == message.as_str()),
        "{attempts:?}"
    );
    let mut to: Vec<&str> = attempts
        .iter()
        .map(|a| a["endpoint_id"].as_str().unwrap())
        .collect();
    to.sort_unstable();
    let mut expected = vec![
        endpoints[0].as_str(),
        endpoints[1].as_str(),
        endpoints[2].as_str(),
        endpoints[2].as_str(),
    ];
    expected.sort_unstable();
    assert_eq!(to, expected, "one attempt each, two to the flaky one");
    let flaky_attempts: Vec<(u64, &str, &str)> = attempts
        .iter()
        .filter(|a| a["endpoint_id"] == endpoints[2].as_str())
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["status"].as_str().unwrap(),
                a["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        flaky_attempts,
        [(1, "failed", "failed"), (2, "succeeded", "delivered")],
        "in the order they were made, each with where its task stood after it"
    );

    let (status, page) = egress
        .call(
            "GET",
            &format!("/v1/messages/{message}/attempts?limit=3"),
            None,
        )
        .await;
    assert_eq!((status, page["items"].as_array().unwrap().len()), (200, 3));
    assert_eq!(page["done"], false);
    let others = egress
        .every(&format!("/v1/messages/{other}/attempts"))
        .await;
    assert!(others.iter().all(|a| a["event_id"] == other.as_str()));
    let (status, none) = egress
        .call("GET", "/v1/messages/never-sent/attempts", None)
        .await;
    assert_eq!((status, none["items"].clone()), (200, json!([])));
    let (status, _) = egress.call("GET", "/v1/messages/a.b/attempts", None).await;
    assert_eq!(status, 404);
    // An endpoint's own list, by event, finds the same attempts.
    let (_, by_event) = egress
        .call(
            "GET",
            &format!("/v1/endpoints/{}/attempts?event_id={message}", endpoints[2]),
            None,
        )
        .await;
    assert_eq!(by_event["items"].as_array().unwrap().len(), 2, "{by_event}");
    egress.stop().await;
}

#[tokio::test]
async fn resend_of_an_event_never_sent_to_the_endpoint_goes_only_to_one_that_takes_it() {
    let nats = hookbus_testkit::NatsServer::start();
    let egress = Egress::start(&nats.url(), settings()).await;
    let first = Receiver::ok().await;
    egress
        .endpoint(json!({"url": first.url, "tenant": "acme"}))
        .await;
    let id = egress
        .message("invoice.paid", json!({"n": 1}), Some("acme"))
        .await;
    first.wait_for(1, WAIT).await;
    // Created after the event was dispatched: never queued for it.
    let late = Receiver::ok().await;
    let (acme_late, _) = egress
        .endpoint(json!({"url": late.url, "tenant": "acme"}))
        .await;
    let other = Receiver::ok().await;
    let (globex, _) = egress
        .endpoint(json!({"url": other.url, "tenant": "globex"}))
        .await;
    let (stock_only, _) = egress
        .endpoint(json!({"url": other.url, "tenant": "acme", "event_types": ["stock.*"]}))
        .await;
    for endpoint in [&globex, &stock_only] {
        let (status, answer) = egress
            .call(
                "POST",
                &format!("/v1/endpoints/{endpoint}/messages/{id}/resend"),
                None,
            )
            .await;
        assert_eq!(status, 404, "{answer}");
    }
    let (status, _) = egress
        .call(
            "POST",
            &format!("/v1/endpoints/{acme_late}/messages/{id}/resend"),
            None,
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(late.wait_for(1, WAIT).await[0].id(), id);
    assert_eq!(other.count(), 0, "another tenant's endpoint got nothing");
    egress.stop().await;
}
