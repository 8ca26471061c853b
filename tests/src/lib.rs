//! Helpers for the end-to-end tests: an in-process ingress on port 0 against a test's own
//! nats-server, signed requests, and reading back what the stream holds.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use hookbus_config::Loader;
use hookbus_ingress::Config;
use hookbus_proto::v1::Event;
use hookbus_testkit::NatsServer;
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An ingress running in this process.
pub struct TestIngress {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), hookbus_service::ServiceError>>,
    pub http: reqwest::Client,
}

impl TestIngress {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs `body` with `headers` to `/webhooks/<source>`.
    pub async fn post(
        &self,
        source: &str,
        headers: &[(String, String)],
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut request = self.http.post(self.url(&format!("/webhooks/{source}")));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.body(body).send().await.expect("ingress answers")
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

/// The configuration from a TOML text (as a file) and environment variables, with `nats.url`
/// pointing at `server`.
pub fn config(server: &NatsServer, toml: &str, env: &[(&str, &str)]) -> Config {
    try_config(server, toml, env).unwrap()
}

pub fn try_config(
    server: &NatsServer,
    toml: &str,
    env: &[(&str, &str)],
) -> Result<Config, hookbus_config::ConfigError> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), toml).unwrap();
    let mut vars: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.push(("NATS_URL".into(), server.url()));
    let loader = Loader::with_env(Some(file.path()), vars)?;
    Config::load(&loader)
}

/// Installs telemetry as the services' mains do (once per process; tests may share one).
pub fn init_telemetry() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        // Leaked on purpose: the pipeline lives as long as the test process.
        if let Ok(guard) = hookbus_telemetry::init("hookbus-test", &Default::default()) {
            std::mem::forget(guard);
        }
    });
}

/// Starts the ingress and waits until `/readyz` says ready.
pub async fn spawn_ingress(config: Config) -> TestIngress {
    init_telemetry();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(hookbus_ingress::run(config, listener, shutdown.clone()));
    hookbus_service::install_crypto_provider();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let ingress = TestIngress {
        addr,
        shutdown,
        handle,
        http,
    };
    wait_for(Duration::from_secs(15), || async {
        matches!(ingress.http.get(ingress.url("/readyz")).send().await, Ok(r) if r.status() == 200)
    })
    .await
    .expect("ingress became ready");
    ingress
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn wait_for<F, Fut>(timeout: Duration, mut condition: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("condition not met within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A message read back from the `EVENTS` stream.
#[derive(Debug, Clone)]
pub struct Stored {
    pub subject: String,
    pub event: Event,
    pub headers: async_nats::HeaderMap,
}

/// Every message in `EVENTS`, in order, read by a new ephemeral consumer.
pub async fn stored_events(nats_url: &str) -> Vec<Stored> {
    let client = async_nats::connect(nats_url).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js.get_stream("EVENTS").await.unwrap();
    let total = stream.info().await.unwrap().state.messages as usize;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        let before = out.len();
        while let Some(message) = batch.next().await {
            let message = message.unwrap();
            out.push(Stored {
                subject: message.subject.to_string(),
                event: Event::decode(message.payload.clone()).unwrap(),
                headers: message.headers.clone().unwrap_or_default(),
            });
        }
        assert!(
            out.len() > before,
            "stream says {total} messages, read {}",
            out.len()
        );
    }
    out
}

/// Current unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
