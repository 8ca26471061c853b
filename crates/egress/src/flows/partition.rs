//! One partition at the replica that owns it: a pull of the partition's durable consumer in the
//! `egress` priority group (pinned to one client at a time), and one event loop that routes each
//! task into its endpoint's [`EndpointQueue`], starts deliveries as the queues allow, parks what
//! they have no room for, and keeps the waiting tasks' ack deadlines alive.
//!
//! Hand-over, when the partition moves to another replica or this one stops: the pull ends,
//! waiting tasks are handed back to the server (NAK), the deliveries already started finish and
//! settle (up to the request timeout), and only then is the consumer unpinned, so the next owner
//! starts with none of this replica's requests still in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use hookbus_bus::partitioned::Pinned;
use hookbus_proto::egress::v1::DeliveryTask;
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::queue::{Admit, EndpointQueue, Limits};
use crate::attempt_log::Numbers;
use crate::delivery::Slot;
use crate::directory::Live;
use crate::engine::Engine;
use crate::store;

/// A task as the broker delivered it, decoded.
type Queued = (jetstream::Message, DeliveryTask);

/// A delivery that finished.
struct Done {
    endpoint: String,
    latency: Duration,
}

/// Owns `partition` until `stop`, then hands it over.
pub(super) async fn own(engine: Arc<Engine>, partition: u16, stop: CancellationToken) {
    let (done, finished) = mpsc::unbounded_channel();
    let (again, known) = mpsc::unbounded_channel();
    let mut owner = Owner {
        engine,
        partition,
        queues: HashMap::new(),
        numbers: Arc::default(),
        done,
        again,
    };
    owner.run(finished, known, &stop).await;
}

struct Owner {
    engine: Arc<Engine>,
    partition: u16,
    queues: HashMap<String, EndpointQueue<Queued>>,
    /// The next attempt numbers of this partition's endpoints, while this replica owns it.
    numbers: Arc<Numbers>,
    done: mpsc::UnboundedSender<Done>,
    /// Tasks of an endpoint this replica did not know yet, once it does.
    again: mpsc::UnboundedSender<Queued>,
}

impl Owner {
    async fn run(
        &mut self,
        mut finished: mpsc::UnboundedReceiver<Done>,
        mut known: mpsc::UnboundedReceiver<Queued>,
        stop: &CancellationToken,
    ) {
        let name = store::partition_consumer(self.partition);
        let consumer = self.consumer();
        let expiry = self.engine.settings.pull_expiry();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let progress_every = (self.engine.settings.task_ack_wait() / 3).max(Duration::from_secs(1));
        let mut progressed = Instant::now();
        'pull: while !stop.is_cancelled() {
            let mut messages = match consumer.messages(256, expiry).await {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, "cannot pull the partition; retrying");
                    tokio::select! {
                        () = stop.cancelled() => break 'pull,
                        () = tokio::time::sleep(Duration::from_millis(500)) => continue 'pull,
                    }
                }
            };
            loop {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => break 'pull,
                    Some(done) = finished.recv() => self.finished(done),
                    Some(queued) = known.recv() => self.admit(queued),
                    next = messages.next() => match next {
                        Some(Ok(message)) => self.arrived(message),
                        Some(Err(e)) => {
                            tracing::debug!(consumer = %name, error = %e, "partition pull interrupted; pulling again");
                            break;
                        }
                        None => break,
                    },
                    _ = tick.tick() => {
                        let now = Instant::now();
                        if now.duration_since(progressed) >= progress_every {
                            progressed = now;
                            self.keep_waiting_alive().await;
                        }
                        self.report(now);
                    }
                }
            }
            // A new pull of this client starts on standby while its previous pin lasts.
            drop(messages);
            consumer.unpin().await;
        }
        self.hand_over(finished, known).await;
        consumer.unpin().await;
        tracing::info!(partition = self.partition, "partition handed over");
    }

    fn consumer(&self) -> Pinned {
        let settings = &self.engine.settings;
        Pinned::new(
            self.engine.stores.tasks.clone(),
            pull::Config {
                durable_name: Some(store::partition_consumer(self.partition)),
                description: Some(format!("egress tasks of partition {}", self.partition)),
                filter_subject: store::partition_filter(self.partition),
                ack_policy: AckPolicy::Explicit,
                ack_wait: settings.task_ack_wait(),
                max_ack_pending: settings.partition_max_ack_pending,
                max_deliver: -1,
                ..Default::default()
            },
            store::PRIORITY_GROUP,
            settings.replica_timeout,
        )
    }

    /// A task from the broker.
    fn arrived(&mut self, message: jetstream::Message) {
        let task = match DeliveryTask::decode(message.payload.clone()) {
            Ok(task) => task,
            Err(e) => {
                tracing::error!(error = %e, subject = %message.subject, "undecodable delivery task; dropped");
                tokio::spawn(async move { message.ack_with(AckKind::Term).await });
                return;
            }
        };
        if self.engine.directory.get(&task.endpoint_id).is_some() {
            self.admit((message, task));
            return;
        }
        // Created on another replica, and not yet seen here; or deleted.
        let (engine, again) = (self.engine.clone(), self.again.clone());
        tokio::spawn(async move {
            let current = engine
                .directory
                .fresh_since(
                    &engine.stores.endpoints,
                    Instant::now(),
                    Duration::from_secs(5),
                )
                .await;
            match current {
                Ok(()) if engine.directory.get(&task.endpoint_id).is_some() => {
                    let _ = again.send((message, task));
                }
                // Deleted: its tasks go with it.
                Ok(()) => {
                    let _ = message.ack_with(AckKind::Term).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "endpoints not known to be current; task retried");
                    let _ = message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
            }
        });
    }

    fn limits(&self, live: Option<&Live>) -> Limits {
        let settings = &self.engine.settings;
        Limits {
            max_in_flight: live
                .map(|l| l.record.max_in_flight)
                .filter(|n| *n > 0)
                .unwrap_or(settings.default_max_in_flight),
            rate_limit: live.map_or(0, |l| l.record.rate_limit),
            buffer: settings.endpoint_buffer,
        }
    }

    /// Routes a task of a known endpoint: hold, start, queue or park.
    fn admit(&mut self, (message, task): Queued) {
        let engine = self.engine.clone();
        let Some(live) = engine.directory.get(&task.endpoint_id) else {
            tokio::spawn(async move { message.ack_with(AckKind::Term).await });
            return;
        };
        if live.record.disabled {
            self.engine
                .tracker
                .spawn(async move { engine.hold(message, task).await });
            return;
        }
        let limits = self.limits(Some(&live));
        let now = Instant::now();
        let queue = self
            .queues
            .entry(task.endpoint_id.clone())
            .or_insert_with(|| EndpointQueue::new(now));
        match queue.admit(limits, now) {
            Admit::Start => self.start(message, task, live.record.rate_limit),
            Admit::Wait => {
                queue.waiting.push_back((message, task));
                // Room may have opened (a raised max_in_flight) behind those already waiting.
                let endpoint = live.record.id.clone();
                self.start_waiting(&endpoint, limits, live.record.rate_limit);
            }
            Admit::Park(delay) => {
                self.engine
                    .tracker
                    .spawn(async move { engine.park(message, task, delay).await });
            }
        }
    }

    fn start_waiting(&mut self, endpoint: &str, limits: Limits, rate: u32) {
        let now = Instant::now();
        while let Some((message, task)) = self
            .queues
            .get_mut(endpoint)
            .and_then(|queue| queue.next(limits, now))
        {
            self.start(message, task, rate);
        }
    }

    /// Starts a delivery in a slot its queue has taken for it.
    fn start(&mut self, message: jetstream::Message, task: DeliveryTask, rate: u32) {
        let limiter = self
            .queues
            .get_mut(&task.endpoint_id)
            .and_then(|queue| queue.limiter(rate));
        let slot = Slot {
            limiter,
            numbers: self.numbers.clone(),
        };
        let (engine, done) = (self.engine.clone(), self.done.clone());
        self.engine.tracker.spawn(async move {
            let started = Instant::now();
            let endpoint = task.endpoint_id.clone();
            let settle = engine.deliver(message, task, slot).await;
            // The slot is free once the answer is in; the task is acked once its record is.
            let _ = done.send(Done {
                endpoint,
                latency: started.elapsed(),
            });
            if let Some(settle) = settle {
                engine.settle(settle).await;
            }
        });
    }

    fn finished(&mut self, done: Done) {
        let live = self.engine.directory.get(&done.endpoint);
        let limits = self.limits(live.as_deref());
        let rate = live.as_ref().map_or(0, |l| l.record.rate_limit);
        let now = Instant::now();
        let next = self
            .queues
            .get_mut(&done.endpoint)
            .and_then(|queue| queue.finished(limits, done.latency, now));
        if let Some((message, task)) = next {
            self.start(message, task, rate);
            self.start_waiting(&done.endpoint, limits, rate);
        }
    }

    /// In-progress acks for the tasks waiting in memory, so their ack deadline never runs out.
    async fn keep_waiting_alive(&self) {
        for queue in self.queues.values() {
            for (message, _) in &queue.waiting {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }

    /// Drops the queues of idle endpoints and sets the gauges of the others.
    fn report(&mut self, now: Instant) {
        let directory = &self.engine.directory;
        self.numbers
            .retain(|endpoint| directory.get(endpoint).is_some());
        let metrics = &self.engine.metrics;
        self.queues.retain(|endpoint, queue| {
            let labels = vec![("endpoint", endpoint.clone())];
            if queue.idle(now) {
                metrics.waiting.remove(&labels);
                metrics.in_flight.remove(&labels);
                return false;
            }
            metrics
                .waiting
                .get_or_create(&labels)
                .set(queue.waiting.len() as i64);
            metrics
                .in_flight
                .get_or_create(&labels)
                .set(i64::from(queue.in_flight));
            true
        });
    }

    async fn hand_over(
        &mut self,
        mut finished: mpsc::UnboundedReceiver<Done>,
        mut known: mpsc::UnboundedReceiver<Queued>,
    ) {
        for queue in self.queues.values_mut() {
            for (message, _) in queue.waiting.drain(..) {
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
        }
        let deadline =
            Instant::now() + self.engine.settings.request_timeout + Duration::from_secs(5);
        while self.queues.values().any(|q| q.in_flight > 0) {
            tokio::select! {
                done = finished.recv() => match done {
                    Some(done) => {
                        if let Some(queue) = self.queues.get_mut(&done.endpoint) {
                            queue.in_flight = queue.in_flight.saturating_sub(1);
                        }
                    }
                    None => break,
                },
                Some((message, _)) = known.recv() => {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                }
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(partition = self.partition, "deliveries still running at hand-over");
                    break;
                }
            }
        }
        while let Ok((message, _)) = known.try_recv() {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
        self.report(Instant::now() + Duration::from_secs(3600));
    }
}
