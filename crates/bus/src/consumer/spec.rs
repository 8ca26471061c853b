//! What a consumer is made of: its settings ([`ConsumerSpec`]), where it starts, what a handler
//! gets ([`Delivery`]) and what it answers ([`Outcome`]).

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer;
use hookbus_proto::v1::Event;

/// What a handler decided about one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; the effect is durable.
    Ack,
    /// Not now: deliver again no sooner than `after` (dead-lettered if this was the last allowed
    /// delivery).
    Retry { after: Duration },
    /// Never: dead-letter with `reason`, no redelivery.
    Reject { reason: String },
}

impl Outcome {
    /// A retry after `after`, or, when `attempt` is the last of `max_deliveries`, a rejection
    /// that names `cause` (the runtime's own dead letter would only say that it kept failing).
    pub fn retry_unless_last(
        attempt: u64,
        max_deliveries: u64,
        after: Duration,
        cause: impl std::fmt::Display,
    ) -> Self {
        if attempt >= max_deliveries {
            Self::Reject {
                reason: format!("{cause} (gave up after {attempt} deliveries)"),
            }
        } else {
            Self::Retry { after }
        }
    }
}

/// Where a consumer created for the first time starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// Only events published after it is created: the creation time (this process's clock) is
    /// stored as the consumer's start time, so a new consumer leader starts at the same place.
    New,
    /// Everything the stream holds.
    All,
    /// Events published at or after this unix time (seconds).
    At(i64),
    /// After this stream sequence (what a store last recorded).
    AfterSequence(u64),
}

/// A start position that is not `new`, `all` or an RFC 3339 time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not new, all or an RFC 3339 time (2026-11-28T00:00:00Z)")]
pub struct StartPositionError(pub String);

impl std::str::FromStr for StartPosition {
    type Err = StartPositionError;

    /// `new`, `all`, or an RFC 3339 time (events published at or after it). `AfterSequence` is
    /// not configurable: it is what a store's resume point gives.
    fn from_str(text: &str) -> Result<Self, StartPositionError> {
        match text.trim() {
            "new" => Ok(Self::New),
            "all" => Ok(Self::All),
            other => {
                time::OffsetDateTime::parse(other, &time::format_description::well_known::Rfc3339)
                    .map(|t| Self::At(t.unix_timestamp()))
                    .map_err(|_| StartPositionError(other.to_owned()))
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for StartPosition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <String as serde::Deserialize>::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One delivery handed to a handler.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: Event,
    pub subject: String,
    pub stream_sequence: u64,
    /// 1 on the first delivery.
    pub attempt: u64,
    pub headers: HeaderMap,
}

/// Saves the server's ack floor, as the runtime sees it every few seconds, where `resume_point`
/// can read it back.
pub type Checkpoint =
    Arc<dyn Fn(u64) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

/// Returns the last stream sequence a store recorded, used to resume a consumer that was deleted.
pub type ResumePoint =
    Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Option<u64>> + Send + Sync>;

/// A consumer's settings.
#[derive(Clone)]
pub struct ConsumerSpec {
    /// Durable name; also the token in `dlq.<name>.…`.
    pub name: String,
    /// Subjects on `EVENTS`, with wildcards (`events.*.order.created`, `events.github.>`).
    pub filter_subjects: Vec<String>,
    pub start: StartPosition,
    /// Handlers running at once (each on one batch).
    pub concurrency: usize,
    /// The most messages one batch handler gets ([`crate::run_batch_consumer`]): those already
    /// pulled, never waited for, so a batch at low load is one message. [`crate::run_consumer`]
    /// hands over one message at a time whatever this says.
    pub batch_size: usize,
    /// Deliveries before a failing message is dead-lettered.
    pub max_deliveries: i64,
    /// The server's limit on delivered, unacknowledged messages. A message NAK'd with a delay
    /// counts against it until it is redelivered, so it must be well above what the runtime holds
    /// (`2 × concurrency × batch_size`), or a run of retries stalls the consumer.
    pub max_ack_pending: i64,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Delay before redelivery after the n-th failure (the last entry repeats).
    pub backoff: Vec<Duration>,
    /// Send in-progress acks while a handler runs (every third of `ack_wait`).
    pub progress_acks: bool,
    /// Wait for the server to confirm each ack (a round trip per message; a batch's acks are
    /// confirmed together). Off: plain acks, written without waiting, and settled once per batch
    /// (one flush: the server has read them when the batch is done). Turn it off only where a
    /// message delivered again after a lost ack is harmless to the handler, because it finds its
    /// work already done (a ledger, a dedup marker).
    pub confirm_acks: bool,
    /// How long shutdown waits for running handlers before NAKing them.
    pub drain_timeout: Duration,
    /// Where the caller's store says processing got to (see [`StartPosition::AfterSequence`]).
    pub resume_point: Option<ResumePoint>,
    /// Where the runtime hands the server's ack floor to the caller's store.
    pub checkpoint: Option<Checkpoint>,
    /// The `EVENTS` settings to provision with (`[nats.events]`); `DLQ` gets the same replicas.
    pub stream: crate::StreamSettings,
    /// Where the counts go (see [`crate::ConsumerMetrics::register`]).
    pub metrics: crate::ConsumerMetrics,
}

impl std::fmt::Debug for ConsumerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerSpec")
            .field("name", &self.name)
            .field("filter_subjects", &self.filter_subjects)
            .field("start", &self.start)
            .field("concurrency", &self.concurrency)
            .field("batch_size", &self.batch_size)
            .field("confirm_acks", &self.confirm_acks)
            .field("max_deliveries", &self.max_deliveries)
            .field("ack_wait", &self.ack_wait)
            .finish_non_exhaustive()
    }
}

/// Checks a service's `batch_size` setting (`key` names it in the error): 1 to 1,000.
pub fn check_batch_size(key: &str, batch_size: usize) -> Result<(), hookbus_config::ConfigError> {
    if (1..=1000).contains(&batch_size) {
        Ok(())
    } else {
        Err(hookbus_config::ConfigError::invalid(
            key,
            "must be 1 to 1000",
        ))
    }
}

impl ConsumerSpec {
    /// Defaults: start `new`, 16 handlers, batches of up to 64, confirmed acks, 5 deliveries,
    /// 10,000 unacknowledged at the server, 30 s ack wait, back-off 1 s, 5 s, 30 s, 2 min.
    pub fn new(name: impl Into<String>, filter_subjects: &[&str]) -> Self {
        Self {
            name: name.into(),
            filter_subjects: filter_subjects.iter().map(|s| (*s).to_owned()).collect(),
            start: StartPosition::New,
            concurrency: 16,
            batch_size: 64,
            max_deliveries: 5,
            max_ack_pending: 10_000,
            ack_wait: Duration::from_secs(30),
            backoff: [1, 5, 30, 120].map(Duration::from_secs).to_vec(),
            progress_acks: true,
            confirm_acks: true,
            drain_timeout: Duration::from_secs(10),
            resume_point: None,
            checkpoint: None,
            stream: crate::StreamSettings::default(),
            metrics: crate::ConsumerMetrics::default(),
        }
    }

    /// Counts into `metrics` (registered in the service's registry).
    pub fn metrics(mut self, metrics: &crate::ConsumerMetrics) -> Self {
        self.metrics = metrics.clone();
        self
    }

    pub(super) fn labels(&self) -> crate::ConsumerLabels {
        crate::ConsumerLabels {
            consumer: self.name.clone(),
        }
    }

    pub fn start(mut self, start: StartPosition) -> Self {
        self.start = start;
        self
    }

    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// At most `batch_size` messages per batch (at least 1).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Whether each ack waits for the server's confirmation (the field `confirm_acks`).
    pub fn confirm_acks(mut self, confirm: bool) -> Self {
        self.confirm_acks = confirm;
        self
    }

    /// Messages the runtime holds at most: `concurrency` batches running and as many waiting
    /// their turn, so a handler that finishes finds the next batch here instead of waiting for a
    /// pull. Without in-progress acks a waiting message's ack deadline would run out, so then
    /// there is no waiting room.
    pub(super) fn held(&self) -> usize {
        let room = if self.progress_acks { 2 } else { 1 };
        self.concurrency.max(1) * self.batch_size.max(1) * room
    }

    pub(super) fn backoff_for(&self, attempt: u64) -> Duration {
        let index = (attempt.saturating_sub(1) as usize).min(self.backoff.len().saturating_sub(1));
        self.backoff
            .get(index)
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }

    pub(super) fn deliver_policy(&self, start: StartPosition) -> consumer::DeliverPolicy {
        match start {
            // Not `DeliverPolicy::New`: a replicated consumer that has delivered nothing yet
            // when its leader changes starts again at the stream's end as the new leader sees
            // it, skipping what came in meanwhile (seen in the cluster test on nats-server
            // 2.15). The creation time in the config is the same start on every replica.
            StartPosition::New => consumer::DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::now_utc(),
            },
            StartPosition::All => consumer::DeliverPolicy::All,
            StartPosition::At(unix) => consumer::DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp(unix)
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            },
            StartPosition::AfterSequence(sequence) => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: sequence + 1,
            },
        }
    }

    pub(super) fn config(&self, start: StartPosition) -> consumer::pull::Config {
        let (filter_subject, filter_subjects) = match self.filter_subjects.as_slice() {
            [one] => (one.clone(), Vec::new()),
            many => (String::new(), many.to_vec()),
        };
        consumer::pull::Config {
            durable_name: Some(self.name.clone()),
            description: Some(format!("hookbus consumer {}", self.name)),
            deliver_policy: self.deliver_policy(start),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliveries,
            filter_subject,
            filter_subjects,
            max_ack_pending: self.max_ack_pending.max(self.held() as i64),
            ..Default::default()
        }
    }
}
