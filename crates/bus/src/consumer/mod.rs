//! The consumer runtime: what makes "subscribe a new consumer to a subject" a few lines.
//!
//! A durable pull consumer on `EVENTS` with explicit acks and filter subjects; at most
//! `concurrency` handlers at once, each on a batch of the messages already pulled (or on one, with
//! [`run_consumer`]); a span per batch parented on its first producer's `traceparent` and linked
//! to the others'; the handler answers [`Outcome::Ack`], [`Outcome::Retry`] or
//! [`Outcome::Reject`] for each message. Failures
//! (a `Retry`, a panic) are NAK'd with back-off; a `Reject`, or a failure on the last allowed
//! delivery, goes to the `DLQ` stream and is then terminated; a last delivery that timed out is
//! caught through the server's max-deliveries advisory. Long handlers get in-progress acks. The
//! runtime survives broker restarts and a deleted consumer (recreated from the last ack floor it
//! saw, or from what the caller's store recorded), and drains on shutdown.

mod message;
mod spec;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::dlq;
use crate::streams::EVENTS_STREAM;

use message::{Handler, SHUTDOWN_NAK_DELAY, Shared, process, wait_for_slot, watch_max_deliveries};
pub use spec::{
    Checkpoint, ConsumerSpec, Delivery, Outcome, ResumePoint, StartPosition, check_batch_size,
};

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

/// How long a pull that expires after 1 s may stay silent before it is given up as lost.
const PULL_SILENCE: Duration = Duration::from_secs(5);

/// Runs `handler` on every event matching `spec`, one at a time, until `shutdown` is cancelled:
/// [`run_batch_consumer`] with batches of one (`spec.batch_size` is not used).
pub async fn run_consumer<H, Fut>(
    client: async_nats::Client,
    mut spec: ConsumerSpec,
    handler: H,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError>
where
    H: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    spec.batch_size = 1;
    run(client, spec, one_at_a_time(handler), shutdown).await
}

/// Runs `handler` on batches of the events matching `spec` until `shutdown` is cancelled. A batch
/// is up to `spec.batch_size` messages that are already pulled (the runtime never waits to fill
/// one), in stream order; the handler answers one [`Outcome`] per delivery, in the same order.
/// Each message is then settled by its own outcome: one that fails does not fail the others.
pub async fn run_batch_consumer<H, Fut>(
    client: async_nats::Client,
    spec: ConsumerSpec,
    handler: H,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError>
where
    H: Fn(Vec<Delivery>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Outcome>> + Send + 'static,
{
    let handler: Handler = Arc::new(move |batch| Box::pin(handler(batch)));
    run(client, spec, handler, shutdown).await
}

/// A one-message handler as a batch handler (for batches of one).
fn one_at_a_time<H, Fut>(handler: H) -> Handler
where
    H: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    Arc::new(move |mut batch: Vec<Delivery>| match batch.pop() {
        Some(delivery) if batch.is_empty() => {
            let outcome = handler(delivery);
            Box::pin(async move { vec![outcome.await] })
        }
        // Never more than one (the batch size is 1); anything else is retried by the runtime.
        _ => Box::pin(async { Vec::new() }),
    })
}

/// How a run of reading one pull's messages into a batch ended.
enum Pause {
    /// The batch is full, or the next message is not there yet: hand it over and read on.
    Batch,
    /// The pull is done: pull again.
    PullDone,
    /// The pull broke or went silent: set the consumer up again.
    Reconnect,
}

async fn run(
    client: async_nats::Client,
    spec: ConsumerSpec,
    handler: Handler,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError> {
    let js = jetstream::new(client.clone());
    crate::ensure_events_stream(&js, &spec.stream).await?;
    dlq::ensure_dlq_stream(&js, spec.stream.replicas).await?;
    let shared = Arc::new(Shared {
        js,
        spec,
        handler,
        ack_floor: AtomicU64::new(0),
    });
    let batch_size = shared.spec.batch_size.max(1);
    // One permit per message pulled and not yet settled (see `ConsumerSpec::held`).
    let semaphore = Arc::new(Semaphore::new(shared.spec.held()));
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
            let pull = consumer
                .batch()
                .max_messages(wanted)
                .expires(Duration::from_secs(1))
                .messages()
                .await;
            let mut pull = match pull {
                Ok(pull) => pull,
                Err(e) => {
                    tracing::warn!(consumer = %shared.spec.name, error = %e, "cannot pull, retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'connect;
                }
            };
            let mut first_permit = Some(first_permit);
            loop {
                // A batch: the first message waited for, then those already here.
                let mut batch = Vec::new();
                let mut permits: Option<tokio::sync::OwnedSemaphorePermit> = None;
                let pause = loop {
                    let next = if batch.is_empty() {
                        // A pull whose server went away (a node killed, a connection moved to
                        // another node) gets no answer at all, not even the end of its 1 s expiry:
                        // without this bound the consumer would wait for it forever.
                        match tokio::time::timeout(PULL_SILENCE, pull.next()).await {
                            Ok(next) => next,
                            Err(_) => {
                                tracing::warn!(consumer = %shared.spec.name, "a pull got no answer; pulling again");
                                break Pause::Reconnect;
                            }
                        }
                    } else if batch.len() < batch_size {
                        match pull.next().now_or_never() {
                            Some(next) => next,
                            None => break Pause::Batch,
                        }
                    } else {
                        break Pause::Batch;
                    };
                    let message = match next {
                        None => break Pause::PullDone,
                        Some(Ok(message)) => message,
                        Some(Err(e)) => {
                            tracing::warn!(consumer = %shared.spec.name, error = %e, "pull interrupted, resubscribing");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            break Pause::Reconnect;
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
                    match &mut permits {
                        Some(held) => held.merge(permit),
                        None => permits = Some(permit),
                    }
                    batch.push(message);
                };
                if let Some(permits) = permits {
                    let (shared, cancel, slots, shutdown) = (
                        shared.clone(),
                        tasks_cancel.clone(),
                        handler_slots.clone(),
                        shutdown.clone(),
                    );
                    // A free slot is taken here, in stream order; only a batch that finds none
                    // waits in its task (at concurrency 1 that is one batch, so order is kept).
                    let free_slot = slots.clone().try_acquire_owned().ok();
                    tasks.spawn(async move {
                        let slot = match free_slot {
                            Some(slot) => Some(slot),
                            None => wait_for_slot(&shared.spec, &batch, slots, &shutdown).await,
                        };
                        if let Some(slot) = slot {
                            process(&shared, batch, cancel).await;
                            drop(slot);
                        }
                        drop(permits);
                    });
                }
                match pause {
                    Pause::Batch => {}
                    Pause::PullDone => break,
                    Pause::Reconnect => continue 'connect,
                }
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
    let path = hookbus_config::Loader::path_from_env(None);
    let nats: crate::NatsConfig = hookbus_config::Loader::new(path.as_deref())?.section("nats")?;
    let client = crate::connect(&nats, &spec.name).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::stop_on_signal(shutdown.clone()));
    Ok((client, shutdown))
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
