//! The consumer runtime against a real nats-server.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use hookbus_bus::dlq::{ATTEMPTS_HEADER, CONSUMER_HEADER, REASON_HEADER};
use hookbus_bus::{
    ConsumerSpec, Delivery, NatsConfig, Outcome, Publisher, StartPosition, connect,
    ensure_events_stream, run_consumer,
};
use hookbus_proto::v1::Event;
use hookbus_testkit::NatsServer;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

async fn client(server: &NatsServer) -> async_nats::Client {
    let config = NatsConfig {
        url: server.url(),
        ..NatsConfig::default()
    };
    connect(&config, "test").await.unwrap()
}

async fn publish(client: &async_nats::Client, ids: impl IntoIterator<Item = String>) {
    let publisher = Publisher::new(client.clone(), 256);
    ensure_events_stream(publisher.jetstream(), &Default::default())
        .await
        .unwrap();
    for id in ids {
        let event = Event {
            id: id.clone(),
            source: "test".into(),
            r#type: "thing.happened".into(),
            payload: b"{}".to_vec().into(),
            ..Event::default()
        };
        publisher
            .publish_event(
                "events.test.thing.happened".into(),
                &event,
                &id,
                Instant::now() + Duration::from_secs(5),
                &Default::default(),
            )
            .await
            .unwrap();
    }
}

fn spec(name: &str) -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(name, &["events.test.>"]).start(StartPosition::All);
    spec.backoff = vec![Duration::from_millis(100)];
    spec.ack_wait = Duration::from_secs(2);
    spec.max_deliveries = 3;
    spec.drain_timeout = Duration::from_secs(2);
    spec
}

/// Runs a consumer whose handler reports each delivery on a channel and answers with `decide`.
fn spawn<F>(
    client: &async_nats::Client,
    spec: ConsumerSpec,
    decide: F,
) -> (
    mpsc::UnboundedReceiver<Delivery>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
)
where
    F: Fn(&Delivery) -> Outcome + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let decide = Arc::new(decide);
    let handle = tokio::spawn(run_consumer(
        client.clone(),
        spec,
        move |delivery: Delivery| {
            let (tx, decide) = (tx.clone(), decide.clone());
            async move {
                let outcome = decide(&delivery);
                let _ = tx.send(delivery);
                outcome
            }
        },
        shutdown.clone(),
    ));
    let handle = tokio::spawn(async move { handle.await.unwrap().unwrap() });
    (rx, shutdown, handle)
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a delivery in time")
        .unwrap()
}

async fn dead_letters(
    client: &async_nats::Client,
    expected: usize,
) -> Vec<async_nats::jetstream::Message> {
    let js = jetstream::new(client.clone());
    hookbus_e2e_wait(|| async { js.get_stream("DLQ").await.is_ok() }).await;
    let stream = js.get_stream("DLQ").await.unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < expected && Instant::now() < deadline {
        let mut batch = consumer
            .fetch()
            .max_messages(100)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        while let Some(m) = batch.next().await {
            out.push(m.unwrap());
        }
    }
    out
}

async fn consumer_info(client: &async_nats::Client, name: &str) -> consumer::Info {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream("EVENTS").await.unwrap();
    let mut consumer = stream
        .get_consumer::<consumer::pull::Config>(name)
        .await
        .unwrap();
    consumer.info().await.unwrap().clone()
}

#[tokio::test]
async fn retry_is_redelivered_no_sooner_than_after() {
    let server = NatsServer::start();
    let client = client(&server).await;
    publish(&client, ["r-1".to_owned()]).await;
    let (mut rx, shutdown, handle) = spawn(&client, spec("retry"), |d| {
        if d.attempt == 1 {
            Outcome::Retry {
                after: Duration::from_millis(700),
            }
        } else {
            Outcome::Ack
        }
    });
    let first = recv(&mut rx).await;
    let at = Instant::now();
    let second = recv(&mut rx).await;
    assert_eq!((first.attempt, second.attempt), (1, 2));
    assert_eq!(first.event.id, second.event.id);
    assert!(
        at.elapsed() >= Duration::from_millis(650),
        "redelivered after {:?}",
        at.elapsed()
    );
    shutdown.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn reject_is_dead_lettered_with_reason_and_never_redelivered() {
    let server = NatsServer::start();
    let client = client(&server).await;
    publish(&client, ["bad-1".to_owned()]).await;
    let (mut rx, shutdown, handle) = spawn(&client, spec("rejecter"), |_| Outcome::Reject {
        reason: "sku unknown".into(),
    });
    assert_eq!(recv(&mut rx).await.attempt, 1);
    let letters = dead_letters(&client, 1).await;
    assert_eq!(letters.len(), 1);
    let headers = letters[0].headers.as_ref().unwrap();
    assert_eq!(headers.get(REASON_HEADER).unwrap().as_str(), "sku unknown");
    assert_eq!(headers.get(CONSUMER_HEADER).unwrap().as_str(), "rejecter");
    assert_eq!(headers.get(ATTEMPTS_HEADER).unwrap().as_str(), "1");
    assert_eq!(
        letters[0].subject.as_str(),
        "dlq.rejecter.events.test.thing.happened"
    );
    // Terminated: nothing pending or awaiting an ack, and no second delivery.
    hookbus_e2e_wait(|| async {
        let i = consumer_info(&client, "rejecter").await;
        i.num_ack_pending == 0 && i.num_pending == 0
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(2500), rx.recv())
            .await
            .is_err(),
        "redelivered after Reject"
    );
    shutdown.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn exhausted_retries_and_a_timed_out_last_delivery_are_dead_lettered() {
    let server = NatsServer::start();
    let client = client(&server).await;
    publish(&client, ["fails".to_owned(), "hangs".to_owned()]).await;
    let mut spec = spec("exhaust");
    spec.progress_acks = false;
    spec.ack_wait = Duration::from_millis(800);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(run_consumer(
        client.clone(),
        spec,
        move |d: Delivery| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if d.event.id == "hangs" {
                    // Never answers within ack_wait: every delivery times out.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Outcome::Retry {
                    after: Duration::from_millis(50),
                }
            }
        },
        shutdown.clone(),
    ));
    let letters = dead_letters(&client, 2).await;
    let mut reasons: HashMap<String, (String, String)> = HashMap::new();
    for letter in &letters {
        let event = <Event as prost::Message>::decode(letter.payload.clone()).unwrap();
        let h = letter.headers.as_ref().unwrap();
        reasons.insert(
            event.id,
            (
                h.get(REASON_HEADER).unwrap().to_string(),
                h.get(ATTEMPTS_HEADER).unwrap().to_string(),
            ),
        );
    }
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons["fails"].0.contains("after 3 deliveries"),
        "{reasons:?}"
    );
    assert_eq!(reasons["fails"].1, "3");
    assert!(reasons["hangs"].0.contains("timed out"), "{reasons:?}");
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn start_new_skips_older_events_and_all_sees_them() {
    let server = NatsServer::start();
    let client = client(&server).await;
    publish(&client, ["old".to_owned()]).await;
    let (mut new_rx, s1, h1) = spawn(
        &client,
        spec("starts-new").start(StartPosition::New),
        |_| Outcome::Ack,
    );
    let (mut all_rx, s2, h2) = spawn(
        &client,
        spec("starts-all").start(StartPosition::All),
        |_| Outcome::Ack,
    );
    assert_eq!(recv(&mut all_rx).await.event.id, "old");
    // The `new` consumer exists once it is on the server; only then is "fresh" published.
    hookbus_e2e_wait(|| async {
        let js = jetstream::new(client.clone());
        js.get_stream("EVENTS")
            .await
            .unwrap()
            .get_consumer::<consumer::pull::Config>("starts-new")
            .await
            .is_ok()
    })
    .await;
    publish(&client, ["fresh".to_owned()]).await;
    assert_eq!(
        recv(&mut new_rx).await.event.id,
        "fresh",
        "new does not see older events"
    );
    assert_eq!(recv(&mut all_rx).await.event.id, "fresh");
    for (s, h) in [(s1, h1), (s2, h2)] {
        s.cancel();
        h.await.unwrap();
    }
}

#[tokio::test]
async fn a_panicking_handler_is_a_failure_and_the_consumer_goes_on() {
    let server = NatsServer::start();
    let client = client(&server).await;
    publish(&client, ["boom".to_owned(), "fine".to_owned()]).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, u64)>();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(run_consumer(
        client.clone(),
        spec("panics"),
        move |d: Delivery| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((d.event.id.clone(), d.attempt));
                if d.event.id == "boom" && d.attempt == 1 {
                    panic!("handler bug");
                }
                Outcome::Ack
            }
        },
        shutdown.clone(),
    ));
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(
            tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("boom".to_owned(), 1),
            ("boom".to_owned(), 2),
            ("fine".to_owned(), 1)
        ]
    );
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn broker_restart_and_consumer_deletion_are_survived_and_every_message_processed() {
    let mut server = NatsServer::start();
    let client = client(&server).await;
    publish(&client, (0..200).map(|i| format!("a-{i}"))).await;
    let (mut rx, shutdown, handle) = spawn(&client, spec("survivor"), |_| Outcome::Ack);
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 50 {
        seen.insert(recv(&mut rx).await.event.id);
    }
    server.restart();
    while seen.len() < 200 {
        seen.insert(recv(&mut rx).await.event.id);
    }

    let js = jetstream::new(client.clone());
    js.get_stream("EVENTS")
        .await
        .unwrap()
        .delete_consumer("survivor")
        .await
        .unwrap();
    publish(&client, (0..100).map(|i| format!("b-{i}"))).await;
    while seen.len() < 300 {
        seen.insert(recv(&mut rx).await.event.id);
    }
    assert!((0..100).all(|i| seen.contains(&format!("b-{i}"))));
    shutdown.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn shutdown_finishes_or_naks_what_is_in_flight() {
    let server = NatsServer::start();
    let client = client(&server).await;
    publish(&client, (0..20).map(|i| format!("s-{i}"))).await;
    let mut spec = spec("drains");
    spec.concurrency = 4;
    spec.drain_timeout = Duration::from_millis(300);
    // Long enough that only a NAK, not the ack deadline, can bring a message back within the test.
    spec.ack_wait = Duration::from_secs(60);
    let (tx, mut finished) = mpsc::unbounded_channel::<String>();
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(run_consumer(
        client.clone(),
        spec.clone(),
        move |d: Delivery| {
            counter.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            async move {
                // Odd ids outlast the drain timeout; even ones finish at once.
                let slow = d.event.id.ends_with(['1', '3', '5', '7', '9']);
                tokio::time::sleep(Duration::from_millis(if slow { 30_000 } else { 20 })).await;
                let _ = tx.send(d.event.id);
                Outcome::Ack
            }
        },
        shutdown.clone(),
    ));
    hookbus_e2e_wait(|| {
        let s = started.clone();
        async move { s.load(Ordering::SeqCst) >= 4 }
    })
    .await;
    let stopping = Instant::now();
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "drain took {:?}",
        stopping.elapsed()
    );
    let mut done = std::collections::HashSet::new();
    while let Ok(id) = finished.try_recv() {
        done.insert(id);
    }
    assert!(
        done.iter()
            .all(|id| !id.ends_with(['1', '3', '5', '7', '9'])),
        "slow handlers were stopped: {done:?}"
    );

    // A new instance gets everything that was not finished right away: the in-flight messages
    // were NAK'd (otherwise they would wait out the 60 s ack deadline).
    let (mut rx, shutdown, handle) = spawn(&client, spec, |_| Outcome::Ack);
    let mut redelivered = Vec::new();
    while done.len() < 20 {
        let delivery = recv(&mut rx).await;
        if delivery.attempt > 1 {
            redelivered.push(delivery.event.id.clone());
        }
        done.insert(delivery.event.id);
    }
    assert!(
        !redelivered.is_empty(),
        "the interrupted messages came back as redeliveries"
    );
    shutdown.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn a_message_that_reaches_a_closing_pull_is_handed_back_not_used_up() {
    let server = NatsServer::start();
    let client = client(&server).await;
    let mut spec = spec("closing");
    spec.concurrency = 4;
    let (mut rx, shutdown, handle) = spawn(&client, spec.clone(), |_| Outcome::Ack);
    publish(&client, ["c-0".to_owned()]).await;
    assert_eq!(recv(&mut rx).await.event.id, "c-0");
    // The next pull is open (it expires after 1 s) when the shutdown comes, and the message
    // arrives in it. Handed straight back, it would come straight back into that same pull, again
    // and again, until its deliveries ran out.
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.cancel();
    publish(&client, ["c-1".to_owned()]).await;
    handle.await.unwrap();

    let (mut rx, shutdown, handle) = spawn(&client, spec, |_| Outcome::Ack);
    let delivery = recv(&mut rx).await;
    assert_eq!(delivery.event.id, "c-1");
    shutdown.cancel();
    handle.await.unwrap();
}

/// Waits up to 20 s for `condition`.
async fn hookbus_e2e_wait<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(Instant::now() < deadline, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn dead_letters_are_listed_retried_with_the_same_event_id_and_purged() {
    let server = NatsServer::start();
    let client = client(&server).await;
    publish(
        &client,
        ["dl-1".to_owned(), "dl-2".to_owned(), "dl-3".to_owned()],
    )
    .await;
    // Rejects everything until the "bug" is fixed.
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let is_fixed = fixed.clone();
    let (mut rx, shutdown, handle) = spawn(&client, spec("picky"), move |d| {
        if is_fixed.load(Ordering::SeqCst) {
            Outcome::Ack
        } else {
            Outcome::Reject {
                reason: format!("no {}", d.event.id),
            }
        }
    });
    for _ in 0..3 {
        recv(&mut rx).await;
    }
    dead_letters(&client, 3).await;
    let js = jetstream::new(client.clone());
    let letters = hookbus_bus::dlq::list(&js, Some("picky"), 100)
        .await
        .unwrap();
    assert_eq!(letters.len(), 3);
    assert!(
        letters
            .iter()
            .all(|l| l.consumer == "picky" && l.attempts == "1")
    );
    assert_eq!(
        letters[0].reason,
        format!("no {}", letters[0].event_id.clone().unwrap())
    );
    assert!(
        hookbus_bus::dlq::list(&js, Some("someone-else"), 100)
            .await
            .unwrap()
            .is_empty()
    );

    // Retry one: the consumer sees the same event id again (a redrive is a new message).
    fixed.store(true, Ordering::SeqCst);
    hookbus_bus::dlq::retry(&js, &letters[0]).await.unwrap();
    let again = recv(&mut rx).await;
    assert_eq!(Some(again.event.id), letters[0].event_id);
    assert_eq!(
        hookbus_bus::dlq::list(&js, Some("picky"), 100)
            .await
            .unwrap()
            .len(),
        2
    );

    assert_eq!(
        hookbus_bus::dlq::purge(&js, Some("picky")).await.unwrap(),
        2
    );
    assert!(
        hookbus_bus::dlq::list(&js, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    shutdown.cancel();
    handle.await.unwrap();
}

/// Messages NAK'd with a long delay count as pending at the server until redelivered; they must
/// not stop the others (the server's `max_ack_pending` is not the runtime's `2 × concurrency`).
#[tokio::test]
async fn messages_waiting_out_a_long_retry_do_not_stall_the_others() {
    let server = NatsServer::start();
    let client = client(&server).await;
    // Five that fail, then three that succeed: at concurrency 1 the runtime holds 2 at a time.
    publish(&client, (0..5).map(|i| format!("slow-{i}"))).await;
    publish(&client, (0..3).map(|i| format!("ok-{i}"))).await;
    let (mut rx, shutdown, handle) = spawn(&client, spec("parked").concurrency(1), |d| {
        if d.event.id.starts_with("slow-") {
            Outcome::Retry {
                after: Duration::from_secs(60),
            }
        } else {
            Outcome::Ack
        }
    });
    let mut handled: Vec<String> = Vec::new();
    while handled.iter().filter(|id| id.starts_with("ok-")).count() < 3 {
        handled.push(recv(&mut rx).await.event.id);
    }
    let ids: Vec<String> = (0..5)
        .map(|i| format!("slow-{i}"))
        .chain((0..3).map(|i| format!("ok-{i}")))
        .collect();
    assert_eq!(
        handled, ids,
        "in stream order, each once, without waiting a minute"
    );
    shutdown.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn a_batch_handler_gets_what_is_there_and_each_outcome_settles_its_own_message() {
    let server = NatsServer::start();
    let client = client(&server).await;
    // 200 events waiting before the consumer starts: the first pull brings batches.
    publish(&client, (0..200).map(|i| format!("b-{i}"))).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Delivery>>();
    let shutdown = CancellationToken::new();
    let spec = spec("batched")
        .concurrency(1)
        .batch_size(64)
        .confirm_acks(false);
    let handle = tokio::spawn(hookbus_bus::run_batch_consumer(
        client.clone(),
        spec,
        move |batch: Vec<Delivery>| {
            let tx = tx.clone();
            async move {
                // b-7 is poison, b-8 fails on its first delivery only.
                let outcomes = batch
                    .iter()
                    .map(|d| match (d.event.id.as_str(), d.attempt) {
                        ("b-7", _) => Outcome::Reject {
                            reason: "b-7 is poison".into(),
                        },
                        ("b-8", 1) => Outcome::Retry {
                            after: Duration::from_millis(50),
                        },
                        _ => Outcome::Ack,
                    })
                    .collect();
                let _ = tx.send(batch);
                outcomes
            }
        },
        shutdown.clone(),
    ));
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    let mut sizes = Vec::new();
    let mut last_sequence = 0;
    while seen.len() < 200 || seen["b-8"].len() < 2 {
        let batch = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("a batch in time")
            .unwrap();
        assert!(!batch.is_empty() && batch.len() <= 64, "{}", batch.len());
        sizes.push(batch.len());
        for delivery in batch {
            if delivery.attempt == 1 {
                // First deliveries come in stream order at concurrency 1.
                assert!(delivery.stream_sequence > last_sequence);
                last_sequence = delivery.stream_sequence;
            }
            seen.entry(delivery.event.id.clone())
                .or_default()
                .push(delivery.attempt);
        }
    }
    assert!(
        sizes.iter().any(|&n| n > 1),
        "events that were waiting came in batches: {sizes:?}"
    );
    assert_eq!(seen["b-8"], vec![1, 2], "the retried event came back once");
    assert_eq!(seen["b-7"], vec![1], "the rejected event never came back");
    let letters = dead_letters(&client, 1).await;
    assert_eq!(letters.len(), 1);
    let headers = letters[0].headers.as_ref().unwrap();
    assert_eq!(
        headers.get(REASON_HEADER).unwrap().as_str(),
        "b-7 is poison"
    );
    // Everything else was acked once: nothing pending, nothing delivered again.
    hookbus_e2e_wait(|| async {
        let info = consumer_info(&client, "batched").await;
        info.num_ack_pending == 0 && info.num_pending == 0
    })
    .await;
    assert!(
        seen.iter()
            .filter(|(id, _)| *id != "b-8")
            .all(|(_, attempts)| attempts == &vec![1]),
        "no event but b-8 was delivered twice"
    );
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}
