//! The inventory against a real nats-server, on SQLite and on the machine's PostgreSQL.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use hookbus_bus::{Delivery, NatsConfig, Publisher};
use hookbus_inventory::outbox::Relay;
use hookbus_inventory::{Config, InventoryConfig};
use hookbus_proto::commerce::v1::{LineItem, OrderCancelled, OrderCreated};
use hookbus_proto::inventory::v1::{LowStock, OutOfStock, StockLevelChanged};
use hookbus_proto::v1::Event;
use hookbus_service::BatchHandler;
use hookbus_store::testing::{drop_postgres_database, fresh_postgres_database};
use hookbus_testkit::NatsServer;
use prost::Message;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token-0123456789";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

struct Running {
    server: NatsServer,
    client: async_nats::Client,
    publisher: Publisher,
    http: reqwest::Client,
    base: String,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), hookbus_service::ServiceError>>,
    database_url: String,
}

impl Running {
    fn config(nats_url: &str, database_url: &str) -> Config {
        Config {
            nats: NatsConfig {
                url: nats_url.to_owned(),
                ..NatsConfig::default()
            },
            telemetry: Default::default(),
            service: InventoryConfig {
                database_url: database_url.to_owned(),
                api_token: Some(TOKEN.to_owned().into()),
                relay_interval: Duration::from_millis(100),
                ..InventoryConfig::default()
            },
        }
    }

    /// A second inventory process on the same broker, database and durable consumer: its base
    /// URL, and what stops it.
    async fn replica(
        &self,
    ) -> (
        String,
        CancellationToken,
        tokio::task::JoinHandle<Result<(), hookbus_service::ServiceError>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(hookbus_inventory::run(
            Self::config(&self.server.url(), &self.database_url),
            listener,
            shutdown.clone(),
        ));
        (base, shutdown, handle)
    }

    async fn start(database_url: &str) -> Self {
        let server = NatsServer::start();
        let config = Self::config(&server.url(), database_url);
        let nats = config.nats.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(hookbus_inventory::run(config, listener, shutdown.clone()));
        let client = hookbus_bus::connect(&nats, "test").await.unwrap();
        let publisher = Publisher::new(client.clone(), 64);
        let http = http_client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(Instant::now() < deadline, "inventory did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The consumer starts at `new`: wait until it exists before publishing.
        let js = jetstream::new(client.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        while js
            .get_stream("EVENTS")
            .await
            .unwrap()
            .get_consumer::<consumer::pull::Config>("inventory")
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "consumer not created");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self {
            server,
            client,
            publisher,
            http,
            base,
            shutdown,
            handle,
            database_url: database_url.to_owned(),
        }
    }

    async fn publish(
        &self,
        event_type: &str,
        id: &str,
        msg_id: &str,
        content_type: &str,
        payload: Vec<u8>,
    ) {
        let event = Event {
            id: id.into(),
            source: "shop".into(),
            r#type: event_type.into(),
            content_type: content_type.into(),
            payload: payload.into(),
            ..Event::default()
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("traceparent", TRACEPARENT);
        let parent = hookbus_telemetry::context_from_nats(&headers);
        self.publisher
            .publish_event(
                format!("events.shop.{event_type}"),
                &event,
                msg_id,
                Instant::now() + Duration::from_secs(5),
                &parent,
            )
            .await
            .unwrap();
    }

    async fn order(&self, id: &str, order_id: &str, lines: &[(&str, i64)]) {
        let order = OrderCreated {
            order_id: order_id.into(),
            line_items: lines
                .iter()
                .map(|(sku, q)| LineItem {
                    sku: (*sku).into(),
                    quantity: *q,
                    unit_price: None,
                })
                .collect(),
            ..OrderCreated::default()
        };
        self.publish(
            "order.created",
            id,
            id,
            "application/json",
            serde_json::to_vec(&order).unwrap(),
        )
        .await;
    }

    async fn cancel(&self, id: &str, order_id: &str) {
        let cancel = OrderCancelled {
            order_id: order_id.into(),
            ..OrderCancelled::default()
        };
        self.publish(
            "order.cancelled",
            id,
            id,
            "application/json",
            serde_json::to_vec(&cancel).unwrap(),
        )
        .await;
    }

    async fn level(&self, sku: &str) -> Option<i64> {
        let r = self
            .http
            .get(format!("{}/v1/stock/{sku}", self.base))
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            return None;
        }
        let json: serde_json::Value = r.json().await.unwrap();
        json["level"].as_i64()
    }

    async fn wait_level(&self, sku: &str, level: i64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.level(sku).await != Some(level) {
            assert!(
                Instant::now() < deadline,
                "{sku} never reached {level} (at {:?})",
                self.level(sku).await
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn put(
        &self,
        sku: &str,
        body: serde_json::Value,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .put(format!("{}/v1/stock/{sku}", self.base))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// The events the inventory published, in order, once `expected` of them are there.
    async fn emitted(&self, expected: usize) -> Vec<(String, Event, async_nats::HeaderMap)> {
        let js = jetstream::new(self.client.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stream = js.get_stream("EVENTS").await.unwrap();
            let reader = stream
                .create_consumer(consumer::pull::Config {
                    filter_subject: "events.inventory.>".into(),
                    ack_policy: consumer::AckPolicy::None,
                    ..Default::default()
                })
                .await
                .unwrap();
            let mut out = Vec::new();
            let mut batch = reader.fetch().max_messages(1000).messages().await.unwrap();
            while let Some(m) = batch.next().await {
                let m = m.unwrap();
                out.push((
                    m.subject.to_string(),
                    Event::decode(m.payload.clone()).unwrap(),
                    m.headers.clone().unwrap_or_default(),
                ));
            }
            if out.len() >= expected || Instant::now() > deadline {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
        if self.database_url.starts_with("postgres") {
            drop_postgres_database(&self.database_url).await.unwrap();
        }
        drop(self.server);
    }
}

/// Runs `test` on SQLite, then on a fresh Postgres database.
async fn on_both<F, Fut>(test: F)
where
    F: Fn(Running) -> Fut,
    Fut: std::future::Future<Output = Running>,
{
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("inventory.db").display());
    test(Running::start(&sqlite).await).await.stop().await;
    let postgres = fresh_postgres_database()
        .await
        .expect("the machine's PostgreSQL");
    test(Running::start(&postgres).await).await.stop().await;
}

#[tokio::test]
async fn an_order_changes_stock_once_whatever_the_deliveries() {
    on_both(|app| async move {
        assert_eq!(
            app.put("SKU-1", serde_json::json!({"level": 10}), Some(TOKEN))
                .await
                .status(),
            200
        );
        app.order("evt-order-1", "o-1", &[("SKU-1", 3)]).await;
        app.wait_level("SKU-1", 7).await;
        // The same event id republished with another message id: not applied again.
        app.publish(
            "order.created",
            "evt-order-1",
            "other-msg-id",
            "application/json",
            serde_json::to_vec(&OrderCreated {
                order_id: "o-1".into(),
                line_items: vec![LineItem {
                    sku: "SKU-1".into(),
                    quantity: 3,
                    unit_price: None,
                }],
                ..Default::default()
            })
            .unwrap(),
        )
        .await;
        // A redelivery: the handler gets the same delivery again.
        let store =
            hookbus_store::Store::open(&app.database_url, hookbus_inventory::store::migrations())
                .await
                .unwrap();
        let inventory = std::sync::Arc::new(hookbus_inventory::Inventory::new(
            store,
            hookbus_inventory::Thresholds {
                default: 5,
                per_sku: Default::default(),
            },
        ));
        let order = OrderCreated {
            order_id: "o-1".into(),
            line_items: vec![LineItem {
                sku: "SKU-1".into(),
                quantity: 3,
                unit_price: None,
            }],
            ..Default::default()
        };
        let delivery = Delivery {
            event: Event {
                id: "evt-order-1".into(),
                r#type: "order.created".into(),
                content_type: "application/json".into(),
                payload: serde_json::to_vec(&order).unwrap().into(),
                ..Event::default()
            },
            subject: "events.shop.order.created".into(),
            stream_sequence: 2,
            attempt: 2,
            headers: Default::default(),
        };
        let handler = hookbus_inventory::handler::Handler {
            inventory,
            consumer: "inventory".into(),
            wake_relay: Default::default(),
            metrics: Default::default(),
            max_deliveries: 5,
        };
        let outcome = handler.handle(vec![delivery]).await;
        assert_eq!(outcome, vec![hookbus_bus::Outcome::Ack]);
        // A later order shows that everything before it was handled.
        app.order("evt-order-2", "o-2", &[("SKU-1", 1)]).await;
        app.wait_level("SKU-1", 6).await;
        let changes: Vec<_> = app
            .emitted(3)
            .await
            .into_iter()
            .filter(|(s, ..)| s == "events.inventory.stock.changed")
            .collect();
        assert_eq!(
            changes.len(),
            3,
            "PUT, order 1, order 2: one StockLevelChanged each"
        );
        app
    })
    .await;
}

#[tokio::test]
async fn a_cancel_before_its_order_leaves_stock_unchanged_and_the_late_order_is_not_applied() {
    on_both(|app| async move {
        app.put("SKU-2", serde_json::json!({"level": 5}), Some(TOKEN))
            .await;
        app.cancel("evt-cancel-9", "o-9").await;
        app.order("evt-order-9", "o-9", &[("SKU-2", 2)]).await;
        app.order("evt-order-10", "o-10", &[("SKU-2", 1)]).await;
        app.wait_level("SKU-2", 4).await; // only o-10 applied
        // A cancel of a recorded order releases it.
        app.cancel("evt-cancel-10", "o-10").await;
        app.wait_level("SKU-2", 5).await;
        app
    })
    .await;
}

#[tokio::test]
async fn the_outbox_emits_each_change_once_and_thresholds_once_per_crossing_with_trace_context() {
    on_both(|app| async move {
        app.put(
            "SKU-3",
            serde_json::json!({"level": 10, "threshold": 5}),
            Some(TOKEN),
        )
        .await;
        for (i, quantity) in [3, 3, 3, 2].into_iter().enumerate() {
            app.order(
                &format!("evt-{i}"),
                &format!("o-{i}"),
                &[("SKU-3", quantity)],
            )
            .await;
        }
        app.wait_level("SKU-3", -1).await;
        app.cancel("evt-c", "o-3").await; // back to 1: no crossing downwards
        app.wait_level("SKU-3", 1).await;
        app.order("evt-4", "o-4", &[("SKU-3", 1)]).await; // 1 → 0: crosses zero again
        app.wait_level("SKU-3", 0).await;
        // 7 changes, 1 LowStock, 2 OutOfStock.
        let emitted = app.emitted(7 + 1 + 2).await;
        let of = |subject: &str| {
            emitted
                .iter()
                .filter(|(s, ..)| s == subject)
                .collect::<Vec<_>>()
        };
        let changes: Vec<(i64, i64)> = of("events.inventory.stock.changed")
            .iter()
            .map(|(_, e, _)| {
                let c = StockLevelChanged::decode(e.payload.clone()).unwrap();
                (c.previous, c.current)
            })
            .collect();
        // The four orders are handled concurrently, so their order varies; the levels only fall.
        assert_eq!(changes.len(), 7, "{changes:?}");
        assert_eq!(changes[0], (0, 10));
        assert!(changes[1..5].iter().all(|(p, c)| c < p), "{changes:?}");
        assert_eq!(changes[4].1, -1);
        assert_eq!(changes[5..], [(-1, 1), (1, 0)]);
        let lows: Vec<_> = of("events.inventory.stock.low")
            .iter()
            .map(|(_, e, _)| LowStock::decode(e.payload.clone()).unwrap())
            .collect();
        assert_eq!(
            lows.len(),
            1,
            "LowStock once, when the level first fell below 5: {lows:?}"
        );
        assert!(lows[0].level < 5 && lows[0].threshold == 5);
        let outs: Vec<_> = of("events.inventory.stock.out")
            .iter()
            .map(|(_, e, _)| OutOfStock::decode(e.payload.clone()).unwrap().level)
            .collect();
        assert_eq!(outs, [-1, 0], "OutOfStock at each crossing of zero");
        // Emitted events from orders continue the order's trace.
        let (_, event, headers) = of("events.inventory.stock.changed")[1];
        assert_eq!(
            event.content_type,
            "application/protobuf; proto=hookbus.inventory.v1.StockLevelChanged"
        );
        let traceparent = headers.get("traceparent").unwrap().as_str();
        assert!(
            traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{traceparent}"
        );
        app
    })
    .await;
}

#[tokio::test]
async fn a_relay_that_dies_between_publishing_and_marking_does_not_publish_twice() {
    on_both(|app| async move {
        app.put("SKU-4", serde_json::json!({"level": 3}), Some(TOKEN))
            .await;
        assert_eq!(app.emitted(1).await.len(), 1);
        let store =
            hookbus_store::Store::open(&app.database_url, hookbus_inventory::store::migrations())
                .await
                .unwrap();
        // As if the mark never happened: the row is published, but still unsent in the table.
        hookbus_store::sqlx::query("UPDATE outbox SET sent_at = NULL")
            .execute(store.pool())
            .await
            .unwrap();
        let relay = Relay {
            store,
            publisher: app.publisher.clone(),
            wake: Default::default(),
        };
        assert_eq!(
            relay.relay_once().await.unwrap(),
            1,
            "the restarted relay publishes the row again"
        );
        assert_eq!(relay.relay_once().await.unwrap(), 0);
        // relay_once returned after the PubAck, so a second copy would be in the stream by now.
        assert_eq!(
            app.emitted(1).await.len(),
            1,
            "JetStream dropped the repeat (same Nats-Msg-Id)"
        );
        app
    })
    .await;
}

#[tokio::test]
async fn the_stock_api_behaves_as_documented() {
    on_both(|app| async move {
        assert_eq!(app.level("NOPE").await, None);
        assert_eq!(
            app.put("A", serde_json::json!({"level": 3}), None)
                .await
                .status(),
            401
        );
        assert_eq!(
            app.put(
                "A",
                serde_json::json!({"level": 3}),
                Some("wrong-token-000000000")
            )
            .await
            .status(),
            401
        );
        for (body, field) in [
            (serde_json::json!({"level": -1}), "level"),
            (serde_json::json!({"level": "many"}), "level"),
            (
                serde_json::json!({"level": 1, "threshold": -2}),
                "threshold",
            ),
        ] {
            let r = app.put("A", body.clone(), Some(TOKEN)).await;
            assert_eq!(r.status(), 422, "{body}");
            let json: serde_json::Value = r.json().await.unwrap();
            assert!(
                json["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(field),
                "{json}"
            );
        }
        let r = app
            .put(
                "A",
                serde_json::json!({"level": 3, "threshold": 2}),
                Some(TOKEN),
            )
            .await;
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap(),
            serde_json::json!({"sku": "A", "level": 3, "threshold": 2})
        );
        app.put("B", serde_json::json!({"level": 1}), Some(TOKEN))
            .await;
        app.put("C", serde_json::json!({"level": 9}), Some(TOKEN))
            .await;
        let below: serde_json::Value =
            hookbus_testkit::get_json(&app.http, &format!("{}/v1/stock?below=5", app.base)).await;
        let skus: Vec<_> = below["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["sku"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(skus, ["B", "A"], "lowest first, only below 5");
        assert_eq!(
            app.http
                .get(format!("{}/v1/stock?below=x", app.base))
                .send()
                .await
                .unwrap()
                .status(),
            400
        );
        app
    })
    .await;
}

/// `hookbus_inventory_events_applied_total` on the `/metrics` page at `base`.
async fn applied(http: &reqwest::Client, base: &str) -> u64 {
    let text = hookbus_testkit::get_text(http, &format!("{base}/metrics")).await;
    text.lines()
        .find_map(|line| line.strip_prefix("hookbus_inventory_events_applied_total "))
        .unwrap_or_else(|| panic!("no applied counter in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_consumer_and_apply_each_event_once() {
    on_both(|app| async move {
        let (replica, replica_shutdown, replica_handle) = app.replica().await;
        let skus = ["R-0", "R-1", "R-2", "R-3"];
        // 160 orders of one unit over 4 SKUs; every fourth is published again with a new message
        // id (the same event id), so either replica may see either copy.
        for i in 0..160 {
            let (id, order_id) = (format!("r-{i}"), format!("order-r-{i}"));
            app.order(&id, &order_id, &[(skus[i % 4], 1)]).await;
            if i % 4 == 0 {
                let order = OrderCreated {
                    order_id,
                    line_items: vec![LineItem {
                        sku: skus[i % 4].into(),
                        quantity: 1,
                        unit_price: None,
                    }],
                    ..OrderCreated::default()
                };
                app.publish(
                    "order.created",
                    &id,
                    &format!("{id}-again"),
                    "application/json",
                    serde_json::to_vec(&order).unwrap(),
                )
                .await;
            }
        }
        for sku in skus {
            app.wait_level(sku, -40).await;
        }
        // Each change once on EVENTS, though both replicas' relays read the same outbox.
        let emitted = app.emitted(160).await;
        let changed: Vec<_> = emitted
            .iter()
            .filter(|(subject, _, _)| subject == "events.inventory.stock.changed")
            .collect();
        assert_eq!(changed.len(), 160, "{} stock events", emitted.len());
        let causes: std::collections::HashSet<String> = changed
            .iter()
            .map(|(_, event, _)| {
                StockLevelChanged::decode(event.payload.clone())
                    .unwrap()
                    .cause_event_id
            })
            .collect();
        assert_eq!(causes.len(), 160, "one change per order");
        // Both replicas did part of the work, and together each order exactly once.
        let (first, second) = (
            applied(&app.http, &app.base).await,
            applied(&app.http, &replica).await,
        );
        assert_eq!(first + second, 160, "applied {first} + {second}");
        assert!(
            first > 0 && second > 0,
            "one replica did everything: {first} + {second}"
        );
        replica_shutdown.cancel();
        replica_handle.await.unwrap().unwrap();
        app
    })
    .await;
}

/// An HTTP client for the test (reqwest needs the process's rustls provider first).
fn http_client() -> reqwest::Client {
    hookbus_service::install_crypto_provider();
    reqwest::Client::new()
}
