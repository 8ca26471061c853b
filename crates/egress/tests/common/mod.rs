//! What the egress service tests share: an egress on a fresh nats-server, HTTP receivers on
//! 127.0.0.1 that record what they get, and calls to the management API.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hookbus_egress::{Config, EgressConfig, Lookup, SystemLookup};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-token-0123456789";
/// 32 bytes of 7, base64.
pub const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// The settings tests start from: private networks open, a short retry schedule.
pub fn settings() -> EgressConfig {
    EgressConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        api_token: Some(TOKEN.into()),
        encryption_key: Some(KEY.into()),
        allow_private_networks: true,
        request_timeout: Duration::from_secs(5),
        retry_schedule: vec![Duration::from_millis(400), Duration::from_millis(800)],
        retry_jitter: 0.2,
        start: hookbus_bus::StartPosition::All,
        ..EgressConfig::default()
    }
}

pub fn config(nats_url: &str, egress: EgressConfig) -> Config {
    Config {
        nats: hookbus_bus::NatsConfig {
            url: nats_url.to_owned(),
            ..Default::default()
        },
        telemetry: Default::default(),
        service: egress,
    }
}

pub fn http() -> reqwest::Client {
    hookbus_service::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// One egress `run` in this process.
pub struct Egress {
    pub base: String,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<Result<(), hookbus_service::ServiceError>>,
    pub client: reqwest::Client,
}

impl Egress {
    pub async fn start(nats_url: &str, settings: EgressConfig) -> Self {
        Self::start_with_lookup(nats_url, settings, Arc::new(SystemLookup)).await
    }

    pub async fn start_with_lookup(
        nats_url: &str,
        settings: EgressConfig,
        lookup: Arc<dyn Lookup>,
    ) -> Self {
        Self::start_config(config(nats_url, settings), lookup).await
    }

    /// An egress with a whole configuration (as `Config::load` reads it).
    pub async fn start_config(config: Config, lookup: Arc<dyn Lookup>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(hookbus_egress::run_with_lookup(
            config,
            listener,
            lookup,
            shutdown.clone(),
        ));
        let egress = Self {
            base,
            shutdown,
            handle,
            client: http(),
        };
        egress.wait_ready().await;
        egress
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                && r.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "egress not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("egress stops")
            .unwrap()
            .unwrap();
    }

    /// A management call with the token; the status and the JSON answer (null when empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Creates an endpoint; returns (id, secret).
    pub async fn endpoint(&self, body: Value) -> (String, String) {
        let (status, created) = self.call("POST", "/v1/endpoints", Some(body)).await;
        assert_eq!(status, 201, "{created}");
        (
            created["id"].as_str().unwrap().to_owned(),
            created["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// Sends a message; returns its id.
    pub async fn message(&self, event_type: &str, payload: Value, tenant: Option<&str>) -> String {
        let mut body = json!({"event_type": event_type, "payload": payload});
        if let Some(tenant) = tenant {
            body["tenant"] = json!(tenant);
        }
        let (status, answer) = self.call("POST", "/v1/messages", Some(body)).await;
        assert_eq!(status, 202, "{answer}");
        answer["id"].as_str().unwrap().to_owned()
    }

    pub async fn is_disabled(&self, endpoint: &str) -> bool {
        let (_, record) = self
            .call("GET", &format!("/v1/endpoints/{endpoint}"), None)
            .await;
        record["disabled"] == true
    }

    /// Every attempt of the endpoint, newest first, read a page at a time.
    pub async fn attempts(&self, endpoint: &str) -> Vec<Value> {
        self.every(&format!("/v1/endpoints/{endpoint}/attempts?limit=250"))
            .await
    }

    /// Every item of a paginated list, following its `iterator` until `done`.
    pub async fn every(&self, list: &str) -> Vec<Value> {
        self.pages(list).await.into_iter().flatten().collect()
    }

    /// The pages of a paginated list (`list` may set `limit`): each page's items, following the
    /// `iterator` until `done`, which comes with no iterator.
    pub async fn pages(&self, list: &str) -> Vec<Vec<Value>> {
        let mut pages = Vec::new();
        let mut path = list.to_owned();
        loop {
            let (status, answer) = self.call("GET", &path, None).await;
            assert_eq!(status, 200, "{path}: {answer}");
            pages.push(answer["items"].as_array().unwrap().clone());
            if answer["done"] == true {
                assert!(answer["iterator"].is_null(), "{answer}");
                return pages;
            }
            let iterator = answer["iterator"]
                .as_str()
                .expect("an iterator unless done");
            let separator = if list.contains('?') { '&' } else { '?' };
            path = format!("{list}{separator}iterator={iterator}");
        }
    }

    /// The OpenAPI document the egress serves.
    pub async fn openapi(&self) -> Value {
        hookbus_testkit::get_json(&self.client, &format!("{}/openapi.json", self.base)).await
    }
}

/// A value from an egress's `/metrics` (0 when absent).
pub async fn metric(egress: &Egress, series: &str) -> f64 {
    let metrics =
        hookbus_testkit::get_text(&egress.client, &format!("{}/metrics", egress.base)).await;
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// One request as a receiver saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Hit {
    pub fn id(&self) -> String {
        self.headers["webhook-id"].to_str().unwrap().to_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Checks the signature with the `standardwebhooks` crate.
    pub fn verifies_with(&self, secret: &str) -> bool {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&self.body, &self.headers)
            .is_ok()
    }
}

/// What a receiver answers to its n-th request (0-based).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// Counts a request out of flight when dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

type Behaviour = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

/// An HTTP receiver on 127.0.0.1 (or another loopback address).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    in_flight: Arc<AtomicUsize>,
    pub most_in_flight: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn ok() -> Self {
        Self::start(|_| Reply::status(200)).await
    }

    pub async fn start(behaviour: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_on("127.0.0.1", behaviour).await
    }

    pub async fn start_on(
        address: &str,
        behaviour: impl Fn(usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let behaviour: Behaviour = Arc::new(behaviour);
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most_in_flight = Arc::new(AtomicUsize::new(0));
        let (record, current, most) = (hits.clone(), in_flight.clone(), most_in_flight.clone());
        let app = axum::Router::new().fallback(move |headers: http::HeaderMap, body: Bytes| {
            let (record, current, most, behaviour) = (
                record.clone(),
                current.clone(),
                most.clone(),
                behaviour.clone(),
            );
            async move {
                let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Out of flight when answered, or when the sender went away mid-request (the
                // server drops the handler then).
                let _in_flight = InFlight(current.clone());
                let index = {
                    let mut hits = record.lock().unwrap();
                    hits.push(Hit {
                        headers,
                        body,
                        at: Instant::now(),
                    });
                    hits.len() - 1
                };
                let reply = behaviour(index);
                tokio::time::sleep(reply.delay).await;
                let mut response = http::Response::builder().status(reply.status);
                for (name, value) in reply.headers {
                    response = response.header(name, value);
                }
                response.body(axum::body::Body::from("ok")).unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind(format!("{address}:0"))
            .await
            .unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            hits,
            in_flight,
            most_in_flight,
        }
    }

    /// A receiver holding what all of `receivers` got (for checks over them together).
    pub fn merged(receivers: &[Receiver]) -> Self {
        let hits: Vec<Hit> = receivers.iter().flat_map(Receiver::hits).collect();
        Self {
            url: String::new(),
            hits: Arc::new(Mutex::new(hits)),
            in_flight: Arc::default(),
            most_in_flight: Arc::default(),
        }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    /// Waits until `n` requests arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Hit> {
        let deadline = Instant::now() + timeout;
        loop {
            let hits = self.hits();
            if hits.len() >= n {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "{} got {} requests, expected {n}",
                self.url,
                hits.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits until `check` holds; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    hookbus_testkit::wait_until(timeout, what, async || check().await).await
}

/// The events on `subject` in `EVENTS`, decoded.
pub async fn events_on(nats_url: &str, subject: &str) -> Vec<hookbus_proto::v1::Event> {
    use futures_util::StreamExt;
    use prost::Message;
    let client = async_nats::connect(nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("EVENTS").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: subject.to_owned(),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut found = Vec::new();
    let mut batch = consumer
        .fetch()
        .max_messages(1000)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .unwrap();
    while let Some(Ok(message)) = batch.next().await {
        found.push(hookbus_proto::v1::Event::decode(message.payload.clone()).unwrap());
    }
    found
}

/// Polls `check` until it gives a value; panics with `what` after `timeout`.
pub async fn until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A receiver that answers `failing` until it is fixed (the flag set), then 200.
pub async fn fixable(failing: u16) -> (Receiver, Arc<std::sync::atomic::AtomicBool>) {
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = fixed.clone();
    let receiver = Receiver::start(move |_| {
        Reply::status(if flag.load(Ordering::SeqCst) {
            200
        } else {
            failing
        })
    })
    .await;
    (receiver, fixed)
}
