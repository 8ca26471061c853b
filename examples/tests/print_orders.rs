//! The example consumer works as the README says: it prints an order published before it started,
//! and stops cleanly on SIGINT.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use hookbus_bus::{NatsConfig, Publisher, connect, ensure_events_stream};
use hookbus_proto::v1::Event;
use hookbus_testkit::NatsServer;

#[tokio::test]
async fn the_example_prints_orders_and_stops_on_sigint() {
    let server = NatsServer::start();
    let config = NatsConfig {
        url: server.url(),
        ..NatsConfig::default()
    };
    let publisher = Publisher::new(connect(&config, "test").await.unwrap(), 16);
    ensure_events_stream(publisher.jetstream(), &Default::default())
        .await
        .unwrap();
    let event = Event {
        id: "order-event-1".into(),
        source: "shop".into(),
        r#type: "orders.create".into(),
        payload: br#"{"id":1001}"#.to_vec().into(),
        ..Event::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    publisher
        .publish_event(
            "events.shop.orders.create".into(),
            &event,
            "m-1",
            deadline,
            &Default::default(),
        )
        .await
        .unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_print-orders"))
        .env("NATS_URL", server.url())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || BufReader::new(stdout).lines().next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(line, r#"shop order-event-1: {"id":1001}"#);
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
