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

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::dlq;
use crate::error::NatsError;
use crate::streams::EVENTS_STREAM;

use message::{
    Handler, SHUTDOWN_NAK_DELAY, Shared, hand_back, process, progress_ticks, watch_max_deliveries,
};
pub use spec::{
    Checkpoint, ConsumerSpec, Delivery, Outcome, ResumePoint, StartPosition, StartPositionError,
    check_batch_size,
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

    // Messages pulled and waiting for a handler slot, each with its permit, in stream order. A
    // batch is taken from here when a slot is free: everything waiting, up to `batch_size`. So
    // batches fill up exactly when handlers are busy, and at low load a batch is one message.
    let mut queue: VecDeque<(jetstream::Message, OwnedSemaphorePermit)> = VecDeque::new();
    let mut progress = progress_ticks(&shared.spec);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
        let mut pull = None;
        loop {
            // Reap finished tasks so the set does not grow.
            while tasks.try_join_next().is_some() {}
            if pull.is_none() && semaphore.available_permits() > 0 {
                if floor_checked.elapsed() > Duration::from_secs(2) {
                    floor_checked = tokio::time::Instant::now();
                    check_floor(&shared, &mut consumer).await;
                }
                // Pull only as many messages as there is room for (running plus waiting), in
                // pulls that expire after a second: on shutdown no pull is left open for long, so
                // nothing is left in flight unseen, and what a pull still brings is handed back.
                let wanted = semaphore.available_permits();
                match consumer
                    .batch()
                    .max_messages(wanted)
                    .expires(Duration::from_secs(1))
                    .messages()
                    .await
                {
                    Ok(opened) => pull = Some(opened),
                    Err(e) => {
                        tracing::warn!(consumer = %shared.spec.name, error = %e, "cannot pull, retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue 'connect;
                    }
                }
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    // The pull expires within a second: hand back what it still brings.
                    if let Some(open) = pull.as_mut() {
                        while let Ok(Some(next)) = tokio::time::timeout(PULL_SILENCE, open.next()).await {
                            if let Ok(message) = next {
                                let _ = message.ack_with(AckKind::Nak(Some(SHUTDOWN_NAK_DELAY))).await;
                            }
                        }
                    }
                    break 'connect;
                }
                slot = handler_slots.clone().acquire_owned(), if !queue.is_empty() => {
                    let slot = slot.expect("semaphore never closes");
                    // What the pull has brought meanwhile joins the batch.
                    if let Some(open) = pull.as_mut() {
                        while queue.len() < batch_size {
                            match open.next().now_or_never() {
                                Some(Some(Ok(message))) => enqueue(&mut queue, &semaphore, message).await,
                                _ => break,
                            }
                        }
                    }
                    let taken = queue.len().min(batch_size);
                    let mut batch = Vec::with_capacity(taken);
                    let mut permits: Option<OwnedSemaphorePermit> = None;
                    for (message, permit) in queue.drain(..taken) {
                        batch.push(message);
                        match &mut permits {
                            Some(held) => held.merge(permit),
                            None => permits = Some(permit),
                        }
                    }
                    let (shared, cancel) = (shared.clone(), tasks_cancel.clone());
                    tasks.spawn(async move {
                        process(&shared, batch, cancel).await;
                        drop(slot);
                        drop(permits);
                    });
                }
                next = async {
                    match pull.as_mut() {
                        Some(open) => tokio::time::timeout(PULL_SILENCE, open.next()).await,
                        None => std::future::pending().await,
                    }
                } => match next {
                    Ok(Some(Ok(message))) => enqueue(&mut queue, &semaphore, message).await,
                    Ok(None) => pull = None,
                    Ok(Some(Err(e))) => {
                        tracing::warn!(consumer = %shared.spec.name, error = %e, "pull interrupted, resubscribing");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue 'connect;
                    }
                    // A pull whose server went away (a node killed, a connection moved to another
                    // node) gets no answer at all, not even the end of its 1 s expiry: without
                    // this bound the consumer would wait for it forever.
                    Err(_) => {
                        tracing::warn!(consumer = %shared.spec.name, "a pull got no answer; pulling again");
                        continue 'connect;
                    }
                },
                // No room for a pull: wait until a batch settles and gives some back.
                permit = semaphore.clone().acquire_owned(), if pull.is_none() => drop(permit),
                // Waiting messages keep their ack deadlines alive.
                _ = progress.tick(), if shared.spec.progress_acks && !queue.is_empty() => {
                    for (message, _) in &queue {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                }
            }
        }
    }
    // Shutdown: what waits for a slot, and what an open pull still brings, goes back to the
    // server.
    let waiting: Vec<jetstream::Message> = queue.drain(..).map(|(message, _)| message).collect();
    hand_back(&waiting).await;

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

/// Gets or creates the durable consumer. A consumer that has to be created after the first time
/// (it was deleted on the server) resumes after the last recorded or acknowledged sequence.
async fn ensure_consumer(
    shared: &Shared,
    first: bool,
) -> Result<consumer::Consumer<consumer::pull::Config>, NatsError> {
    let stream = shared
        .js
        .get_stream(EVENTS_STREAM)
        .await
        .map_err(NatsError::of("get stream EVENTS"))?;
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
        .map_err(NatsError::of("create consumer"))
}

/// Queues a message just pulled with its permit. There is always one: a pull asks for no more
/// messages than there are free permits, and only the pull loop takes them. Were there none, the
/// message would go back to the server rather than past the bound.
async fn enqueue(
    queue: &mut VecDeque<(jetstream::Message, OwnedSemaphorePermit)>,
    semaphore: &Arc<Semaphore>,
    message: jetstream::Message,
) {
    match semaphore.clone().try_acquire_owned() {
        Ok(permit) => queue.push_back((message, permit)),
        Err(_) => {
            tracing::error!("a pull brought more messages than it asked for; handing one back");
            let _ = message
                .ack_with(AckKind::Nak(Some(SHUTDOWN_NAK_DELAY)))
                .await;
        }
    }
}

/// Reads the server's ack floor: the backlog gauges, and the checkpoint when it moved.
async fn check_floor(shared: &Shared, consumer: &mut consumer::Consumer<consumer::pull::Config>) {
    if let Ok(info) = consumer.info().await {
        record_backlog(shared, info);
        let floor = info.ack_floor.stream_sequence;
        let before = shared.ack_floor.swap(floor, Ordering::Relaxed);
        if let Some(checkpoint) = &shared.spec.checkpoint
            && floor > before
        {
            tokio::spawn(checkpoint(floor));
        }
    }
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
