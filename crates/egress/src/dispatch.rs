//! The dispatcher: a durable consumer on `EVENTS` (the consumer runtime of `hookbus-bus`) that
//! turns each event into one task per matching endpoint, on the endpoint's partition subject
//! `egress.tasks.<partition>.<endpoint>`. In this order: the tasks are stored (each with the
//! message id `<event>:<endpoint>`), then the event is marked dispatched in `egress_dispatched`,
//! then it is acked. An event already marked (redelivered, or replayed with a fresh message id)
//! is not dispatched again; one that stopped before its marker is dispatched again, and the
//! message ids store its tasks once. Resend, recover and dead-letter retries queue here too.

use std::time::Duration;

use async_nats::HeaderMap;
use futures_util::StreamExt;
use hookbus_bus::{Delivery, Outcome};
use hookbus_proto::egress::v1::DeliveryTask;
use hookbus_proto::v1::Event;
use tokio::time::Instant;

use crate::engine::{Engine, timestamp, unix_now};
use crate::store::StoreError;

/// The (endpoint, event) writes one dispatch keeps in flight: enough to keep the broker busy,
/// few enough that a fan-out to 100,000 endpoints does not hold 100,000 requests in memory.
const FAN_OUT_IN_FLIGHT: usize = 512;

/// How a task is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// By the dispatcher: once per (endpoint, event), whatever the redeliveries.
    Dispatch,
    /// Again, unless it was delivered since (recover, a dead letter retried).
    Again,
    /// Again, delivered or not (an explicit resend).
    Resend,
}

/// The type of test messages (`POST /v1/endpoints/{id}/test`): queued for the one endpoint
/// asked for, and never fanned out.
pub const TEST_EVENT_TYPE: &str = "hookbus.endpoint.test";

impl Engine {
    /// The dispatcher's handler: one task per matching endpoint, then ack. The endpoints are
    /// those stored before the event reached the dispatcher ([`crate::Directory::fresh_since`]).
    pub async fn dispatch(&self, delivery: Delivery) -> Outcome {
        let event = &delivery.event;
        if event.r#type == TEST_EVENT_TYPE {
            return Outcome::Ack;
        }
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
        if targets.is_empty() {
            return Outcome::Ack;
        }
        // Read only for an event some endpoint takes: most events on `EVENTS` go to none.
        match self.stores.dispatched(&event.id).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                tracing::debug!(event = %event.id, "dispatched before; not again");
                return Outcome::Ack;
            }
            Err(e) => {
                tracing::warn!(event = %event.id, error = %e, "dispatch marker unreadable; retried");
                return Outcome::Retry {
                    after: Duration::from_secs(1),
                };
            }
        }
        self.events.insert(delivery.stream_sequence, event);
        let trace = hookbus_telemetry::context_from_nats(&delivery.headers);
        // At most FAN_OUT_IN_FLIGHT at once; the first failure ends the dispatch (retried).
        let mut targets = targets.iter();
        let mut pending = futures_util::stream::FuturesUnordered::new();
        let mut failed = None;
        loop {
            while pending.len() < FAN_OUT_IN_FLIGHT {
                let Some(live) = targets.next() else { break };
                pending.push(self.enqueue(
                    &live.record.id,
                    event,
                    delivery.stream_sequence,
                    Queue::Dispatch,
                    &trace,
                ));
            }
            match pending.next().await {
                None => break,
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let failed = match failed {
            None => {
                hookbus_service::failpoint("egress.dispatch.after_tasks");
                let marked = self
                    .stores
                    .mark_dispatched(&event.id, delivery.stream_sequence)
                    .await;
                hookbus_service::failpoint("egress.dispatch.after_marker");
                marked.err()
            }
            failed => failed,
        };
        match failed {
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

    /// Queues `event` for `endpoint`. A dispatch's task has the message id
    /// `<event>:<endpoint>`, so a dispatch repeated within the task stream's duplicate window
    /// (2 minutes) stores it once. Recover and dead-letter retries first check that it was not
    /// delivered since, and keep when it was first queued; resends do neither.
    /// The task carries the trace context of the current span (a child of `trace` when spans are
    /// not exported), and so does every retry of it, up to the request the endpoint gets.
    pub async fn enqueue(
        &self,
        endpoint: &str,
        event: &Event,
        stream_sequence: u64,
        how: Queue,
        trace: &hookbus_telemetry::TraceContext,
    ) -> Result<(), StoreError> {
        let mut queued_at = timestamp(unix_now());
        let message_id = match how {
            Queue::Dispatch => format!("{}:{endpoint}", event.id),
            Queue::Again | Queue::Resend => {
                if how == Queue::Again
                    && let Some(last) = self.stores.attempts.status(endpoint, &event.id).await?
                {
                    if crate::attempt_log::delivered(&last) {
                        // Recovered or retried after it was delivered after all.
                        return Ok(());
                    }
                    queued_at = last.queued_at.unwrap_or(queued_at);
                }
                format!("{}:{endpoint}:{}", event.id, uuid::Uuid::now_v7())
            }
        };
        let task = DeliveryTask {
            event_id: event.id.clone(),
            endpoint_id: endpoint.to_owned(),
            stream_sequence,
            event_type: event.r#type.clone(),
            attempt: 0,
            created_at: Some(queued_at),
            next_attempt_at: None,
            resend: how == Queue::Resend,
            // A dispatch's first try: no attempt record to read.
            fresh: how == Queue::Dispatch,
        };
        let mut headers = HeaderMap::new();
        hookbus_telemetry::inject_into_nats(
            &mut headers,
            &hookbus_telemetry::outgoing_context(trace),
        );
        self.publish_task(self.task_subject(endpoint), &task, &message_id, headers)
            .await?;
        self.metrics.dispatched.inc();
        Ok(())
    }
}
