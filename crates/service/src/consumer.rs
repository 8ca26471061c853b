//! A consumer service's wiring ([`ConsumerApp`]), and the whole process of a consumer written in a
//! few lines ([`run_consumer_from_env`]).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use hookbus_bus::{
    ConsumerError, ConsumerMetrics, ConsumerSpec, Delivery, NatsConfig, Outcome, StartPosition,
    run_batch_consumer, run_consumer,
};
use hookbus_config::{ConfigError, Loader};
use hookbus_store::Store;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::{readyz_of, serve};
use crate::start::{ServiceError, install_crypto_provider, stop_on_signal};

/// What a consumer service's section says about its consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// The section, for the keys errors name (`inventory`).
    pub section: &'static str,
    /// The durable consumer's name.
    pub name: String,
    pub subjects: Vec<String>,
    /// Where it starts when it is created for the first time.
    pub start: StartPosition,
    /// Batches handled at once.
    pub concurrency: usize,
    /// The most events in one batch.
    pub batch_size: usize,
    /// Wait for the broker to confirm each ack.
    pub confirm_acks: bool,
}

impl ConsumerSettings {
    /// Checks the concurrency and the batch size; the error names the key
    /// (`inventory.batch_size`).
    pub fn check(&self) -> Result<(), ConfigError> {
        let key = |name: &str| format!("{}.{name}", self.section);
        if self.concurrency == 0 {
            return Err(ConfigError::invalid(
                key("concurrency"),
                "must be more than 0",
            ));
        }
        hookbus_bus::consumer::check_batch_size(&key("batch_size"), self.batch_size)
    }
}

/// What a consumer service does with a batch: one outcome per delivery, in order.
pub trait BatchHandler: Send + Sync + 'static {
    fn handle(&self, batch: Vec<Delivery>) -> impl Future<Output = Vec<Outcome>> + Send;
}

/// A consumer service's consumer and HTTP shell: the spec from its settings, on the `EVENTS`
/// stream `[nats]` names, resuming from the store's ledger and saving its checkpoints there; the
/// registry the runtime's metrics are in, for the service's own; and [`ConsumerApp::run`], which
/// runs the consumer and serves the service's routes with `/readyz` (database and broker),
/// `/healthz` and `/metrics`.
pub struct ConsumerApp {
    /// The spec, for what a service sets beyond the common settings (`ack_wait`).
    pub spec: ConsumerSpec,
    /// Where the service registers its own metrics.
    pub registry: Registry,
    store: Store,
    client: async_nats::Client,
    service: &'static str,
}

impl ConsumerApp {
    pub fn new(
        settings: &ConsumerSettings,
        nats: &NatsConfig,
        store: &Store,
        client: &async_nats::Client,
    ) -> Self {
        let mut registry = Registry::default();
        let subjects: Vec<&str> = settings.subjects.iter().map(String::as_str).collect();
        let mut spec = ConsumerSpec::new(settings.name.clone(), &subjects)
            .start(settings.start)
            .concurrency(settings.concurrency)
            .batch_size(settings.batch_size)
            .confirm_acks(settings.confirm_acks)
            .metrics(&ConsumerMetrics::register(&mut registry));
        spec.stream = nats.events.clone();
        hookbus_store::track(&mut spec, store.pool());
        Self {
            spec,
            registry,
            store: store.clone(),
            client: client.clone(),
            service: settings.section,
        }
    }

    /// The deliveries of an event before it is dead-lettered: a handler's last attempt.
    pub fn max_deliveries(&self) -> u64 {
        self.spec.max_deliveries as u64
    }

    /// Runs the consumer with `handler` and serves `routes` on `listener` until `shutdown`, then
    /// waits for the consumer to drain.
    pub async fn run<H: BatchHandler>(
        self,
        handler: Arc<H>,
        routes: Router,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ServiceError> {
        let consumer = tokio::spawn(run_batch_consumer(
            self.client.clone(),
            self.spec,
            move |batch| {
                let handler = handler.clone();
                async move { handler.handle(batch).await }
            },
            shutdown.clone(),
        ));
        let app = routes.merge(readyz_of(self.store, self.client));
        serve(
            self.service,
            listener,
            app,
            self.registry,
            shutdown.cancelled_owned(),
        )
        .await?;
        consumer.await??;
        Ok(())
    }
}

/// The whole process of a consumer: `[nats]` from the configuration file (`HOOKBUS_CONFIG`) and
/// the environment (`NATS_URL`), a connection, and [`run_consumer`] until SIGINT or SIGTERM.
pub async fn run_consumer_from_env<H, Fut>(
    spec: ConsumerSpec,
    handler: H,
) -> Result<(), ConsumerError>
where
    H: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let (client, shutdown) = connect_from_env(&spec).await?;
    run_consumer(client, spec, handler, shutdown).await
}

/// [`run_consumer_from_env`] with a batch handler ([`run_batch_consumer`]).
pub async fn run_batch_consumer_from_env<H, Fut>(
    spec: ConsumerSpec,
    handler: H,
) -> Result<(), ConsumerError>
where
    H: Fn(Vec<Delivery>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Outcome>> + Send + 'static,
{
    let (client, shutdown) = connect_from_env(&spec).await?;
    run_batch_consumer(client, spec, handler, shutdown).await
}

/// A connection from `[nats]` and the environment, and a token cancelled by SIGINT or SIGTERM.
async fn connect_from_env(
    spec: &ConsumerSpec,
) -> Result<(async_nats::Client, CancellationToken), ConsumerError> {
    install_crypto_provider();
    let path = Loader::path_from_env(None);
    let nats: NatsConfig = Loader::new(path.as_deref())?.section("nats")?;
    let client = hookbus_bus::connect(&nats, &spec.name).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    Ok((client, shutdown))
}
