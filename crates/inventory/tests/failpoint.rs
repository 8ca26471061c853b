//! A process killed after its database commit but before its ack (the `inventory-after-commit`
//! failpoint) does not apply the event twice when the message comes back after a restart.

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
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_crash_between_commit_and_ack_does_not_decrement_twice() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("inventory.db").display());
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

    // First run: set the stock, then crash on the first event after committing it.
    let mut first = spawn(&server, &database_url, port, true);
    wait_until("inventory up", || async {
        http.put(format!("http://127.0.0.1:{port}/v1/stock/SKU-F"))
            .bearer_auth("failpoint-token-0123")
            .json(&serde_json::json!({"level": 10}))
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
    let order = OrderCreated {
        order_id: "crash-1".into(),
        line_items: vec![LineItem {
            sku: "SKU-F".into(),
            quantity: 4,
            unit_price: None,
        }],
        ..Default::default()
    };
    let event = Event {
        id: "evt-crash-1".into(),
        source: "shop".into(),
        r#type: "order.created".into(),
        content_type: "application/json".into(),
        payload: serde_json::to_vec(&order).unwrap().into(),
        ..Event::default()
    };
    Publisher::new(client.clone(), 8)
        .publish_event(
            "events.shop.order.created".into(),
            &event,
            "m-crash-1",
            Instant::now() + Duration::from_secs(5),
            &Default::default(),
        )
        .await
        .unwrap();
    let status = tokio::task::spawn_blocking(move || first.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !status.success(),
        "the failpoint aborted the process: {status:?}"
    );

    // Second run: the unacked message comes back after ack_wait and must change nothing.
    let mut second = spawn(&server, &database_url, port, false);
    wait_until("the redelivery is acked", || async {
        let stream = js.get_stream("EVENTS").await.unwrap();
        match stream
            .get_consumer::<consumer::pull::Config>("inventory")
            .await
        {
            Ok(mut c) => c.info().await.is_ok_and(|i| {
                i.num_redelivered == 0 && i.num_ack_pending == 0 && i.ack_floor.stream_sequence >= 2
            }),
            Err(_) => false,
        }
    })
    .await;
    assert_eq!(level(&http, port, "SKU-F").await, Some(6), "10 - 4, once");
    let _ = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || second.wait()).await;
}

/// An HTTP client for the test (reqwest needs the process's rustls provider first).
fn http_client() -> reqwest::Client {
    hookbus_bus::install_crypto_provider();
    reqwest::Client::new()
}
