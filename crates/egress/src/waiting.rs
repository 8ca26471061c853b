//! Tasks that wait in `EGRESS_TASKS` instead of a partition's ack-pending set:
//!
//! - a retry, or a task its endpoint has no room for (parked), is stored as a message schedule
//!   on `egress.retry.<endpoint>.<event>`, which the server publishes onto the endpoint's task
//!   subject when it is due;
//! - a disabled endpoint's tasks are held on `egress.held.<endpoint>` (acked, stored) and
//!   released onto its task subject when it is enabled again.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use hookbus_proto::egress::v1::DeliveryTask;
use prost::Message;
use tokio::time::Instant;

use crate::engine::Engine;
use crate::store::{self, StoreError};

impl Engine {
    /// Stores `next` as a message schedule that the server publishes onto its endpoint's task
    /// subject in `delay`, carrying the trace context of `message`.
    pub(crate) async fn schedule_task(
        &self,
        next: &DeliveryTask,
        delay: Duration,
        message: &jetstream::Message,
        message_id: &str,
    ) -> Result<(), StoreError> {
        let at = time::OffsetDateTime::now_utc() + delay;
        let at_text = at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| StoreError::new("schedule", e))?;
        let mut headers = hookbus_telemetry::trace_headers_of(message.headers.as_ref());
        headers.insert("Nats-Schedule", format!("@at {at_text}").as_str());
        headers.insert(
            "Nats-Schedule-Target",
            self.task_subject(&next.endpoint_id).as_str(),
        );
        let mut next = next.clone();
        next.next_attempt_at = Some(hookbus_proto::Timestamp {
            seconds: at.unix_timestamp(),
            nanos: at.nanosecond() as i32,
        });
        self.publish_task(
            store::retry_subject(&next.endpoint_id, &next.event_id),
            &next,
            message_id,
            headers,
        )
        .await
    }

    /// Parks a task its endpoint has no room for: stored to come back in `delay`, then acked.
    pub(crate) async fn park(
        &self,
        message: jetstream::Message,
        task: DeliveryTask,
        delay: Duration,
    ) {
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let id = format!("park:{}:{}:{sequence}", task.endpoint_id, task.event_id);
        match self.schedule_task(&task, delay, &message, &id).await {
            Ok(()) => {
                tracing::debug!(endpoint = %task.endpoint_id, event = %task.event_id, ?delay, "task parked");
                self.metrics.parked.inc();
                let _ = message.ack().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot park the task; redelivered later");
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            }
        }
    }

    /// Holds a task of a disabled endpoint until it is enabled: stored on its held subject, then
    /// acked. Should the endpoint have been enabled meanwhile (on another replica, whose release
    /// ran before this task was held), the held tasks are released at once.
    pub(crate) async fn hold(&self, message: jetstream::Message, task: DeliveryTask) {
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let id = format!("held:{}:{}:{sequence}", task.endpoint_id, task.event_id);
        let headers = hookbus_telemetry::trace_headers_of(message.headers.as_ref());
        let endpoint = task.endpoint_id.clone();
        if let Err(e) = self
            .publish_task(store::held_subject(&endpoint), &task, &id, headers)
            .await
        {
            tracing::warn!(error = %e, "cannot hold the task; redelivered later");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
            return;
        }
        self.metrics.held.inc();
        let _ = message.ack().await;
        let current = self
            .directory
            .fresh_since(
                &self.stores.endpoints,
                Instant::now(),
                Duration::from_secs(5),
            )
            .await;
        let enabled = self
            .directory
            .get(&endpoint)
            .is_some_and(|live| !live.record.disabled);
        if current.is_ok()
            && enabled
            && let Err(e) = self.release_held(&endpoint).await
        {
            tracing::warn!(endpoint, error = %e, "held tasks not released");
        }
    }

    /// Moves an enabled endpoint's held tasks back onto its task subject; returns how many.
    pub async fn release_held(&self, endpoint: &str) -> Result<usize, StoreError> {
        let subject = store::held_subject(endpoint);
        let held = store::read_all(
            &self.stores.tasks,
            subject.clone(),
            jetstream::consumer::DeliverPolicy::All,
        )
        .await
        .map_err(|e| StoreError::new("read held tasks", e))?;
        let mut last = 0;
        for message in &held {
            let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            if let Ok(task) = DeliveryTask::decode(message.payload.clone()) {
                let headers = hookbus_telemetry::trace_headers_of(message.headers.as_ref());
                let id = format!("released:{endpoint}:{sequence}");
                self.publish_task(self.task_subject(endpoint), &task, &id, headers)
                    .await?;
            }
            last = last.max(sequence);
        }
        if last > 0 {
            self.stores
                .tasks
                .purge()
                .filter(subject)
                .sequence(last + 1)
                .await
                .map_err(|e| StoreError::new("purge released tasks", e))?;
        }
        Ok(held.len())
    }
}
