//! What a replica's dispatcher, flows, deliveries and API share: the stores, the directory of
//! endpoints, the settings, the HTTP client and the metrics. The work itself is in
//! [`crate::dispatch`], [`crate::flows`], [`crate::delivery`] and [`crate::health`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream::RawMessageErrorKind};
use hookbus_bus::Publisher;
use hookbus_proto::Registry;
use hookbus_proto::egress::v1::DeliveryTask;
use hookbus_proto::v1::Event;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prost::Message;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::config::EgressConfig;
use crate::directory::Directory;
use crate::schedule::RetrySchedule;
use crate::store::{self, StoreError, Stores};
use crate::{AddressPolicy, crypto::SecretBox};

pub use hookbus_bus::unix_seconds as unix_now;

pub fn timestamp(seconds: i64) -> hookbus_proto::Timestamp {
    hookbus_proto::Timestamp { seconds, nanos: 0 }
}

/// Labels of the per-endpoint gauges.
pub type EndpointLabels = Vec<(&'static str, String)>;

#[derive(Clone)]
pub struct Metrics {
    pub attempts: Family<Vec<(&'static str, &'static str)>, Counter>,
    pub latency: Histogram,
    pub dispatched: Counter,
    /// Tasks dead-lettered: retries exhausted, or their event gone.
    pub dead_lettered: Counter,
    pub disabled: Gauge,
    /// Per endpoint, at the replica that owns its partition: tasks waiting in its queue there.
    pub waiting: Family<EndpointLabels, Gauge>,
    /// Per endpoint, at its owner: tasks started and not yet settled.
    pub in_flight: Family<EndpointLabels, Gauge>,
    /// Tasks parked: acked and stored as a schedule because their endpoint had no room.
    pub parked: Counter,
    /// Tasks held because their endpoint is disabled.
    pub held: Counter,
    /// Partitions this replica owns.
    pub partitions_owned: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            attempts: Family::default(),
            latency: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
            ]),
            dispatched: Counter::default(),
            dead_lettered: Counter::default(),
            disabled: Gauge::default(),
            waiting: Family::default(),
            in_flight: Family::default(),
            parked: Counter::default(),
            held: Counter::default(),
            partitions_owned: Gauge::default(),
        }
    }
}

/// Everything a replica's dispatcher, flows and API share.
pub struct Engine {
    pub stores: Stores,
    pub directory: Arc<Directory>,
    pub secrets: Arc<SecretBox>,
    pub settings: EgressConfig,
    pub publisher: Publisher,
    pub metrics: Metrics,
    pub(crate) client: reqwest::Client,
    pub(crate) policy: AddressPolicy,
    pub(crate) schedule: RetrySchedule,
    pub(crate) registry: Registry,
    /// Requests in flight from this replica, all endpoints together.
    pub(crate) global: Arc<Semaphore>,
    /// Since when each endpoint has been failing (unix seconds), as this replica knows it.
    pub(crate) failing_since: Mutex<HashMap<String, i64>>,
    /// Endpoints whose stored failing-since record this replica has cleared since it started.
    pub(crate) known_healthy: Mutex<HashSet<String>>,
    /// Events this replica dispatched lately, read by its deliveries instead of `EVENTS`.
    pub(crate) events: crate::cache::EventCache,
    /// Every delivery, park and hold this replica has started; shutdown waits for them.
    pub(crate) tracker: TaskTracker,
    /// What has been seen on `EVENTS` (the event-type catalogue, the sources).
    pub catalogue: crate::catalogue::Catalogue,
}

/// Deliveries of an event to the dispatcher before it is dead-lettered: with the back-off of
/// [`Engine::dispatch`] (1 s more per attempt, at most 30 s), about eight hours of a broker that
/// cannot take the tasks. A handful, with a short back-off, dead-lettered dispatches during a
/// seconds-long leader election in a cluster.
pub const DISPATCH_MAX_DELIVERIES: i64 = 1000;

/// The consumer name egress dead letters carry (`dlq.egress.egress.tasks.<partition>.<endpoint>`).
pub const DLQ_CONSUMER: &str = "egress";

/// Why a task's event cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// It never will be: the event left `EVENTS` (retention) or is not what the task says.
    #[error("{0}")]
    Gone(String),
    /// Not now: the broker did not answer.
    #[error("{0}")]
    Unavailable(String),
}

impl Engine {
    pub fn new(
        stores: Stores,
        directory: Arc<Directory>,
        secrets: Arc<SecretBox>,
        settings: EgressConfig,
        publisher: Publisher,
        client: reqwest::Client,
    ) -> Arc<Self> {
        Arc::new(Self {
            policy: settings.policy(),
            schedule: settings.schedule(),
            global: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
            registry: Registry::default(),
            failing_since: Mutex::default(),
            known_healthy: Mutex::default(),
            // 64 MiB of payloads, 10,000 events: a few seconds of deliveries at full rate.
            events: crate::cache::EventCache::new(10_000, 64 << 20),
            tracker: TaskTracker::new(),
            catalogue: Default::default(),
            metrics: Metrics {
                disabled: directory.disabled.clone(),
                ..Metrics::default()
            },
            stores,
            directory,
            secrets,
            settings,
            publisher,
            client,
        })
    }

    /// The subject an endpoint's tasks are published on.
    pub fn task_subject(&self, endpoint: &str) -> String {
        store::task_subject(
            store::partition_of(endpoint, self.settings.partitions),
            endpoint,
        )
    }

    /// Publishes a task and waits for its PubAck.
    pub(crate) async fn publish_task(
        &self,
        subject: String,
        task: &DeliveryTask,
        message_id: &str,
        headers: HeaderMap,
    ) -> Result<(), StoreError> {
        let message = jetstream::message::PublishMessage::build()
            .payload(task.encode_to_vec().into())
            .headers(headers)
            .message_id(message_id);
        self.stores
            .js
            .send_publish(subject, message)
            .await
            .map_err(|e| StoreError::new("publish task", e))?
            .await
            .map_err(|e| StoreError::new("publish task", e))?;
        Ok(())
    }

    /// The event a task refers to, from `EVENTS`.
    pub async fn event_at(&self, sequence: u64, id: &str) -> Result<Event, EventError> {
        if let Some(event) = self.events.get(sequence, id) {
            return Ok(event);
        }
        let raw = self
            .stores
            .events
            .get_raw_message(sequence)
            .await
            .map_err(|e| match e.kind() {
                RawMessageErrorKind::NoMessageFound => EventError::Gone(format!(
                    "event {id} (sequence {sequence}) is no longer in EVENTS"
                )),
                _ => EventError::Unavailable(format!(
                    "event {id} (sequence {sequence}) could not be read: {e}"
                )),
            })?;
        let event = Event::decode(raw.payload)
            .map_err(|e| EventError::Gone(format!("event at sequence {sequence}: {e}")))?;
        if event.id != id {
            return Err(EventError::Gone(format!(
                "sequence {sequence} holds event {}, not {id}",
                event.id
            )));
        }
        Ok(event)
    }
}
