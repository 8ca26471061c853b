//! Batches: events in one batch take effect as one at a time would, and one event that cannot be
//! applied fails alone, on SQLite and on the machine's PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use hookbus_bus::dlq::REASON_HEADER;
use hookbus_bus::{Delivery, NatsConfig, Outcome, Publisher, StartPosition};
use hookbus_inventory::handler::Handler;
use hookbus_inventory::{Config, Inventory, InventoryConfig, Thresholds};
use hookbus_proto::commerce::v1::{LineItem, OrderCancelled, OrderCreated};
use hookbus_proto::v1::Event;
use hookbus_service::BatchHandler;
use hookbus_store::Store;
use hookbus_store::sqlx::{self, Row};
use hookbus_store::testing::{drop_postgres_database, fresh_postgres_database};
use hookbus_testkit::NatsServer;
use prost::Message;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn event(id: &str, event_type: &str, payload: serde_json::Value) -> Event {
    Event {
        id: id.into(),
        source: "shop".into(),
        r#type: event_type.into(),
        content_type: "application/json".into(),
        payload: serde_json::to_vec(&payload).unwrap().into(),
        ..Event::default()
    }
}

fn order(id: &str, order_id: &str, lines: &[(&str, i64)]) -> Event {
    let order = OrderCreated {
        order_id: order_id.into(),
        line_items: lines
            .iter()
            .map(|(sku, quantity)| LineItem {
                sku: (*sku).into(),
                quantity: *quantity,
                unit_price: None,
            })
            .collect(),
        ..Default::default()
    };
    event(id, "order.created", serde_json::to_value(order).unwrap())
}

fn cancel(id: &str, order_id: &str) -> Event {
    let cancel = OrderCancelled {
        order_id: order_id.into(),
        ..Default::default()
    };
    event(id, "order.cancelled", serde_json::to_value(cancel).unwrap())
}

fn adjust(id: &str, sku: &str, mode: &str, quantity: i64) -> Event {
    let payload = serde_json::json!({"sku": sku, "quantity": quantity, "mode": mode});
    event(id, "stock.adjusted", payload)
}

fn deliveries(events: Vec<Event>) -> Vec<Delivery> {
    events
        .into_iter()
        .enumerate()
        .map(|(n, event)| Delivery {
            subject: format!("events.shop.{}", event.r#type),
            event,
            stream_sequence: n as u64 + 1,
            attempt: 1,
            headers: Default::default(),
        })
        .collect()
}

async fn handler(database_url: &str) -> Handler {
    let store = Store::open(database_url, hookbus_inventory::store::migrations())
        .await
        .unwrap();
    Handler {
        inventory: Arc::new(Inventory::new(
            store,
            Thresholds {
                default: 5,
                per_sku: Default::default(),
            },
        )),
        consumer: "inventory".into(),
        wake_relay: Default::default(),
        metrics: Default::default(),
        max_deliveries: 5,
    }
}

/// Everything the events left in the database: levels, orders, lines, and the outbox's events
/// in order (type and payload; ids and times differ between runs).
async fn contents(handler: &Handler) -> Vec<String> {
    let pool = handler.inventory.store().pool();
    let mut out = Vec::new();
    for row in sqlx::query("SELECT sku, level FROM stock ORDER BY sku")
        .fetch_all(pool)
        .await
        .unwrap()
    {
        let (sku, level): (String, i64) = (row.get("sku"), row.get("level"));
        out.push(format!("stock {sku} {level}"));
    }
    for row in sqlx::query("SELECT order_id, status FROM orders ORDER BY order_id")
        .fetch_all(pool)
        .await
        .unwrap()
    {
        let (id, status): (String, String) = (row.get("order_id"), row.get("status"));
        out.push(format!("order {id} {status}"));
    }
    for row in sqlx::query("SELECT order_id, sku, quantity FROM order_lines ORDER BY order_id, sku")
        .fetch_all(pool)
        .await
        .unwrap()
    {
        let (id, sku, quantity): (String, String, i64) =
            (row.get("order_id"), row.get("sku"), row.get("quantity"));
        out.push(format!("line {id} {sku} {quantity}"));
    }
    for row in sqlx::query("SELECT subject, event FROM outbox ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
    {
        use base64::Engine;
        let (subject, encoded): (String, String) = (row.get("subject"), row.get("event"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let event = Event::decode(bytes.as_slice()).unwrap();
        out.push(format!("outbox {subject} {:?}", event.payload));
    }
    out
}

/// Creates with their cancels, cancels before their creates, repeats, duplicate event ids and
/// adjustments, interleaved on shared SKUs.
fn sequence() -> Vec<Event> {
    vec![
        // A create and its cancel.
        order("e1", "o1", &[("A", 2)]),
        cancel("e2", "o1"),
        // A cancel before its create: the create is not applied.
        cancel("e3", "o2"),
        order("e4", "o2", &[("A", 1)]),
        // A create repeated under another event id, cancelled twice.
        order("e5", "o3", &[("A", 1), ("B", 2)]),
        order("e6", "o3", &[("A", 1), ("B", 2)]),
        cancel("e7", "o3"),
        cancel("e8", "o3"),
        // Adjustments around an order with two lines on one SKU, then its cancel.
        adjust("e9", "B", "MODE_SET", 10),
        order("e10", "o4", &[("B", 4), ("B", 3)]),
        adjust("e11", "B", "MODE_ADD", -2),
        cancel("e12", "o4"),
        // The same event twice in one batch (republished under another message id).
        order("e13", "o5", &[("C", 1)]),
        order("e13", "o5", &[("C", 1)]),
        // Down through the threshold and out of stock.
        adjust("e14", "D", "MODE_SET", 6),
        order("e15", "o6", &[("D", 6)]),
        cancel("e16", "o6"),
    ]
}

async fn one_batch_is_one_at_a_time(batched_url: &str, single_url: &str) {
    let (batched, single) = (handler(batched_url).await, handler(single_url).await);
    let outcomes = batched.handle(deliveries(sequence())).await;
    assert!(outcomes.iter().all(|o| *o == Outcome::Ack), "{outcomes:?}");
    for delivery in deliveries(sequence()) {
        assert_eq!(single.handle(vec![delivery]).await, vec![Outcome::Ack]);
    }
    let (in_one, one_by_one) = (contents(&batched).await, contents(&single).await);
    assert_eq!(in_one, one_by_one);
    for expected in ["stock A 0", "stock B 8", "stock C -1", "stock D 6"] {
        assert!(
            in_one.iter().any(|line| line == expected),
            "{expected} in {in_one:#?}"
        );
    }
    for expected in [
        "order o1 cancelled",
        "order o2 cancelled",
        "order o3 cancelled",
        "order o4 cancelled",
        "order o5 reserved",
    ] {
        assert!(in_one.iter().any(|line| line == expected), "{expected}");
    }
    let outbox = |subject: &str| {
        in_one
            .iter()
            .filter(|l| l.starts_with(&format!("outbox events.inventory.{subject} ")))
            .count()
    };
    // A: -2, +2, -1, +1; B: -2, +2, set 10, -7, -2, +7; C: -1; D: set 6, -6, +6.
    assert_eq!(outbox("stock.changed"), 4 + 6 + 1 + 3);
    assert_eq!(outbox("stock.out"), 1, "D crossed 0 once");
    // Applied again as a batch, every event is a repeat and nothing changes.
    let again = batched.handle(deliveries(sequence())).await;
    assert!(again.iter().all(|o| *o == Outcome::Ack));
    assert_eq!(contents(&batched).await, in_one);
}

#[tokio::test]
async fn events_in_one_batch_take_effect_as_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
    one_batch_is_one_at_a_time(&sqlite("batched.db"), &sqlite("single.db")).await;
    let (batched, single) = (
        fresh_postgres_database()
            .await
            .expect("the machine's PostgreSQL"),
        fresh_postgres_database()
            .await
            .expect("the machine's PostgreSQL"),
    );
    one_batch_is_one_at_a_time(&batched, &single).await;
    drop_postgres_database(&batched).await.unwrap();
    drop_postgres_database(&single).await.unwrap();
}

/// 63 orders and, among them, one whose lines overflow a level: published while no inventory
/// runs, so that they come in batches of up to 64.
async fn a_poison_event_fails_alone(database_url: &str) {
    let server = NatsServer::start();
    let nats = NatsConfig {
        url: server.url(),
        ..NatsConfig::default()
    };
    let client = hookbus_bus::connect(&nats, "test").await.unwrap();
    let publisher = Publisher::new(client.clone(), 64);
    hookbus_bus::ensure_events_stream(publisher.jetstream(), &Default::default())
        .await
        .unwrap();
    for n in 0..64 {
        let event = if n == 31 {
            order(
                "poison",
                "o-poison",
                &[("P-2", i64::MAX), ("P-2", i64::MAX)],
            )
        } else {
            order(&format!("p-{n}"), &format!("o-{n}"), &[("P-1", 1)])
        };
        publisher
            .publish_event(
                "events.shop.order.created".into(),
                &event,
                &event.id,
                Instant::now() + Duration::from_secs(5),
                &Default::default(),
            )
            .await
            .unwrap();
    }
    let config = Config {
        nats,
        telemetry: Default::default(),
        service: InventoryConfig {
            database_url: database_url.to_owned(),
            start: StartPosition::All,
            concurrency: 1,
            batch_size: 64,
            ..InventoryConfig::default()
        },
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(hookbus_inventory::run(config, listener, shutdown.clone()));

    // The poison event is dead-lettered with its reason.
    let js = jetstream::new(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let letter = loop {
        if let Ok(stream) = js.get_stream("DLQ").await {
            let reader = stream
                .create_consumer(consumer::pull::Config {
                    ack_policy: consumer::AckPolicy::None,
                    ..Default::default()
                })
                .await
                .unwrap();
            let mut batch = reader.fetch().max_messages(10).messages().await.unwrap();
            let mut letters = Vec::new();
            while let Some(m) = batch.next().await {
                letters.push(m.unwrap());
            }
            if !letters.is_empty() {
                assert_eq!(letters.len(), 1, "only the poison event");
                break letters.pop().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "nothing was dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = letter.headers.as_ref().unwrap().get(REASON_HEADER).unwrap();
    assert!(
        reason.as_str().contains("o-poison") && reason.as_str().contains("overflow"),
        "{reason:?}"
    );
    assert_eq!(Event::decode(letter.payload.clone()).unwrap().id, "poison");

    // The other 63 took effect, once each.
    hookbus_service::install_crypto_provider();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let level = loop {
        let r = http
            .get(format!("{base}/v1/stock/P-1"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let json: serde_json::Value = r.json().await.unwrap();
            if json["level"] == -63 || Instant::now() > deadline {
                break json["level"].clone();
            }
        }
        assert!(Instant::now() < deadline, "P-1 never changed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(level, -63);
    let metrics = hookbus_testkit::get_text(&http, &format!("{base}/metrics")).await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert_eq!(value("hookbus_inventory_events_applied_total"), 63.0);
    // They came in batches, not one by one.
    assert!(
        value("hookbus_consumer_batch_messages_count") < 32.0,
        "batches: {}",
        value("hookbus_consumer_batch_messages_count")
    );
    let store = Store::open(database_url, hookbus_inventory::store::migrations())
        .await
        .unwrap();
    let (claimed,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM processed_events WHERE event_id = 'poison'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(claimed, 0, "the poison event left no claim");
    store.pool().close().await;
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_poison_event_in_a_batch_of_64_is_dead_lettered_and_the_other_63_take_effect_once() {
    let dir = tempfile::tempdir().unwrap();
    a_poison_event_fails_alone(&format!(
        "sqlite://{}",
        dir.path().join("inventory.db").display()
    ))
    .await;
    let postgres = fresh_postgres_database()
        .await
        .expect("the machine's PostgreSQL");
    a_poison_event_fails_alone(&postgres).await;
    drop_postgres_database(&postgres).await.unwrap();
}
