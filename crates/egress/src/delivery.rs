//! One task at the replica that owns its partition: skip it if it was delivered (unless it is a
//! resend), else one signed attempt ([`crate::deliver`]) and what follows from its answer:
//!
//! - delivered: the status says so, the endpoint is healthy;
//! - failed: the retry is stored as a message schedule on `egress.retry.<endpoint>.<event>` and
//!   the task acked, so a failing endpoint holds no slot while it waits; past the schedule the
//!   task is dead-lettered and `hookbus.delivery.exhausted` published;
//! - 410: the endpoint is disabled and the task held.
//!
//! Retries, parked and held tasks wait in the stream ([`crate::waiting`]).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use hookbus_proto::egress::v1::{
    DeliveryAttempt, DeliveryExhausted, DeliveryTask, delivery_attempt,
};
use prost::Message;
use tokio::time::Instant;
use tracing::Instrument;

use crate::deliver::{self, Target, Verdict};
use crate::directory::Live;
use crate::engine::{DLQ_CONSUMER, Engine, EventError, timestamp, unix_now};
use crate::flows::queue::Limiter;
use crate::store::{self, State, Status};

/// A status record a delivery leaves to be written once its task is acked and its slot free.
pub(crate) struct StatusWrite {
    endpoint: String,
    event: String,
    status: Status,
}

impl Engine {
    /// One task, in a span that continues the event's trace from the task's headers.
    pub(crate) async fn deliver(
        &self,
        message: jetstream::Message,
        task: DeliveryTask,
        limiter: Option<Arc<Limiter>>,
    ) -> Option<StatusWrite> {
        let span = tracing::debug_span!(
            "deliver",
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.operation = "process",
            messaging.destination.name = %message.subject,
            messaging.message.id = %task.event_id,
            endpoint = %task.endpoint_id,
        );
        if let Some(headers) = &message.headers {
            hookbus_telemetry::set_parent_from_nats(&span, headers);
        }
        self.deliver_task(message, task, limiter)
            .instrument(span)
            .await
    }

    async fn deliver_task(
        &self,
        message: jetstream::Message,
        task: DeliveryTask,
        limiter: Option<Arc<Limiter>>,
    ) -> Option<StatusWrite> {
        let Some(live) = self.directory.get(&task.endpoint_id) else {
            // The endpoint was deleted: its tasks go with it.
            let _ = message.ack_with(AckKind::Term).await;
            return None;
        };
        if live.record.disabled {
            self.hold(message, task).await;
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
        let (verdict, error) = match self.attempt(&message, &live, &task, limiter).await {
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
                self.dead_letter_then_ack(&message, &task, (sequence, made), &permanent, status)
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
                record.last_error = error;
                self.disable(&task.endpoint_id, "the endpoint answered 410 Gone")
                    .await;
                // The task itself is kept: tried again once the endpoint is enabled.
                let mut again = task;
                again.attempt = 0;
                again.fresh = false;
                let write = StatusWrite {
                    endpoint: again.endpoint_id.clone(),
                    event: again.event_id.clone(),
                    status: record,
                };
                self.hold(message, again).await;
                return Some(write);
            }
            Verdict::Retry { after } => {
                record.last_error = error.clone();
                let failing = self.failing(&task.endpoint_id, now).await;
                if failing >= self.settings.disable_after.as_secs() as i64 {
                    let reason = format!(
                        "no successful delivery for {}",
                        humantime::format_duration(self.settings.disable_after)
                    );
                    self.disable(&task.endpoint_id, &reason).await;
                }
                let Some(delay) = self.schedule.next(made, after, rand::random::<f64>()) else {
                    let reason = format!(
                        "gave up after {made} attempts: {}",
                        error.as_deref().unwrap_or("failed")
                    );
                    self.dead_letter_then_ack(
                        &message,
                        &task,
                        (sequence, made),
                        &reason,
                        Some(record),
                    )
                    .await;
                    return None;
                };
                record.state = State::Failed;
                let mut next = task.clone();
                next.attempt = made;
                next.resend = false;
                next.fresh = false;
                let id = format!(
                    "retry:{}:{}:{made}:{sequence}",
                    task.endpoint_id, task.event_id
                );
                if let Err(e) = self.schedule_task(&next, delay, &message, &id).await {
                    tracing::warn!(error = %e, "cannot schedule the retry; redelivering");
                    let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
                    return None;
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
    pub(crate) async fn write_status(&self, write: StatusWrite) {
        if let Err(e) = self
            .stores
            .put_status(&write.endpoint, &write.event, &write.status)
            .await
        {
            tracing::warn!(endpoint = %write.endpoint, event = %write.event, error = %e, "status not recorded");
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

    /// Sends the task's event once and logs the attempt. `Err` is a task that cannot be sent:
    /// never ([`EventError::Gone`]: its event is gone, or cannot be turned into a body), or not
    /// now ([`EventError::Unavailable`]: the broker did not answer).
    async fn attempt(
        &self,
        message: &jetstream::Message,
        live: &Live,
        task: &DeliveryTask,
        limiter: Option<Arc<Limiter>>,
    ) -> Result<deliver::Attempt, EventError> {
        let event = self.event_at(task.stream_sequence, &task.event_id).await?;
        let trace = message
            .headers
            .as_ref()
            .map(hookbus_telemetry::context_from_nats)
            .unwrap_or_default();
        let (body, content_type) =
            deliver::body_of(&event, &self.registry).map_err(EventError::Gone)?;
        if let Some(limiter) = limiter {
            self.holding(message, limiter.ready()).await;
        }
        let permit = self
            .holding(message, self.global.clone().acquire_owned())
            .await
            .expect("never closed");
        let now = unix_now();
        let secrets = live.active_secrets(now);
        let target = Target {
            url: &live.url,
            secrets: &secrets,
            headers: &live.headers,
            trace: &trace,
        };
        let attempt = deliver::attempt(
            &self.client,
            &self.policy,
            target,
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
                store::attempt_subject(&task.endpoint_id, &task.event_id),
                record.encode_to_vec().into(),
            )
            .await
        {
            tracing::warn!(error = %e, "attempt not logged");
        }
        Ok(attempt)
    }

    /// Dead-letters the task, then acks it; a dead letter that cannot be stored leaves the task
    /// to be redelivered instead.
    async fn dead_letter_then_ack(
        &self,
        message: &jetstream::Message,
        task: &DeliveryTask,
        (sequence, made): (u64, u32),
        reason: &str,
        status: Option<Status>,
    ) {
        tracing::warn!(endpoint = %task.endpoint_id, event = %task.event_id, reason, "delivery dead-lettered");
        let letter = hookbus_bus::dlq::DeadLetter {
            consumer: DLQ_CONSUMER,
            subject: &self.task_subject(&task.endpoint_id),
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
        let mut record = status.unwrap_or(Status {
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
}
