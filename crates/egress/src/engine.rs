//! The dispatcher and the delivery workers.
//!
//! - The dispatcher is a durable consumer on `EVENTS` (the consumer runtime of `hookbus-bus`). Each
//!   event becomes one task per matching endpoint on `egress.tasks.<endpoint>`, with a status
//!   record per (endpoint, event) created first: an event dispatched before (redelivered, or
//!   replayed with a fresh message id) is not dispatched again.
//! - Each enabled endpoint has its own durable consumer on its task subject, its own flow: the
//!   server's `max_ack_pending` is the endpoint's `max_in_flight` (so it holds across replicas), a
//!   rate limiter spaces its requests, and one semaphore caps the requests of the whole replica.
//! - A failed attempt does not hold its slot while it waits: the task is acked and its retry is
//!   stored as a message schedule (`egress.retry.<endpoint>.<event>`) that the server publishes
//!   back onto the task subject when it is due. A slow or failing endpoint only ever occupies its
//!   own `max_in_flight` slots and its share of the global cap.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures_util::StreamExt;
use hookbus_bus::{Delivery, Outcome, Publisher};
use hookbus_proto::Registry;
use hookbus_proto::egress::v1::{
    DeliveryAttempt, DeliveryExhausted, DeliveryTask, EndpointDisabled, delivery_attempt,
};
use hookbus_proto::v1::Event;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prost::Message;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::EgressConfig;
use crate::deliver::{self, Target, Verdict};
use crate::directory::{Directory, Live};
use crate::schedule::RetrySchedule;
use crate::store::{self, State, Status, Stores};
use crate::{AddressPolicy, crypto::SecretBox};

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
}

pub fn timestamp(seconds: i64) -> hookbus_proto::Timestamp {
    hookbus_proto::Timestamp { seconds, nanos: 0 }
}

#[derive(Clone)]
pub struct Metrics {
    pub attempts: Family<Vec<(&'static str, &'static str)>, Counter>,
    pub latency: Histogram,
    pub dispatched: Counter,
    /// Tasks dead-lettered: retries exhausted, or their event gone.
    pub dead_lettered: Counter,
    pub disabled: Gauge,
    /// Per endpoint: tasks queued and not yet taken by its worker, as last seen on the server.
    pub waiting: Family<Vec<(&'static str, String)>, Gauge>,
    /// Per endpoint: tasks taken by its worker and not yet settled.
    pub in_flight: Family<Vec<(&'static str, String)>, Gauge>,
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
        }
    }
}

/// At most `per_second` starts in any second: the start times of the last `per_second` requests
/// are kept, and a new one waits until the oldest is more than a second old.
struct RateLimiter {
    per_second: usize,
    starts: tokio::sync::Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    fn new(per_second: u32) -> Self {
        Self {
            per_second: per_second as usize,
            starts: tokio::sync::Mutex::new(VecDeque::with_capacity(per_second as usize)),
        }
    }

    /// A tenth over a second: requests reach the receiver with some jitter after they start, and
    /// a receiver measuring arrival times must never see the limit passed.
    const WINDOW: Duration = Duration::from_millis(1100);

    async fn acquire(&self) {
        let mut starts = self.starts.lock().await;
        loop {
            let now = Instant::now();
            while starts
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Self::WINDOW)
            {
                starts.pop_front();
            }
            if starts.len() < self.per_second {
                starts.push_back(now);
                return;
            }
            let oldest = *starts.front().expect("full");
            tokio::time::sleep_until(oldest + Self::WINDOW).await;
        }
    }
}

/// Everything a replica's dispatcher, workers and API share.
pub struct Engine {
    pub stores: Stores,
    pub directory: Arc<Directory>,
    pub secrets: Arc<SecretBox>,
    pub settings: EgressConfig,
    pub publisher: Publisher,
    pub metrics: Metrics,
    client: reqwest::Client,
    policy: AddressPolicy,
    schedule: RetrySchedule,
    registry: Registry,
    global: Arc<Semaphore>,
    limiters: Mutex<HashMap<String, (u32, Arc<RateLimiter>)>>,
    /// Since when each endpoint has been failing (unix seconds), as this replica knows it.
    failing_since: Mutex<HashMap<String, i64>>,
    /// Endpoints whose stored failing-since record this replica has cleared since it started.
    known_healthy: Mutex<std::collections::HashSet<String>>,
    /// Events this replica dispatched lately, read by its workers instead of `EVENTS`.
    events: crate::cache::EventCache,
    tracker: TaskTracker,
}

/// Deliveries of an event to the dispatcher before it is dead-lettered: with the back-off of
/// [`Engine::dispatch`] (1 s more per attempt, at most 30 s), about eight hours of a broker that
/// cannot take the tasks. A handful, with a short back-off, dead-lettered dispatches during a
/// seconds-long leader election in a cluster.
pub const DISPATCH_MAX_DELIVERIES: i64 = 1000;

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
    #[allow(clippy::too_many_arguments)]
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
            limiters: Mutex::default(),
            failing_since: Mutex::default(),
            known_healthy: Mutex::default(),
            // 64 MiB of payloads, 10,000 events: a few seconds of deliveries at full rate.
            events: crate::cache::EventCache::new(10_000, 64 << 20),
            tracker: TaskTracker::new(),
            metrics: Metrics::default(),
            stores,
            directory,
            secrets,
            settings,
            publisher,
            client,
        })
    }

    // ---------------------------------------------------------------- dispatch

    /// The dispatcher's handler: one task per matching endpoint, then ack. The endpoints are
    /// those stored before the event reached the dispatcher ([`Directory::fresh_since`]).
    pub async fn dispatch(&self, delivery: Delivery) -> Outcome {
        let event = &delivery.event;
        if let Err(e) = self
            .directory
            .fresh_since(
                &self.stores.endpoints,
                Instant::now(),
                Duration::from_secs(5),
            )
            .await
        {
            tracing::warn!(event = %event.id, error = %e, "endpoints not known to be current; dispatch retried");
            return Outcome::Retry {
                after: Duration::from_secs(1),
            };
        }
        let targets =
            self.directory
                .matching(&event.r#type, &event.source, event.tenant.as_deref());
        if !targets.is_empty() {
            self.events.insert(delivery.stream_sequence, event);
        }
        let trace = hookbus_telemetry::context_from_nats(&delivery.headers);
        let results = futures_util::future::join_all(targets.iter().map(|live| {
            self.enqueue(
                &live.record.id,
                event,
                delivery.stream_sequence,
                (false, true),
                &trace,
            )
        }))
        .await;
        match results.into_iter().find_map(Result::err) {
            None => Outcome::Ack,
            Some(e) => {
                tracing::warn!(event = %event.id, attempt = delivery.attempt, error = %e, "dispatch incomplete; will retry");
                // Only the broker fails a dispatch (a stream without a leader, an election), so
                // it is retried for as long as `DISPATCH_MAX_DELIVERIES` lasts, backing off.
                Outcome::Retry {
                    after: Duration::from_secs(delivery.attempt.clamp(1, 30)),
                }
            }
        }
    }

    /// Queues `event` for `endpoint`. With `dedup`, an (endpoint, event) that has a status record
    /// already is not queued again, unless it is still queued and recent (a dispatch that crashed
    /// between its record and its publish; the publish's message id makes a repeat harmless).
    /// The task carries the trace context of the current span (a child of `trace` when spans are
    /// not exported), and so does every retry of it, up to the request the endpoint gets.
    pub async fn enqueue(
        &self,
        endpoint: &str,
        event: &Event,
        stream_sequence: u64,
        (resend, dedup): (bool, bool),
        trace: &hookbus_telemetry::TraceContext,
    ) -> Result<(), String> {
        let now = unix_now();
        let status = Status {
            state: State::Queued,
            event_type: event.r#type.clone(),
            stream_sequence,
            attempts: 0,
            created_at: now,
            updated_at: now,
            last_error: None,
        };
        let message_id = if dedup {
            let created = self
                .stores
                .create_status(endpoint, &event.id, &status)
                .await?;
            if !created {
                let existing = self.stores.status(endpoint, &event.id).await?;
                let unfinished = existing.as_ref().is_some_and(|s| {
                    s.state == State::Queued && now - s.created_at < 120 && s.attempts == 0
                });
                if !unfinished {
                    return Ok(());
                }
            }
            format!("{}:{endpoint}", event.id)
        } else {
            if !resend {
                let mut status = status.clone();
                if let Some(existing) = self.stores.status(endpoint, &event.id).await? {
                    if existing.state == State::Delivered {
                        // Recovered or retried after it was delivered after all: nothing to do.
                        return Ok(());
                    }
                    status.created_at = existing.created_at;
                    status.attempts = existing.attempts;
                }
                self.stores.put_status(endpoint, &event.id, &status).await?;
            }
            format!("{}:{endpoint}:{}", event.id, uuid::Uuid::now_v7())
        };
        let task = DeliveryTask {
            event_id: event.id.clone(),
            endpoint_id: endpoint.to_owned(),
            stream_sequence,
            event_type: event.r#type.clone(),
            attempt: 0,
            created_at: Some(timestamp(now)),
            next_attempt_at: None,
            resend,
            // The status was just recorded as queued, by this dispatch or by the one it repeats.
            fresh: dedup,
        };
        let mut headers = HeaderMap::new();
        hookbus_telemetry::inject_into_nats(
            &mut headers,
            &hookbus_telemetry::outgoing_context(trace),
        );
        self.publish_task(
            &store::task_subject(endpoint),
            task,
            &message_id,
            Some(headers),
        )
        .await?;
        self.metrics.dispatched.inc();
        Ok(())
    }

    async fn publish_task(
        &self,
        subject: &str,
        task: DeliveryTask,
        message_id: &str,
        headers: Option<HeaderMap>,
    ) -> Result<(), String> {
        let message = jetstream::message::PublishMessage::build()
            .payload(task.encode_to_vec().into())
            .headers(headers.unwrap_or_default())
            .message_id(message_id);
        self.stores
            .js
            .send_publish(subject.to_owned(), message)
            .await
            .map_err(|e| format!("publish task: {e}"))?
            .await
            .map_err(|e| format!("publish task: {e}"))?;
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

    // ---------------------------------------------------------------- workers

    /// Runs one worker per enabled endpoint, started and stopped as endpoints change, until
    /// `shutdown`; then lets running deliveries finish (up to the request timeout).
    pub async fn supervise(self: Arc<Self>, shutdown: CancellationToken) {
        let mut running: HashMap<String, (u32, CancellationToken)> = HashMap::new();
        let mut changes = self.directory.changes();
        loop {
            let endpoints = self.directory.all();
            let wanted: HashMap<String, u32> = endpoints
                .iter()
                .filter(|live| !live.record.disabled)
                .map(|live| (live.record.id.clone(), self.max_in_flight(live)))
                .collect();
            let disabled = endpoints.len() - wanted.len();
            self.metrics.disabled.set(disabled as i64);
            running.retain(|id, (slots, stop)| {
                let keep = wanted.get(id) == Some(slots);
                if !keep {
                    stop.cancel();
                }
                keep
            });
            for (id, slots) in wanted {
                if running.contains_key(&id) {
                    continue;
                }
                let stop = shutdown.child_token();
                running.insert(id.clone(), (slots, stop.clone()));
                let engine = self.clone();
                self.tracker
                    .spawn(async move { engine.work(id, slots, stop).await });
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = changes.changed() => if changed.is_err() { break },
            }
        }
        self.tracker.close();
        let _ = tokio::time::timeout(
            self.settings.request_timeout + Duration::from_secs(2),
            self.tracker.wait(),
        )
        .await;
    }

    /// Every `period` until `shutdown`: each endpoint's waiting and in-flight tasks, from its
    /// worker's consumer on the server (the same figures on every replica, as the consumer is
    /// shared).
    pub async fn report_waiting(self: Arc<Self>, period: Duration, shutdown: CancellationToken) {
        let mut reported: std::collections::HashSet<String> = Default::default();
        loop {
            let mut seen = std::collections::HashSet::new();
            for live in self.directory.all() {
                let id = live.record.id.clone();
                let labels = vec![("endpoint", id.clone())];
                // No answer (no worker yet, or the broker away): the last figures stand, rather
                // than a zero that would hide a backlog.
                if let Ok(info) = self
                    .stores
                    .tasks
                    .consumer_info(store::worker_name(&id))
                    .await
                {
                    let metrics = &self.metrics;
                    metrics
                        .waiting
                        .get_or_create(&labels)
                        .set(info.num_pending as i64);
                    metrics
                        .in_flight
                        .get_or_create(&labels)
                        .set(info.num_ack_pending as i64);
                }
                seen.insert(id);
            }
            for gone in reported.difference(&seen) {
                let labels = vec![("endpoint", gone.clone())];
                self.metrics.waiting.remove(&labels);
                self.metrics.in_flight.remove(&labels);
            }
            reported = seen;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(period) => {}
            }
        }
    }

    fn max_in_flight(&self, live: &Live) -> u32 {
        match live.record.max_in_flight {
            0 => self.settings.default_max_in_flight,
            n => n,
        }
    }

    fn limiter(&self, live: &Live) -> Option<Arc<RateLimiter>> {
        let rate = live.record.rate_limit;
        let mut limiters = self.limiters.lock().expect("not poisoned");
        if rate == 0 {
            limiters.remove(&live.record.id);
            return None;
        }
        let entry = limiters
            .entry(live.record.id.clone())
            .or_insert_with(|| (rate, Arc::new(RateLimiter::new(rate))));
        if entry.0 != rate {
            *entry = (rate, Arc::new(RateLimiter::new(rate)));
        }
        Some(entry.1.clone())
    }

    /// One endpoint's worker: pulls its tasks while it has free slots.
    async fn work(self: Arc<Self>, endpoint: String, slots: u32, stop: CancellationToken) {
        let name = store::worker_name(&endpoint);
        while !stop.is_cancelled() {
            let consumer = self
                .stores
                .tasks
                .create_consumer(pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: store::task_subject(&endpoint),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.settings.task_ack_wait(),
                    max_ack_pending: i64::from(slots),
                    max_deliver: -1,
                    ..Default::default()
                })
                .await;
            let messages = match consumer {
                Ok(consumer) => {
                    consumer
                        .stream()
                        .max_messages_per_batch(slots as usize)
                        .expires(Duration::from_secs(30))
                        .heartbeat(Duration::from_secs(5))
                        .messages()
                        .await
                }
                Err(e) => {
                    tracing::warn!(endpoint, error = %e, "cannot create the endpoint's consumer; retrying");
                    self.pause(&stop).await;
                    continue;
                }
            };
            let mut messages = match messages {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::warn!(endpoint, error = %e, "cannot pull the endpoint's tasks; retrying");
                    self.pause(&stop).await;
                    continue;
                }
            };
            let local = Arc::new(Semaphore::new(slots as usize));
            loop {
                let permit = tokio::select! {
                    () = stop.cancelled() => return,
                    permit = local.clone().acquire_owned() => permit.expect("never closed"),
                };
                let next = tokio::select! {
                    () = stop.cancelled() => return,
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        let engine = self.clone();
                        self.tracker.spawn(async move {
                            let written = engine.deliver(message).await;
                            drop(permit);
                            if let Some(write) = written {
                                engine.write_status(write).await;
                            }
                        });
                    }
                    Some(Err(e)) => {
                        tracing::debug!(endpoint, error = %e, "task pull interrupted; resuming");
                        break;
                    }
                    None => break,
                }
            }
            self.pause(&stop).await;
        }
    }

    async fn pause(&self, stop: &CancellationToken) {
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }

    /// Waits for `ready`, telling the broker the task is still being worked on meanwhile.
    async fn holding<T>(
        &self,
        message: &jetstream::Message,
        ready: impl std::future::Future<Output = T>,
    ) -> T {
        let period = self.settings.task_ack_wait() / 3;
        let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
        tokio::pin!(ready);
        loop {
            tokio::select! {
                value = &mut ready => return value,
                _ = ticks.tick() => { let _ = message.ack_with(AckKind::Progress).await; }
            }
        }
    }

    /// One task, in a span that continues the event's trace from the task's headers.
    async fn deliver(&self, message: jetstream::Message) -> Option<StatusWrite> {
        let span = tracing::debug_span!(
            "deliver",
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.operation = "process",
            messaging.destination.name = %message.subject,
            messaging.message.id = tracing::field::Empty,
            endpoint = tracing::field::Empty,
        );
        if let Some(headers) = &message.headers {
            hookbus_telemetry::set_parent_from_nats(&span, headers);
        }
        self.deliver_task(message).instrument(span).await
    }

    /// One task: skip it if it was delivered (unless it is a resend), else one attempt and what
    /// follows from its answer.
    async fn deliver_task(&self, message: jetstream::Message) -> Option<StatusWrite> {
        let task = match DeliveryTask::decode(message.payload.clone()) {
            Ok(task) => task,
            Err(e) => {
                tracing::error!(error = %e, "undecodable delivery task; dropped");
                let _ = message.ack_with(AckKind::Term).await;
                return None;
            }
        };
        let span = tracing::Span::current();
        span.record("messaging.message.id", task.event_id.as_str());
        span.record("endpoint", task.endpoint_id.as_str());
        let trace = hookbus_telemetry::trace_headers_of(message.headers.as_ref());
        let Some(live) = self.directory.get(&task.endpoint_id) else {
            // The endpoint was deleted: its tasks go with it.
            let _ = message.ack_with(AckKind::Term).await;
            return None;
        };
        if live.record.disabled {
            // Kept for when it is enabled again: the worker stops pulling, the task waits.
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
            return None;
        }
        // A fresh task's first delivery, first try: the dispatch just recorded it queued (its
        // message id keeps it single), so there is no status to read. Retries, resends, recovered
        // tasks and redeliveries read it: a resend or another copy may have delivered it.
        let fresh = task.fresh
            && task.attempt == 0
            && !task.resend
            && message.info().is_ok_and(|info| info.delivered == 1);
        let status = if fresh {
            Ok(None)
        } else {
            self.stores.status(&task.endpoint_id, &task.event_id).await
        };
        let status = match status {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(error = %e, "status unreadable; task retried");
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
                return None;
            }
        };
        if status.as_ref().is_some_and(|s| s.state == State::Delivered) && !task.resend {
            let _ = message.ack().await;
            return None;
        }
        let sequence = message
            .info()
            .map(|i| i.stream_sequence)
            .unwrap_or_default();
        let made = task.attempt + 1;
        let outcome = self.attempt(&message, &live, &task).await;
        let (verdict, error) = match outcome {
            Ok(attempt) => (
                attempt.verdict,
                attempt.error.or_else(|| {
                    attempt
                        .status
                        .filter(|s| !(200..300).contains(s))
                        .map(|s| format!("HTTP {s}"))
                }),
            ),
            Err(EventError::Unavailable(e)) => {
                tracing::warn!(error = %e, "event unreadable; task retried");
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                    .await;
                return None;
            }
            Err(EventError::Gone(permanent)) => {
                let position = (sequence, made);
                self.dead_letter_then_ack(&message, &task, position, &permanent, status.as_ref())
                    .await;
                return None;
            }
        };
        let now = unix_now();
        let mut record = status.unwrap_or(Status {
            state: State::Queued,
            event_type: task.event_type.clone(),
            stream_sequence: task.stream_sequence,
            attempts: 0,
            created_at: task.created_at.as_ref().map_or(now, |t| t.seconds),
            updated_at: now,
            last_error: None,
        });
        record.attempts += 1;
        record.updated_at = now;
        match verdict {
            Verdict::Delivered => {
                record.state = State::Delivered;
                record.last_error = None;
                self.healthy(&task.endpoint_id).await;
            }
            Verdict::Disable => {
                record.state = State::Queued;
                record.last_error = error.clone();
                self.disable(&task.endpoint_id, "the endpoint answered 410 Gone")
                    .await;
                // The task itself is kept: tried again once the endpoint is enabled.
                let mut again = task.clone();
                again.attempt = 0;
                again.fresh = false;
                if let Err(e) = self
                    .publish_task(
                        &store::task_subject(&task.endpoint_id),
                        again,
                        &format!("kept:{}:{}:{sequence}", task.event_id, task.endpoint_id),
                        Some(trace),
                    )
                    .await
                {
                    tracing::warn!(error = %e, "cannot keep the task; redelivered instead");
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    return None;
                }
            }
            Verdict::Retry { after } => {
                record.last_error = error.clone();
                let failing = self.failing(&task.endpoint_id, now).await;
                if failing >= self.settings.disable_after.as_secs() as i64 {
                    self.disable(
                        &task.endpoint_id,
                        &format!(
                            "no successful delivery for {}",
                            humantime::format_duration(self.settings.disable_after)
                        ),
                    )
                    .await;
                }
                match self.schedule.next(made, after, rand::random::<f64>()) {
                    Some(delay) => {
                        record.state = State::Failed;
                        if let Err(e) = self.schedule_retry(&task, made, delay, trace).await {
                            tracing::warn!(error = %e, "cannot schedule the retry; redelivering");
                            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
                            return None;
                        }
                    }
                    None => {
                        let reason = format!(
                            "gave up after {made} attempts: {}",
                            error.as_deref().unwrap_or("failed")
                        );
                        let position = (sequence, made);
                        self.dead_letter_then_ack(
                            &message,
                            &task,
                            position,
                            &reason,
                            Some(&record),
                        )
                        .await;
                        return None;
                    }
                }
            }
        }
        // The status is a record and the dispatcher's dedup, not the task: the task is acked
        // whether or not it is written, and it is written after the task's slot is free.
        let _ = message.ack().await;
        Some(StatusWrite {
            endpoint: task.endpoint_id,
            event: task.event_id,
            status: record,
        })
    }

    /// Writes a status record a delivery left to write; a failure is logged.
    async fn write_status(&self, write: StatusWrite) {
        if let Err(e) = self
            .stores
            .put_status(&write.endpoint, &write.event, &write.status)
            .await
        {
            tracing::warn!(endpoint = %write.endpoint, event = %write.event, error = %e, "status not recorded");
        }
    }

    /// Sends the task's event once and logs the attempt. `Err` is a task that cannot be sent:
    /// never ([`EventError::Gone`]: its event is gone, or cannot be turned into a body), or not
    /// now ([`EventError::Unavailable`]: the broker did not answer).
    async fn attempt(
        &self,
        message: &jetstream::Message,
        live: &Live,
        task: &DeliveryTask,
    ) -> Result<deliver::Attempt, EventError> {
        let event = self.event_at(task.stream_sequence, &task.event_id).await?;
        let trace = message
            .headers
            .as_ref()
            .map(hookbus_telemetry::context_from_nats)
            .unwrap_or_default();
        let (body, content_type) =
            deliver::body_of(&event, &self.registry).map_err(EventError::Gone)?;
        if let Some(limiter) = self.limiter(live) {
            self.holding(message, limiter.acquire()).await;
        }
        let permit = self
            .holding(message, self.global.clone().acquire_owned())
            .await
            .expect("never closed");
        let now = unix_now();
        let secrets = live.active_secrets(now);
        let attempt = deliver::attempt(
            &self.client,
            &self.policy,
            Target {
                url: &live.url,
                secrets: &secrets,
                headers: &live.headers,
                trace: &trace,
            },
            &event,
            (&body, &content_type),
            now,
        )
        .await;
        drop(permit);
        let outcome = match attempt.verdict {
            Verdict::Delivered => "delivered",
            Verdict::Disable => "gone",
            Verdict::Retry { .. } if attempt.status.is_some() => "failed",
            Verdict::Retry { .. } => "error",
        };
        self.metrics
            .attempts
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
        self.metrics.latency.observe(attempt.latency.as_secs_f64());
        let record = DeliveryAttempt {
            id: uuid::Uuid::now_v7().to_string(),
            event_id: task.event_id.clone(),
            endpoint_id: task.endpoint_id.clone(),
            attempt: task.attempt + 1,
            status: if attempt.verdict == Verdict::Delivered {
                delivery_attempt::Status::Succeeded
            } else {
                delivery_attempt::Status::Failed
            } as i32,
            response_status: attempt.status.map(u32::from).unwrap_or_default(),
            latency_ms: attempt.latency.as_millis() as u64,
            response_body: attempt.response_body.clone(),
            error: attempt.error.clone().unwrap_or_default(),
            attempted_at: Some(timestamp(now)),
        };
        if let Err(e) = self
            .stores
            .js
            .publish(
                store::attempts_subject(&task.endpoint_id),
                record.encode_to_vec().into(),
            )
            .await
        {
            tracing::warn!(error = %e, "attempt not logged");
        }
        Ok(attempt)
    }

    async fn schedule_retry(
        &self,
        task: &DeliveryTask,
        made: u32,
        delay: Duration,
        mut headers: HeaderMap,
    ) -> Result<(), String> {
        let at = time::OffsetDateTime::now_utc() + delay;
        let at_text = at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| e.to_string())?;
        headers.insert("Nats-Schedule", format!("@at {at_text}").as_str());
        headers.insert(
            "Nats-Schedule-Target",
            store::task_subject(&task.endpoint_id).as_str(),
        );
        let mut next = task.clone();
        next.attempt = made;
        next.resend = false;
        next.fresh = false;
        next.next_attempt_at = Some(hookbus_proto::Timestamp {
            seconds: at.unix_timestamp(),
            nanos: at.nanosecond() as i32,
        });
        self.publish_task(
            &store::retry_subject(&task.endpoint_id, &task.event_id),
            next,
            &format!(
                "retry:{}:{}:{made}:{at_text}",
                task.endpoint_id, task.event_id
            ),
            Some(headers),
        )
        .await
    }

    /// Dead-letters the task, then acks it; a dead letter that cannot be stored leaves the task
    /// to be redelivered instead.
    async fn dead_letter_then_ack(
        &self,
        message: &jetstream::Message,
        task: &DeliveryTask,
        (sequence, made): (u64, u32),
        reason: &str,
        status: Option<&Status>,
    ) {
        tracing::warn!(endpoint = %task.endpoint_id, event = %task.event_id, reason, "delivery dead-lettered");
        let letter = hookbus_bus::dlq::DeadLetter {
            consumer: DLQ_CONSUMER,
            subject: &store::task_subject(&task.endpoint_id),
            stream_sequence: sequence,
            attempts: u64::from(made),
            reason,
            payload: task.encode_to_vec().into(),
            headers: None,
        };
        if let Err(e) = hookbus_bus::dlq::publish_dead_letter(&self.stores.js, letter).await {
            tracing::error!(error = %e, "dead letter not stored; the task is redelivered");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
            return;
        }
        self.metrics.dead_lettered.inc();
        let now = unix_now();
        let mut record = status.cloned().unwrap_or(Status {
            state: State::Dead,
            event_type: task.event_type.clone(),
            stream_sequence: task.stream_sequence,
            attempts: made,
            created_at: now,
            updated_at: now,
            last_error: None,
        });
        record.state = State::Dead;
        record.updated_at = now;
        record.last_error = Some(reason.to_owned());
        let _ = self
            .stores
            .put_status(&task.endpoint_id, &task.event_id, &record)
            .await;
        let notice = DeliveryExhausted {
            event_id: task.event_id.clone(),
            endpoint_id: task.endpoint_id.clone(),
            attempts: made,
            last_error: reason.to_owned(),
        };
        self.notify(
            "hookbus.delivery.exhausted",
            notice.encode_to_vec(),
            &hookbus_proto::content_type_for::<DeliveryExhausted>(),
            &format!(
                "exhausted:{}:{}:{sequence}",
                task.endpoint_id, task.event_id
            ),
        )
        .await;
        let _ = message.ack().await;
    }

    /// Publishes one of the egress's own events (`events.hookbus.…`).
    async fn notify(&self, event_type: &str, payload: Vec<u8>, content_type: &str, key: &str) {
        let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes()).to_string();
        let event = Event {
            id: id.clone(),
            source: "hookbus".into(),
            r#type: event_type.to_owned(),
            provider: "hookbus".into(),
            received_at: Some(timestamp(unix_now())),
            delivery_id: id.clone(),
            content_type: content_type.to_owned(),
            payload: payload.into(),
            ..Event::default()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        if let Err(e) = self
            .publisher
            .publish_event(
                format!("events.{event_type}"),
                &event,
                &id,
                deadline,
                &hookbus_telemetry::TraceContext::default(),
            )
            .await
        {
            tracing::error!(event_type, error = %e, "notice not published");
        }
    }

    /// Records a success: the endpoint is no longer failing. The stored record is cleared when
    /// this replica saw it failing, or has not cleared it since it started (another replica, or
    /// this one before a restart, may have written it).
    async fn healthy(&self, endpoint: &str) {
        let was = self
            .failing_since
            .lock()
            .expect("not poisoned")
            .remove(endpoint);
        let first = self
            .known_healthy
            .lock()
            .expect("not poisoned")
            .insert(endpoint.to_owned());
        if (was.is_some() || first) && self.stores.health.delete(endpoint).await.is_err() {
            self.known_healthy
                .lock()
                .expect("not poisoned")
                .remove(endpoint);
        }
    }

    /// Records a failure; returns for how long (seconds) the endpoint has been failing. Before
    /// it answers a time long enough to disable, it checks the stored record: a success on
    /// another replica since then has cleared it, and the count starts again.
    async fn failing(&self, endpoint: &str, now: i64) -> i64 {
        self.known_healthy
            .lock()
            .expect("not poisoned")
            .remove(endpoint);
        let since = self.failing_since_of(endpoint, now).await;
        if now - since < self.settings.disable_after.as_secs() as i64 {
            return now - since;
        }
        if self.stored_failing_since(endpoint).await.is_none() {
            self.failing_since
                .lock()
                .expect("not poisoned")
                .remove(endpoint);
            return now - self.failing_since_of(endpoint, now).await;
        }
        now - since
    }

    async fn stored_failing_since(&self, endpoint: &str) -> Option<i64> {
        self.stores
            .health
            .get(endpoint)
            .await
            .ok()
            .flatten()
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<i64>().ok())
    }

    async fn failing_since_of(&self, endpoint: &str, now: i64) -> i64 {
        let known = self
            .failing_since
            .lock()
            .expect("not poisoned")
            .get(endpoint)
            .copied();
        match known {
            Some(since) => since,
            None => {
                let since = match self.stored_failing_since(endpoint).await {
                    Some(since) => since,
                    None => {
                        let _ = self
                            .stores
                            .health
                            .put(endpoint, now.to_string().into())
                            .await;
                        now
                    }
                };
                self.failing_since
                    .lock()
                    .expect("not poisoned")
                    .insert(endpoint.to_owned(), since);
                since
            }
        }
    }

    /// Disables an endpoint (its tasks are kept) and publishes `hookbus.endpoint.disabled`.
    pub async fn disable(&self, endpoint: &str, reason: &str) {
        let changed = crate::api::update_record(self, endpoint, |record| {
            if record.disabled {
                return false;
            }
            record.disabled = true;
            true
        })
        .await;
        match changed {
            Ok(Some(_)) => {
                tracing::warn!(endpoint, reason, "endpoint disabled");
                self.failing_since
                    .lock()
                    .expect("not poisoned")
                    .remove(endpoint);
                let _ = self.stores.health.delete(endpoint).await;
                let notice = EndpointDisabled {
                    endpoint_id: endpoint.to_owned(),
                    reason: reason.to_owned(),
                };
                self.notify(
                    "hookbus.endpoint.disabled",
                    notice.encode_to_vec(),
                    &hookbus_proto::content_type_for::<EndpointDisabled>(),
                    &format!("disabled:{endpoint}:{}", uuid::Uuid::now_v7()),
                )
                .await;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(endpoint, error = %e, "cannot disable endpoint"),
        }
    }
}

/// A status record a delivery leaves to be written once its task is acked and its slot free.
struct StatusWrite {
    endpoint: String,
    event: String,
    status: Status,
}

/// The consumer name egress dead letters carry (`dlq.egress.egress.tasks.<endpoint>`).
pub const DLQ_CONSUMER: &str = "egress";
