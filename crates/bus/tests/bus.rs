//! The bus against a real nats-server.

use std::time::Duration;

use hookbus_bus::{
    ENVELOPE_HEADROOM, NatsConfig, Publisher, StreamSettings, connect, ensure_events_stream,
    ensure_fits_max_payload,
};
use hookbus_proto::v1::Event;
use hookbus_testkit::NatsServer;
use prost::Message;
use tokio::time::Instant;

fn config(server: &NatsServer) -> NatsConfig {
    NatsConfig {
        url: server.url(),
        connect_timeout: Duration::from_secs(5),
        ..NatsConfig::default()
    }
}

fn event(id: &str) -> Event {
    Event {
        id: id.into(),
        source: "test".into(),
        r#type: "thing.happened".into(),
        provider: "none".into(),
        payload: b"{}".to_vec().into(),
        ..Event::default()
    }
}

#[tokio::test]
async fn provisioning_is_idempotent_and_updates_managed_settings() {
    let server = NatsServer::start();
    let client = connect(&config(&server), "test").await.unwrap();
    let js = async_nats::jetstream::new(client);
    let settings = StreamSettings::default();
    let first = ensure_events_stream(&js, &settings).await.unwrap();
    assert_eq!(first.config.subjects, ["events.>"]);
    assert_eq!(first.config.duplicate_window, Duration::from_secs(120));
    ensure_events_stream(&js, &settings).await.unwrap();

    let changed = StreamSettings {
        max_age: Duration::from_secs(3600),
        ..settings
    };
    let updated = ensure_events_stream(&js, &changed).await.unwrap();
    assert_eq!(updated.config.max_age, Duration::from_secs(3600));
}

#[tokio::test]
async fn publish_waits_for_the_ack_and_reports_duplicates() {
    let server = NatsServer::start();
    let client = connect(&config(&server), "test").await.unwrap();
    let publisher = Publisher::new(client.clone(), 64);
    ensure_events_stream(publisher.jetstream(), &StreamSettings::default())
        .await
        .unwrap();

    let deadline = || Instant::now() + Duration::from_millis(2500);
    let e = event("e-1");
    let publish = async || {
        publisher
            .publish_event(
                "events.test.thing.happened".into(),
                &e,
                "test:d-1",
                deadline(),
                &Default::default(),
            )
            .await
            .unwrap()
    };
    let first = publish().await;
    assert!(!first.duplicate);
    let again = publish().await;
    assert!(again.duplicate);
    assert_eq!(again.sequence, first.sequence);

    let mut stream = publisher.jetstream().get_stream("EVENTS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    let stored = stream.get_raw_message(first.sequence).await.unwrap();
    assert_eq!(Event::decode(stored.payload).unwrap(), e);
    assert_eq!(
        stored.headers.get("Nats-Msg-Id").unwrap().as_str(),
        "test:d-1"
    );
    assert_eq!(
        stored.headers.get("Hookbus-Type").unwrap().as_str(),
        "thing.happened"
    );
    assert_eq!(
        stored.headers.get("Content-Type").unwrap().as_str(),
        "application/protobuf"
    );
}

#[tokio::test]
async fn publish_gives_up_at_the_deadline_when_the_server_is_gone() {
    let mut server = NatsServer::start();
    let client = connect(&config(&server), "test").await.unwrap();
    let publisher = Publisher::new(client, 64);
    ensure_events_stream(publisher.jetstream(), &StreamSettings::default())
        .await
        .unwrap();
    server.stop();

    let started = Instant::now();
    let result = publisher
        .publish_event(
            "events.test.thing.happened".into(),
            &event("e-2"),
            "test:d-2",
            Instant::now() + Duration::from_millis(1500),
            &Default::default(),
        )
        .await;
    let waited = started.elapsed();
    assert!(result.is_err(), "{result:?}");
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_body_limit_beyond_max_payload_is_refused_with_advice() {
    let server = NatsServer::start_with_config("max_payload: 65536");
    let client = connect(&config(&server), "test").await.unwrap();
    assert!(ensure_fits_max_payload(&client, 16 * 1024, ENVELOPE_HEADROOM).is_ok());
    let err = ensure_fits_max_payload(&client, 512 * 1024, ENVELOPE_HEADROOM).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("max_payload") && message.contains("ingress.body_limit"),
        "{message}"
    );
}

#[tokio::test]
async fn connecting_to_nothing_fails_with_the_url_in_the_message() {
    let port = hookbus_testkit::free_port();
    let config = NatsConfig {
        url: format!("nats://127.0.0.1:{port}"),
        connect_timeout: Duration::from_millis(600),
        ..NatsConfig::default()
    };
    let err = connect(&config, "test").await.unwrap_err();
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[tokio::test]
async fn a_comma_separated_url_lists_servers_tried_in_turn() {
    let server = NatsServer::start();
    let nothing = hookbus_testkit::free_port();
    let config = NatsConfig {
        url: format!("nats://127.0.0.1:{nothing}, {}", server.url()),
        connect_timeout: Duration::from_secs(10),
        ..NatsConfig::default()
    };
    let client = connect(&config, "test").await.unwrap();
    assert_eq!(client.server_info().port, server.port());
}
