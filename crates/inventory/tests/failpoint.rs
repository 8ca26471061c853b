//! A process killed after a batch's database commit but before its acks (the
//! `inventory-after-commit` failpoint) does not apply any of its events twice when the messages
//! come back after a restart, on SQLite and on Postgres.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use hookbus_bus::{NatsConfig, Publisher};
use hookbus_proto::commerce::v1::{LineItem, OrderCreated};
use hookbus_proto::v1::Event;
use hookbus_testkit::{NatsServer, free_port};
use tokio::time::Instant;

fn spawn(server: &NatsServer, database_url: &str, port: u16, failpoint: bool) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookbus-inventory"));
    command
        .env("NATS_URL", server.url())
        .env("DATABASE_URL", database_url)
        .env("HOOKBUS_INVENTORY__LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOKBUS_INVENTORY__ACK_WAIT", "2s")
        .env("HOOKBUS_INVENTORY__API_TOKEN", "failpoint-token-0123")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    if failpoint {
        command.env("HOOKBUS_FAILPOINTS", "inventory-after-commit");
    }
    command.spawn().unwrap()
}

async fn level(http: &reqwest::Client, port: u16, sku: &str) -> Option<i64> {
    let r = http
        .get(format!("http://127.0.0.1:{port}/v1/stock/{sku}"))
        .send()
        .await
        .ok()?;
    let json: serde_json::Value = r.json().await.ok()?;
    json["level"].as_i64()
}

async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    hookbus_testkit::wait_until(Duration::from_secs(30), what, async || condition().await).await
}

async fn publish_orders(client: &async_nats::Client, count: usize) {
    let publisher = Publisher::new(client.clone(), 64);
    for n in 0..count {
        let order = OrderCreated {
            order_id: format!("crash-{n}"),
            line_items: vec![LineItem {
                sku: "SKU-F".into(),
                quantity: 1,
                unit_price: None,
            }],
            ..Default::default()
        };
        let event = Event {
            id: format!("evt-crash-{n}"),
            source: "shop".into(),
            r#type: "order.created".into(),
            content_type: "application/json".into(),
            payload: serde_json::to_vec(&order).unwrap().into(),
            ..Event::default()
        };
        publisher
            .publish_event(
                "events.shop.order.created".into(),
                &event,
                &format!("m-crash-{n}"),
                Instant::now() + Duration::from_secs(5),
                &Default::default(),
            )
            .await
            .unwrap();
    }
}

/// Events the ledger shows applied, read from the database itself.
async fn applied(database_url: &str) -> i64 {
    let store = hookbus_store::Store::open(database_url, hookbus_inventory::store::migrations())
        .await
        .unwrap();
    let (count,): (i64,) = hookbus_store::sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM processed_events WHERE consumer = 'inventory'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    store.pool().close().await;
    count
}

fn stop(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

/// Orders wait on the stream while the inventory is down; it comes up with the failpoint, takes
/// them in batches, commits the first batch and dies before its acks. After a restart without
/// the failpoint the batch is delivered again and changes nothing.
async fn crash_after_a_batch_commit(database_url: &str) {
    const ORDERS: usize = 40;
    let server = NatsServer::start();
    let port = free_port();
    let http = http_client();
    let client = hookbus_bus::connect(
        &NatsConfig {
            url: server.url(),
            ..NatsConfig::default()
        },
        "test",
    )
    .await
    .unwrap();
    let js = jetstream::new(client.clone());

    // A first run sets the stock and creates the durable consumer, then stops.
    let mut first = spawn(&server, database_url, port, false);
    wait_until("inventory up", || async {
        http.put(format!("http://127.0.0.1:{port}/v1/stock/SKU-F"))
            .bearer_auth("failpoint-token-0123")
            .json(&serde_json::json!({"level": 100}))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    wait_until("consumer created", || async {
        js.get_stream("EVENTS")
            .await
            .unwrap()
            .get_consumer::<consumer::pull::Config>("inventory")
            .await
            .is_ok()
    })
    .await;
    stop(&first);
    tokio::task::spawn_blocking(move || first.wait())
        .await
        .unwrap()
        .unwrap();

    // The orders wait; the next run takes them in batches and crashes after its first commit.
    publish_orders(&client, ORDERS).await;
    let mut crashing = spawn(&server, database_url, port, true);
    let status = tokio::task::spawn_blocking(move || crashing.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !status.success(),
        "the failpoint aborted the process: {status:?}"
    );
    let committed = applied(database_url).await;
    assert!(
        committed > 1 && committed <= ORDERS as i64,
        "a batch of several orders was committed before the crash: {committed}"
    );

    // The unacked batch comes back after ack_wait and must change nothing.
    let third = spawn(&server, database_url, port, false);
    wait_until("every order is acked", || async {
        let stream = js.get_stream("EVENTS").await.unwrap();
        match stream
            .get_consumer::<consumer::pull::Config>("inventory")
            .await
        {
            Ok(mut c) => c.info().await.is_ok_and(|i| {
                i.num_pending == 0 && i.num_ack_pending == 0 && i.ack_floor.stream_sequence >= 1
            }),
            Err(_) => false,
        }
    })
    .await;
    assert_eq!(
        level(&http, port, "SKU-F").await,
        Some(100 - ORDERS as i64),
        "100 - 1 per order, each once"
    );
    assert_eq!(applied(database_url).await, ORDERS as i64);
    stop(&third);
    let mut third = third;
    let _ = tokio::task::spawn_blocking(move || third.wait()).await;
}

#[tokio::test]
async fn a_crash_between_a_batch_commit_and_its_acks_applies_nothing_twice_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("inventory.db").display());
    crash_after_a_batch_commit(&database_url).await;
}

#[tokio::test]
async fn a_crash_between_a_batch_commit_and_its_acks_applies_nothing_twice_on_postgres() {
    let database_url = hookbus_store::testing::fresh_postgres_database()
        .await
        .expect("the machine's PostgreSQL");
    crash_after_a_batch_commit(&database_url).await;
    hookbus_store::testing::drop_postgres_database(&database_url)
        .await
        .unwrap();
}

/// An HTTP client for the test (reqwest needs the process's rustls provider first).
fn http_client() -> reqwest::Client {
    hookbus_service::install_crypto_provider();
    reqwest::Client::new()
}
