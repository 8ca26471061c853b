//! The consumer runtime: what makes "subscribe a new consumer to a subject" a few lines.
//!
//! A durable pull consumer on `EVENTS` with explicit acks and filter subjects; at most
//! `concurrency` handlers at once; a span per message parented on the producer's `traceparent`;
//! the handler answers [`Outcome::Ack`], [`Outcome::Retry`] or [`Outcome::Reject`]. Failures
//! (a `Retry`, a panic) are NAK'd with back-off; a `Reject`, or a failure on the last allowed
//! delivery, goes to the `DLQ` stream and is then terminated; a last delivery that timed out is
//! caught through the server's max-deliveries advisory. Long handlers get in-progress acks. The
//! runtime survives broker restarts and a deleted consumer (recreated from the last ack floor it
//! saw, or from what the caller's store recorded), and drains on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer};
use futures_util::StreamExt;
use hookbus_proto::v1::Event;
use prost::Message;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::dlq::{self, DeadLetter};
use crate::streams::EVENTS_STREAM;

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

impl std::str::FromStr for StartPosition {
    type Err = String;

    /// `new`, `all`, or an RFC 3339 time (events published at or after it). `AfterSequence` is
    /// not configurable: it is what a store's resume point gives.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "new" => Ok(Self::New),
            "all" => Ok(Self::All),
            other => {
                time::OffsetDateTime::parse(other, &time::format_description::well_known::Rfc3339)
                    .map(|t| Self::At(t.unix_timestamp()))
                    .map_err(|_| {
                        format!(
                            "{other:?} is not new, all or an RFC 3339 time (2026-11-28T00:00:00Z)"
                        )
                    })
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
    /// Handlers running at once.
    pub concurrency: usize,
    /// Deliveries before a failing message is dead-lettered.
    pub max_deliveries: i64,
    /// The server's limit on delivered, unacknowledged messages. A message NAK'd with a delay
    /// counts against it until it is redelivered, so it must be well above what the runtime holds
    /// (`2 × concurrency`), or a run of retries stalls the consumer.
    pub max_ack_pending: i64,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Delay before redelivery after the n-th failure (the last entry repeats).
    pub backoff: Vec<Duration>,
    /// Send in-progress acks while a handler runs (every third of `ack_wait`).
    pub progress_acks: bool,
    /// Wait for the server to confirm each ack (a round trip per message). Turn it off only where
    /// a message delivered again after a lost ack is harmless to the handler, because it finds
    /// its work already done (a ledger, a dedup marker).
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
            .field("max_deliveries", &self.max_deliveries)
            .field("ack_wait", &self.ack_wait)
            .finish_non_exhaustive()
    }
}

impl ConsumerSpec {
    /// Defaults: start `new`, 16 handlers, 5 deliveries, 10,000 unacknowledged at the server, 30 s
    /// ack wait, back-off 1 s, 5 s, 30 s, 2 min.
    pub fn new(name: impl Into<String>, filter_subjects: &[&str]) -> Self {
        Self {
            name: name.into(),
            filter_subjects: filter_subjects.iter().map(|s| (*s).to_owned()).collect(),
            start: StartPosition::New,
            concurrency: 16,
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

    fn labels(&self) -> crate::ConsumerLabels {
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

    fn backoff_for(&self, attempt: u64) -> Duration {
        let index = (attempt.saturating_sub(1) as usize).min(self.backoff.len().saturating_sub(1));
        self.backoff
            .get(index)
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }

    fn deliver_policy(&self, start: StartPosition) -> consumer::DeliverPolicy {
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

    fn config(&self, start: StartPosition) -> consumer::pull::Config {
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
            max_ack_pending: self.max_ack_pending.max((self.concurrency * 2) as i64),
            ..Default::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error(transparent)]
    Config(#[from] hookbus_config::ConfigError),
    #[error(transparent)]
    Connect(#[from] crate::ConnectError),
    #[error(transparent)]
    Provision(#[from] crate::ProvisionError),
    #[error("consumer {name}: {reason}")]
    Setup { name: String, reason: String },
}

/// State shared by the fetch loop and the message tasks.
struct Shared {
    js: jetstream::Context,
    spec: ConsumerSpec,
    /// The consumer's ack floor as last seen on the server: where a recreated consumer resumes.
    ack_floor: AtomicU64,
}

/// How long a message handed back on shutdown waits before it is delivered again. Longer than a
/// pull's expiry (1 s): an immediate NAK would be redelivered at once into the closing pull, NAK'd
/// again, and so on until its deliveries ran out and it was dead-lettered unprocessed.
const SHUTDOWN_NAK_DELAY: Duration = Duration::from_secs(2);

/// How long a pull that expires after 1 s may stay silent before it is given up as lost.
const PULL_SILENCE: Duration = Duration::from_secs(5);

/// Runs `handler` on every event matching `spec` until `shutdown` is cancelled.
pub async fn run_consumer<H, Fut>(
    client: async_nats::Client,
    spec: ConsumerSpec,
    handler: H,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError>
where
    H: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let js = jetstream::new(client.clone());
    crate::ensure_events_stream(&js, &spec.stream).await?;
    dlq::ensure_dlq_stream(&js, spec.stream.replicas).await?;
    let shared = Arc::new(Shared {
        js,
        spec,
        ack_floor: AtomicU64::new(0),
    });
    let handler = Arc::new(handler);
    // Messages pulled and not yet settled: the running handlers plus as many waiting their turn,
    // so a handler that finishes finds the next message here instead of waiting for a pull.
    // Without in-progress acks a waiting message's ack deadline would run out, so then there is
    // no waiting room.
    let room = if shared.spec.progress_acks { 2 } else { 1 };
    let semaphore = Arc::new(Semaphore::new(shared.spec.concurrency * room));
    let handler_slots = Arc::new(Semaphore::new(shared.spec.concurrency));
    let tasks_cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();

    // Last deliveries that timed out: the server announces them; dead-letter each.
    let advisory = tokio::spawn(watch_max_deliveries(
        client.clone(),
        shared.clone(),
        shutdown.clone(),
    ));

    let mut first = true;
    let mut floor_checked = tokio::time::Instant::now();
    'connect: while !shutdown.is_cancelled() {
        let mut consumer = match ensure_consumer(&shared, first).await {
            Ok(consumer) => consumer,
            Err(reason) => {
                tracing::warn!(consumer = %shared.spec.name, %reason, "cannot set up the consumer, retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        first = false;
        // The backlog gauges exist from the start, not only once a pull loop has come round.
        record_backlog(&shared, consumer.cached_info());
        while !shutdown.is_cancelled() {
            // Pull only as many messages as there is room for (running plus waiting), in batches
            // that expire after a second: on shutdown no pull is left open, so nothing is left in
            // flight unseen, and what a batch still brings or a task still holds is NAK'd.
            let first_permit = tokio::select! {
                () = shutdown.cancelled() => break 'connect,
                permit = semaphore.clone().acquire_owned() => permit.expect("semaphore never closes"),
            };
            let wanted = 1 + semaphore.available_permits();
            let batch = consumer
                .batch()
                .max_messages(wanted)
                .expires(Duration::from_secs(1))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(consumer = %shared.spec.name, error = %e, "cannot pull, retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'connect;
                }
            };
            let mut first_permit = Some(first_permit);
            loop {
                // A pull whose server went away (a node killed, a connection moved to another
                // node) gets no answer at all, not even the end of its 1 s expiry: without this
                // bound the consumer would wait for it forever.
                let next = match tokio::time::timeout(PULL_SILENCE, batch.next()).await {
                    Ok(Some(next)) => next,
                    Ok(None) => break,
                    Err(_) => {
                        tracing::warn!(consumer = %shared.spec.name, "a pull got no answer; pulling again");
                        continue 'connect;
                    }
                };
                let message = match next {
                    Ok(message) => message,
                    Err(e) => {
                        tracing::warn!(consumer = %shared.spec.name, error = %e, "pull interrupted, resubscribing");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue 'connect;
                    }
                };
                if shutdown.is_cancelled() {
                    let _ = message
                        .ack_with(AckKind::Nak(Some(SHUTDOWN_NAK_DELAY)))
                        .await;
                    continue;
                }
                let permit = match first_permit.take() {
                    Some(permit) => permit,
                    None => semaphore
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("semaphore never closes"),
                };
                let (shared, handler, cancel, slots, shutdown) = (
                    shared.clone(),
                    handler.clone(),
                    tasks_cancel.clone(),
                    handler_slots.clone(),
                    shutdown.clone(),
                );
                // A free slot is taken here, in stream order; only a message that finds none waits
                // in its task (at concurrency 1 that is one message, so order is kept).
                let free_slot = slots.clone().try_acquire_owned().ok();
                tasks.spawn(async move {
                    let slot = match free_slot {
                        Some(slot) => Some(slot),
                        None => wait_for_slot(&shared.spec, &message, slots, &shutdown).await,
                    };
                    if let Some(slot) = slot {
                        process(&shared, &*handler, message, cancel).await;
                        drop(slot);
                    }
                    drop(permit);
                });
            }
            // Reap finished tasks so the set does not grow.
            while tasks.try_join_next().is_some() {}
            if floor_checked.elapsed() > Duration::from_secs(2) {
                floor_checked = tokio::time::Instant::now();
                if let Ok(info) = consumer.info().await {
                    record_backlog(&shared, info);
                    let floor = info.ack_floor.stream_sequence;
                    let before = shared.ack_floor.swap(floor, Ordering::Relaxed);
                    if let Some(checkpoint) = &shared.spec.checkpoint
                        && floor > before
                    {
                        tokio::spawn(checkpoint(floor));
                    }
                }
            }
        }
    }

    // Drain: running handlers get `drain_timeout`, then are told to NAK and stop.
    let drained = tokio::time::timeout(shared.spec.drain_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks_cancel.cancel();
        while tasks.join_next().await.is_some() {}
    }
    advisory.abort();
    crate::flush_before_exit(&client).await;
    tracing::info!(consumer = %shared.spec.name, "consumer stopped");
    Ok(())
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
    let path = hookbus_config::Loader::path_from_env(None);
    let nats: crate::NatsConfig = hookbus_config::Loader::new(path.as_deref())?.section("nats")?;
    let client = crate::connect(&nats, &spec.name).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::stop_on_signal(shutdown.clone()));
    run_consumer(client, spec, handler, shutdown).await
}

/// Gets or creates the durable consumer. A consumer that has to be created after the first time
/// (it was deleted on the server) resumes after the last recorded or acknowledged sequence.
async fn ensure_consumer(
    shared: &Shared,
    first: bool,
) -> Result<consumer::Consumer<consumer::pull::Config>, String> {
    let stream = shared
        .js
        .get_stream(EVENTS_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    if let Ok(existing) = stream
        .get_consumer::<consumer::pull::Config>(&shared.spec.name)
        .await
    {
        return Ok(existing);
    }
    let recorded = match &shared.spec.resume_point {
        Some(resume_point) => resume_point().await,
        None => None,
    };
    let floor = shared.ack_floor.load(Ordering::Relaxed);
    // The store's highest sequence can be above events that are still waiting for a retry
    // (handlers finish out of order); the server's ack floor has no such gaps. Starting lower is
    // harmless (the ledger skips what was done), so take the lower of the two when both are known.
    let start = match (recorded, first) {
        (Some(sequence), false) if floor > 0 => StartPosition::AfterSequence(sequence.min(floor)),
        (Some(sequence), _) => StartPosition::AfterSequence(sequence),
        (None, false) if floor > 0 => StartPosition::AfterSequence(floor),
        _ => shared.spec.start,
    };
    if !first {
        tracing::warn!(consumer = %shared.spec.name, ?start, "consumer was deleted on the server; recreating it");
    }
    stream
        .get_or_create_consumer(&shared.spec.name, shared.spec.config(start))
        .await
        .map_err(|e| e.to_string())
}

/// Sets the consumer's backlog gauges (`hookbus_consumer_pending`, `_ack_pending`) from its info.
fn record_backlog(shared: &Shared, info: &consumer::Info) {
    let (metrics, labels) = (&shared.spec.metrics, shared.spec.labels());
    metrics
        .pending
        .get_or_create(&labels)
        .set(info.num_pending as i64);
    metrics
        .ack_pending
        .get_or_create(&labels)
        .set(info.num_ack_pending as i64);
}

/// Ticks every third of `ack_wait`, the first one a third from now. (Not `interval` and a first
/// `tick().await`: that first tick waits for the timer wheel's next millisecond, which costs about
/// a millisecond per message.)
fn progress_ticks(spec: &ConsumerSpec) -> tokio::time::Interval {
    let period = spec.ack_wait / 3;
    tokio::time::interval_at(tokio::time::Instant::now() + period, period)
}

/// Waits for a free handler slot, keeping the message's ack deadline alive meanwhile; on shutdown
/// the message goes back to the server (NAK, confirmed) and `None` is returned.
async fn wait_for_slot(
    spec: &ConsumerSpec,
    message: &jetstream::Message,
    slots: Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let mut progress = progress_ticks(spec);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                let _ = message.double_ack_with(AckKind::Nak(Some(SHUTDOWN_NAK_DELAY))).await;
                return None;
            }
            slot = slots.clone().acquire_owned() => return Some(slot.expect("semaphore never closes")),
            _ = progress.tick(), if spec.progress_acks => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}

async fn process<H, Fut>(
    shared: &Shared,
    handler: &H,
    message: jetstream::Message,
    cancel: CancellationToken,
) where
    H: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let spec = &shared.spec;
    let (stream_sequence, attempt) = match message.info() {
        Ok(info) => (info.stream_sequence, info.delivered.max(1) as u64),
        Err(_) => (0, 1),
    };
    let headers = message.headers.clone().unwrap_or_default();
    let subject = message.subject.to_string();
    let span = tracing::info_span!(
        "consume",
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation = "process",
        messaging.destination.name = %subject,
        messaging.consumer.group.name = %spec.name,
        messaging.message.id = tracing::field::Empty,
        attempt,
    );
    hookbus_telemetry::set_parent_from_nats(&span, &headers);

    async {
        let give_up = async |reason: &str| {
            dead_letter(shared, &message, &subject, stream_sequence, attempt, reason).await;
        };
        let event = match Event::decode(message.payload.clone()) {
            Ok(event) => event,
            Err(e) => {
                let reason = format!("payload is not a hookbus.v1.Event: {e}");
                give_up(&reason).await;
                return;
            }
        };
        tracing::Span::current().record("messaging.message.id", event.id.as_str());
        let delivery = Delivery {
            event,
            subject: subject.clone(),
            stream_sequence,
            attempt,
            headers,
        };
        // The handler runs in its own task: a panic there is a failure, not the end of the consumer.
        let started = std::time::Instant::now();
        let mut work = tokio::spawn(handler(delivery).in_current_span());
        let mut progress = progress_ticks(spec);
        let outcome = loop {
            tokio::select! {
                result = &mut work => break match result {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        tracing::error!(error = %e, "handler panicked");
                        Outcome::Retry { after: spec.backoff_for(attempt) }
                    }
                },
                _ = progress.tick(), if spec.progress_acks => {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
                () = cancel.cancelled() => {
                    work.abort();
                    // Confirmed, so that when the runtime returns the server has it back.
                    let _ = message.double_ack_with(AckKind::Nak(Some(SHUTDOWN_NAK_DELAY))).await;
                    tracing::info!("handler stopped by shutdown; message NAK'd");
                    return;
                }
            }
        };
        let (metrics, labels) = (&spec.metrics, spec.labels());
        metrics
            .handler_seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Outcome::Ack => {
                metrics.processed.get_or_create(&labels).inc();
                let acked = if spec.confirm_acks {
                    message.double_ack().await
                } else {
                    message.ack().await
                };
                if let Err(e) = acked {
                    // Not lost: the server redelivers after ack_wait and the handler is idempotent.
                    tracing::warn!(error = %e, "ack not confirmed");
                }
            }
            Outcome::Retry { after } if (attempt as i64) < spec.max_deliveries => {
                tracing::info!(?after, attempt, "handler asked for a retry");
                metrics.retried.get_or_create(&labels).inc();
                let _ = message.ack_with(AckKind::Nak(Some(after))).await;
            }
            Outcome::Retry { .. } => {
                let reason = format!("still failing after {attempt} deliveries");
                give_up(&reason).await;
            }
            Outcome::Reject { reason } => {
                give_up(&reason).await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// Dead-letters a message, then terminates it. When the dead letter cannot be stored the message
/// is NAK'd instead, so it is not lost.
async fn dead_letter(
    shared: &Shared,
    message: &jetstream::Message,
    subject: &str,
    stream_sequence: u64,
    attempts: u64,
    reason: &str,
) {
    let letter = DeadLetter {
        consumer: &shared.spec.name,
        subject,
        stream_sequence,
        attempts,
        reason,
        payload: message.payload.clone(),
        headers: message.headers.as_ref(),
    };
    match dlq::publish_dead_letter(&shared.js, letter).await {
        Ok(()) => {
            tracing::warn!(%reason, attempts, "dead-lettered");
            count_dead_letter(&shared.spec);
            let _ = message.ack_with(AckKind::Term).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store the dead letter; NAKing instead");
            let _ = message
                .ack_with(AckKind::Nak(Some(shared.spec.backoff_for(attempts))))
                .await;
        }
    }
}

fn count_dead_letter(spec: &ConsumerSpec) {
    spec.metrics
        .dead_lettered
        .get_or_create(&spec.labels())
        .inc();
}

/// Dead-letters messages whose last delivery timed out, announced by the server on
/// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.EVENTS.<consumer>`.
async fn watch_max_deliveries(
    client: async_nats::Client,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let subject = format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{EVENTS_STREAM}.{}",
        shared.spec.name
    );
    let Ok(mut advisories) = client.subscribe(subject).await else {
        return;
    };
    loop {
        let advisory = tokio::select! {
            () = shutdown.cancelled() => return,
            advisory = advisories.next() => match advisory { Some(a) => a, None => return },
        };
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&advisory.payload) else {
            continue;
        };
        let sequence = body["stream_seq"].as_u64().unwrap_or_default();
        let deliveries = body["deliveries"].as_u64().unwrap_or_default();
        let Ok(stream) = shared.js.get_stream(EVENTS_STREAM).await else {
            continue;
        };
        let Ok(original) = stream.get_raw_message(sequence).await else {
            continue;
        };
        let letter = DeadLetter {
            consumer: &shared.spec.name,
            subject: original.subject.as_str(),
            stream_sequence: sequence,
            attempts: deliveries,
            reason: "the last allowed delivery timed out (no ack within ack_wait)",
            payload: original.payload.clone(),
            headers: Some(&original.headers),
        };
        match dlq::publish_dead_letter(&shared.js, letter).await {
            Ok(()) => {
                tracing::warn!(sequence, deliveries, "dead-lettered a timed-out message");
                count_dead_letter(&shared.spec);
            }
            Err(e) => {
                tracing::error!(error = %e, sequence, "cannot dead-letter a timed-out message")
            }
        }
    }
}
