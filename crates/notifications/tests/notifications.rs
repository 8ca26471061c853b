//! Notifications against a real nats-server, a real SMTP listener and a real chat-webhook server,
//! with the ledger on SQLite and on the machine's PostgreSQL.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use hookbus_bus::{NatsConfig, Publisher};
use hookbus_config::Loader;
use hookbus_notifications::Config;
use hookbus_proto::commerce::v1::{LineItem, Money, OrderCreated};
use hookbus_proto::inventory::v1::LowStock;
use hookbus_proto::v1::Event;
use hookbus_store::testing::{drop_postgres_database, fresh_postgres_database};
use hookbus_testkit::{NatsServer, SmtpServer};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A chat incoming-webhook: records each JSON body and its arrival, answers `status`.
#[derive(Clone, Default)]
struct Chat {
    posts: Arc<Mutex<Vec<(Instant, serde_json::Value)>>>,
    status: Arc<AtomicU16>,
}

impl Chat {
    async fn start(status: u16) -> (Self, String) {
        let chat = Self::default();
        chat.status.store(status, Ordering::SeqCst);
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    |State(chat): State<Chat>, Json(body): Json<serde_json::Value>| async move {
                        chat.posts.lock().unwrap().push((Instant::now(), body));
                        StatusCode::from_u16(chat.status.load(Ordering::SeqCst)).unwrap()
                    },
                ),
            )
            .with_state(chat.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (chat, url)
    }

    fn posts(&self) -> Vec<(Instant, serde_json::Value)> {
        self.posts.lock().unwrap().clone()
    }
}

async fn wait_for<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    hookbus_testkit::wait_for(Duration::from_secs(20), what, check).await
}

struct Running {
    _server: NatsServer,
    nats_url: String,
    client: async_nats::Client,
    publisher: Publisher,
    base: String,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), hookbus_service::ServiceError>>,
}

/// Runs notifications on the server at `nats_url`: its base URL, and what stops it.
async fn spawn_service(
    nats_url: &str,
    database_url: &str,
    toml: &str,
) -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), hookbus_service::ServiceError>>,
) {
    let loader = Loader::with_env(None, Vec::new())
        .unwrap()
        .with_defaults(&format!(
            "[nats]\nurl = \"{nats_url}\"\n[notifications]\ndatabase_url = \"{database_url}\"\nconcurrency = 1\n{toml}"
        ));
    let config = Config::load(&loader).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(hookbus_notifications::run(
        config,
        listener,
        shutdown.clone(),
    ));
    (base, shutdown, handle)
}

impl Running {
    /// Notifications configured by `toml` (the `[notifications]` section's body) on a fresh server.
    async fn start(database_url: &str, toml: &str) -> Self {
        let server = NatsServer::start();
        let (base, shutdown, handle) = spawn_service(&server.url(), database_url, toml).await;
        let nats = NatsConfig {
            url: server.url(),
            ..NatsConfig::default()
        };
        let client = hookbus_bus::connect(&nats, "test").await.unwrap();
        let publisher = Publisher::new(client.clone(), 64);
        let js = jetstream::new(client.clone());
        // The consumer starts at `new`: wait until it exists before publishing.
        wait_for("the notifications consumer", async || {
            js.get_stream("EVENTS")
                .await
                .ok()?
                .get_consumer::<consumer::pull::Config>("notifications")
                .await
                .ok()
        })
        .await;
        Self {
            nats_url: server.url(),
            _server: server,
            client,
            publisher,
            base,
            shutdown,
            handle,
        }
    }

    async fn publish<M: hookbus_proto::Named>(
        &self,
        source: &str,
        event_type: &str,
        id: &str,
        msg_id: &str,
        message: &M,
    ) {
        let content_type = hookbus_proto::content_type_for::<M>();
        self.publish_raw(
            source,
            event_type,
            id,
            msg_id,
            &content_type,
            message.encode_to_vec(),
        )
        .await;
    }

    async fn publish_raw(
        &self,
        source: &str,
        event_type: &str,
        id: &str,
        msg_id: &str,
        content_type: &str,
        payload: Vec<u8>,
    ) {
        let event = Event {
            id: id.into(),
            source: source.into(),
            r#type: event_type.into(),
            content_type: content_type.into(),
            payload: payload.into(),
            ..Event::default()
        };
        self.publisher
            .publish_event(
                format!("events.{source}.{event_type}"),
                &event,
                msg_id,
                Instant::now() + Duration::from_secs(5),
                &Default::default(),
            )
            .await
            .unwrap();
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

fn order(order_id: &str, email: &str) -> OrderCreated {
    OrderCreated {
        order_id: order_id.into(),
        line_items: vec![LineItem {
            sku: "SKU-1".into(),
            quantity: 2,
            unit_price: Some(Money {
                currency: "EUR".into(),
                amount_minor: 625,
            }),
        }],
        total: Some(Money {
            currency: "EUR".into(),
            amount_minor: 1250,
        }),
        customer_email: email.into(),
        created_at: None,
    }
}

fn rules(smtp_url: &str, chat_url: &str) -> String {
    format!(
        r#"
max_deliveries = 3
retry_backoff = ["300ms", "600ms"]
[notifications.smtp]
url = "{smtp_url}"
from = "Shop <shop@example.com>"
[notifications.rules.confirm]
subjects = ["events.*.order.created", "events.*.orders.create"]
channel = "email"
to = "{{{{ order.customer_email }}}}"
subject = "Order {{{{ order.id }}}} confirmed"
template = """Thank you! Total {{{{ order.total.amount }}}} {{{{ order.total.currency }}}}.
{{% for item in order.line_items %}}{{{{ item.quantity }}}} x {{{{ item.sku }}}}
{{% endfor %}}"""
[notifications.rules.ops]
subjects = ["events.inventory.stock.low"]
channel = "webhook"
url = "{chat_url}"
template = "Low stock: {{{{ payload.sku }}}} at {{{{ payload.level }}}} (threshold {{{{ payload.threshold }}}})"
[notifications.rules.typo]
subjects = ["events.*.typo.test"]
channel = "log"
template = "{{{{ payload.missing }}}}"
[notifications.rules.typo_ok]
subjects = ["events.*.typo.test"]
channel = "log"
template = "{{{{ event.type }}}} seen"
"#
    )
}

async fn sends_once(database_url: &str) {
    let smtp = SmtpServer::start();
    let (chat, chat_url) = Chat::start(200).await;
    let running = Running::start(database_url, &rules(&smtp.url(), &chat_url)).await;

    // order.created → a rendered confirmation email.
    running
        .publish(
            "shop",
            "order.created",
            "order-1",
            "m1",
            &order("1001", "ada@example.com"),
        )
        .await;
    let mails = smtp.wait_for(1, Duration::from_secs(20)).unwrap();
    let mail = &mails[0];
    assert_eq!(mail.to, ["ada@example.com"]);
    assert_eq!(mail.from, "shop@example.com");
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Order 1001 confirmed")
    );
    assert_eq!(mail.header("To").as_deref(), Some("ada@example.com"));
    assert_eq!(
        mail.body().trim_end(),
        "Thank you! Total 12.50 EUR.\r\n2 x SKU-1"
    );

    // LowStock → a JSON post to the chat webhook.
    let low = LowStock {
        sku: "SKU-1".into(),
        level: 3,
        threshold: 5,
        cause_event_id: "order-1".into(),
    };
    running
        .publish("inventory", "stock.low", "low-1", "l1", &low)
        .await;
    let posts = wait_for("the chat post", async || {
        let posts = chat.posts();
        (!posts.is_empty()).then_some(posts)
    })
    .await;
    assert_eq!(
        posts[0].1,
        serde_json::json!({"text": "Low stock: SKU-1 at 3 (threshold 5)"})
    );

    // The same events again (new message ids, same event ids), then a new order: only the new
    // order is sent. Concurrency is 1, so it is handled after the repeats.
    running
        .publish(
            "shop",
            "order.created",
            "order-1",
            "m1-again",
            &order("1001", "ada@example.com"),
        )
        .await;
    running
        .publish("inventory", "stock.low", "low-1", "l1-again", &low)
        .await;
    running
        .publish(
            "shop",
            "order.created",
            "order-2",
            "m2",
            &order("1002", "bob@example.com"),
        )
        .await;
    let mails = smtp.wait_for(2, Duration::from_secs(20)).unwrap();
    assert_eq!(mails.len(), 2, "a recorded send was repeated: {mails:?}");
    assert_eq!(mails[1].to, ["bob@example.com"]);
    assert_eq!(chat.posts().len(), 1, "a recorded chat post was repeated");

    // The ledger, over HTTP.
    let sent: serde_json::Value = hookbus_testkit::json_of(
        http_client().get(format!("{}/v1/sent?event_id=order-1", running.base)),
    )
    .await;
    let items = sent["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{sent}");
    assert_eq!(items[0]["rule"], "confirm");
    assert_eq!(items[0]["channel"], "email");
    assert_eq!(items[0]["recipient"], "ada@example.com");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_sends_an_email_and_low_stock_a_chat_post_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    sends_once(&format!(
        "sqlite://{}",
        dir.path().join("notifications.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_sends_an_email_and_low_stock_a_chat_post_once_on_postgres() {
    let url = fresh_postgres_database().await.unwrap();
    sends_once(&url).await;
    drop_postgres_database(&url).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_channels_are_retried_with_backoff_then_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("n.db").display());
    let smtp = SmtpServer::start();
    smtp.refuse_with(451);
    let (chat, chat_url) = Chat::start(500).await;
    let running = Running::start(&database_url, &rules(&smtp.url(), &chat_url)).await;
    let js = jetstream::new(running.client.clone());

    running
        .publish(
            "inventory",
            "stock.low",
            "low-9",
            "l9",
            &LowStock {
                sku: "SKU-9".into(),
                level: 1,
                threshold: 5,
                cause_event_id: String::new(),
            },
        )
        .await;
    running
        .publish(
            "shop",
            "order.created",
            "order-9",
            "m9",
            &order("1009", "eve@example.com"),
        )
        .await;
    // A template that reads a value the event does not have: rejected at once, naming the rule.
    running
        .publish("shop", "typo.test", "typo-1", "t1", &LowStock::default())
        .await;

    // A Shopify order whose line has no SKU: the rule that uses `order` is rejected at once, and
    // says why the order is missing.
    running
        .publish_raw(
            "shop",
            "orders.create",
            "bad-order",
            "b1",
            "application/json",
            br#"{"id": 7, "email": "x@example.com", "currency": "EUR", "total_price": "1.00", "line_items": [{"quantity": 1}]}"#.to_vec(),
        )
        .await;

    let letters = wait_for("four dead letters", async || {
        let letters = hookbus_bus::dlq::list(&js, Some("notifications"), 10)
            .await
            .ok()?;
        (letters.len() == 4).then_some(letters)
    })
    .await;
    let reason_of = |event_id: &str| {
        let letter = letters
            .iter()
            .find(|l| l.event_id.as_deref() == Some(event_id))
            .unwrap_or_else(|| panic!("no dead letter for {event_id}: {letters:?}"));
        (letter.reason.clone(), letter.attempts.clone())
    };
    let (reason, attempts) = reason_of("low-9");
    assert!(
        reason.contains("rule ops") && reason.contains("500"),
        "{reason}"
    );
    assert!(reason.contains("gave up after 3 deliveries"), "{reason}");
    assert_eq!(attempts, "3");
    let (reason, attempts) = reason_of("order-9");
    assert!(
        reason.contains("rule confirm") && reason.contains("451"),
        "{reason}"
    );
    assert_eq!(attempts, "3");
    let (reason, attempts) = reason_of("typo-1");
    assert!(
        reason.contains("notifications.rules.typo.template") && reason.contains("undefined"),
        "{reason}"
    );
    assert!(!reason.contains("typo_ok"), "{reason}");
    assert_eq!(attempts, "1");
    // The other rule on the same event was sent and recorded all the same.
    let sent: serde_json::Value = hookbus_testkit::json_of(
        http_client().get(format!("{}/v1/sent?event_id=typo-1", running.base)),
    )
    .await;
    assert_eq!(sent["items"][0]["rule"], "typo_ok", "{sent}");
    let (reason, attempts) = reason_of("bad-order");
    assert!(
        reason.contains("notifications.rules.confirm.")
            && reason.contains("order is undefined")
            && reason.contains("line_items[0].sku"),
        "{reason}"
    );
    assert_eq!(attempts, "1");

    // Three posts, each after the back-off: 300 ms, then 600 ms.
    let posts = chat.posts();
    assert_eq!(posts.len(), 3, "{posts:?}");
    let gaps: Vec<Duration> = posts.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps[0] >= Duration::from_millis(300), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(600), "{gaps:?}");
    assert!(smtp.mails().is_empty());
    running.stop().await;
}

#[tokio::test]
async fn a_template_syntax_error_stops_start_up_naming_the_rule() {
    let loader = Loader::with_env(None, Vec::new()).unwrap().with_defaults(
        r#"
[nats]
url = "nats://127.0.0.1:1"
[notifications.rules.broken_rule]
subjects = ["events.*.order.created"]
channel = "log"
template = "Order {{ order.id "
"#,
    );
    let config = Config::load(&loader).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = hookbus_notifications::run(config, listener, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("notifications.rules.broken_rule.template")
            && error.contains("syntax error"),
        "{error}"
    );
}

#[test]
fn configuration_errors_name_the_key() {
    let load = |toml: &str| {
        let loader = Loader::with_env(None, Vec::new())
            .unwrap()
            .with_defaults(toml);
        Config::load(&loader).map(|_| ()).unwrap_err().to_string()
    };
    let email_without_smtp = load(
        "[notifications.rules.mail]\nsubjects = [\"events.*.order.created\"]\nchannel = \"email\"\nto = \"x@example.com\"\ntemplate = \"hi\"\n",
    );
    assert!(
        email_without_smtp.contains("notifications.smtp.url"),
        "{email_without_smtp}"
    );
    let webhook_without_url = load(
        "[notifications.rules.chat]\nsubjects = [\"events.*.x\"]\nchannel = \"webhook\"\ntemplate = \"hi\"\n",
    );
    assert!(
        webhook_without_url.contains("notifications.rules.chat.url"),
        "{webhook_without_url}"
    );
    let bad_subject = load(
        "[notifications.rules.r]\nsubjects = [\"events.>.x\"]\nchannel = \"log\"\ntemplate = \"hi\"\n",
    );
    assert!(
        bad_subject.contains("notifications.rules.r.subjects"),
        "{bad_subject}"
    );
    let unknown_channel = load(
        "[notifications.rules.r]\nsubjects = [\"events.*.x\"]\nchannel = \"pager\"\ntemplate = \"hi\"\n",
    );
    assert!(unknown_channel.contains("pager"), "{unknown_channel}");
}

/// An HTTP client for the test (reqwest needs the process's rustls provider first).
fn http_client() -> reqwest::Client {
    hookbus_service::install_crypto_provider();
    reqwest::Client::new()
}

/// A consumer deleted on the server while an event waits out a long retry, and a process that
/// restarts after that: it resumes at the saved ack floor, below the waiting event, not after the
/// highest event it finished, so the waiting event is still sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_waiting_for_a_retry_survives_a_deleted_consumer_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("n.db").display());
    let (chat, chat_url) = Chat::start(500).await;
    let toml = format!(
        r#"
retry_backoff = ["60s"]
[notifications.rules.ops]
subjects = ["events.inventory.stock.low"]
channel = "webhook"
url = "{chat_url}"
template = "low: {{{{ payload.sku }}}}"
[notifications.rules.seen]
subjects = ["events.*.ping.test"]
channel = "log"
template = "{{{{ event.id }}}}"
"#
    );
    let mut running = Running::start(&database_url, &toml).await;
    let ping = LowStock::default();
    // W (settled), then A (fails, waits 60 s), then B (settled, the highest finished event).
    running.publish("shop", "ping.test", "w", "w", &ping).await;
    running
        .publish(
            "inventory",
            "stock.low",
            "a",
            "a",
            &LowStock {
                sku: "SKU-A".into(),
                ..LowStock::default()
            },
        )
        .await;
    running.publish("shop", "ping.test", "b", "b", &ping).await;
    let store =
        hookbus_store::Store::open(&database_url, hookbus_notifications::store::migrations())
            .await
            .unwrap();
    wait_for("B sent and the floor at W saved", async || {
        let b = hookbus_store::last_sequence(store.pool(), "notifications")
            .await
            .ok()??;
        let floor = hookbus_store::checkpoint(store.pool(), "notifications")
            .await
            .ok()??;
        (b == 3 && floor == 1).then_some(())
    })
    .await;
    assert_eq!(chat.posts().len(), 1, "A failed once and waits");

    // Stop the process, delete its consumer on the server, heal the webhook, start again.
    running.shutdown.cancel();
    (&mut running.handle).await.unwrap().unwrap();
    let js = jetstream::new(running.client.clone());
    js.get_stream("EVENTS")
        .await
        .unwrap()
        .delete_consumer("notifications")
        .await
        .unwrap();
    chat.status.store(200, Ordering::SeqCst);
    let (base, shutdown, handle) = spawn_service(&running.nats_url, &database_url, &toml).await;
    running.base = base;
    running.shutdown = shutdown;
    running.handle = handle;

    let posts = wait_for("A delivered after the restart", async || {
        let posts = chat.posts();
        (posts.len() == 2).then_some(posts)
    })
    .await;
    assert_eq!(posts[1].1, serde_json::json!({"text": "low: SKU-A"}));
    let sent: serde_json::Value =
        hookbus_testkit::json_of(http_client().get(format!("{}/v1/sent?event_id=b", running.base)))
            .await;
    assert_eq!(
        sent["items"].as_array().unwrap().len(),
        1,
        "B is not sent again"
    );
    running.stop().await;
}

/// A chat webhook that holds each post 100 ms, counts the posts it holds at once, and fails the
/// first post for order `n-3`.
#[derive(Clone, Default)]
struct SlowChat {
    texts: Arc<Mutex<Vec<String>>>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    most_at_once: Arc<std::sync::atomic::AtomicUsize>,
    failed: Arc<std::sync::atomic::AtomicBool>,
}

async fn batch_sends_in_parallel(database_url: &str) {
    let chat = SlowChat::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State(chat): State<SlowChat>, Json(body): Json<serde_json::Value>| async move {
                    let now = chat.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    chat.most_at_once.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    chat.in_flight.fetch_sub(1, Ordering::SeqCst);
                    let text = body["text"].as_str().unwrap_or_default().to_owned();
                    chat.texts.lock().unwrap().push(text.clone());
                    if text == "n-3" && !chat.failed.swap(true, Ordering::SeqCst) {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    StatusCode::OK
                },
            ),
        )
        .with_state(chat.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Twenty orders wait on the stream before the service starts, so they come as a batch.
    let server = NatsServer::start();
    let client = hookbus_bus::connect(
        &NatsConfig {
            url: server.url(),
            ..NatsConfig::default()
        },
        "test",
    )
    .await
    .unwrap();
    let publisher = Publisher::new(client.clone(), 64);
    hookbus_bus::ensure_events_stream(publisher.jetstream(), &Default::default())
        .await
        .unwrap();
    for n in 0..20 {
        let event = Event {
            id: format!("evt-n-{n}"),
            source: "shop".into(),
            r#type: "order.created".into(),
            content_type: "application/json".into(),
            payload: serde_json::to_vec(&order(&format!("n-{n}"), "buyer@example.com"))
                .unwrap()
                .into(),
            ..Event::default()
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
    let toml = format!(
        "start = \"all\"\nbatch_size = 64\nmax_deliveries = 3\nretry_backoff = [\"200ms\"]\n\
         [notifications.rules.chat]\nsubjects = [\"events.*.order.created\"]\nchannel = \"webhook\"\n\
         url = \"{url}\"\ntemplate = \"{{{{ order.id }}}}\"\n"
    );
    let (base, shutdown, handle) = spawn_service(&server.url(), database_url, &toml).await;

    // Every order posted; n-3 twice (its first post failed), the others once.
    let js = jetstream::new(client.clone());
    wait_for("every post, and the retry", async || {
        (chat.texts.lock().unwrap().len() >= 21).then_some(())
    })
    .await;
    wait_for("everything acked", async || {
        let mut consumer = js
            .get_stream("EVENTS")
            .await
            .ok()?
            .get_consumer::<consumer::pull::Config>("notifications")
            .await
            .ok()?;
        let info = consumer.info().await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await;
    let texts = chat.texts.lock().unwrap().clone();
    for n in 0..20 {
        let posts = texts.iter().filter(|t| **t == format!("n-{n}")).count();
        assert_eq!(posts, if n == 3 { 2 } else { 1 }, "n-{n} in {texts:?}");
    }
    assert!(
        chat.most_at_once.load(Ordering::SeqCst) > 1,
        "a batch's posts ran in parallel"
    );
    // Each send recorded once, as it completed.
    let sent: serde_json::Value =
        hookbus_testkit::json_of(http_client().get(format!("{base}/v1/sent?limit=100"))).await;
    assert_eq!(sent["items"].as_array().unwrap().len(), 20);
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_batch_sends_in_parallel_and_only_the_failed_send_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    batch_sends_in_parallel(&format!(
        "sqlite://{}",
        dir.path().join("notifications.db").display()
    ))
    .await;
    let postgres = fresh_postgres_database()
        .await
        .expect("the machine's PostgreSQL");
    batch_sends_in_parallel(&postgres).await;
    drop_postgres_database(&postgres).await.unwrap();
}
