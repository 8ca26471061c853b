//! One task at the replica that owns its partition: skip it if it was delivered (unless it is a
//! resend), else one signed attempt ([`crate::deliver`]) and what follows from its answer:
//!
//! - delivered: the endpoint is healthy;
//! - failed: the retry is stored as a message schedule on `egress.retry.<endpoint>.<event>` and
//!   the task acked, so a failing endpoint holds no slot while it waits; past the schedule the
//!   task is dead-lettered and `hookbus.delivery.exhausted` published;
//! - 410: the endpoint is disabled and the task held.
//!
//! Each try leaves one record in the attempt log, which is also the task's status
//! ([`crate::attempt_log`]). On the hot path it is the one stored write beside the task: it is
//! published without waiting, the endpoint's slot is freed, and the task is acked once the
//! broker has stored the record ([`Settle`]). Retries, parked and held tasks wait in the stream
//! ([`crate::waiting`]).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::{self, AckKind};
use hookbus_proto::egress::v1::delivery_attempt::{self, State};
use hookbus_proto::egress::v1::{DeliveryAttempt, DeliveryExhausted, DeliveryTask};
use prost::Message;
use tokio::time::Instant;
use tracing::Instrument;

use crate::attempt_log::{self, Numbers};
use crate::deliver::{self, Target, Verdict};
use crate::directory::Live;
use crate::engine::{DLQ_CONSUMER, Engine, EventError, timestamp, unix_now};
use crate::flows::queue::Limiter;

/// What is left of a delivery once its endpoint's slot is free: the task, acked once its attempt
/// record is stored.
pub(crate) struct Settle {
    message: jetstream::Message,
    record: PublishAckFuture,
}

/// What one delivery needs beside its task.
pub(crate) struct Slot {
    pub limiter: Option<Arc<Limiter>>,
    pub numbers: Arc<Numbers>,
}

impl Engine {
    /// One task, in a span that continues the event's trace from the task's headers.
    pub(crate) async fn deliver(
        &self,
        message: jetstream::Message,
        task: DeliveryTask,
        slot: Slot,
    ) -> Option<Settle> {
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
        self.deliver_task(message, task, slot)
            .instrument(span)
            .await
    }

    /// Acks a delivered or rescheduled task once its attempt record is stored. A record that
    /// could not be stored is logged, and the task acked all the same: it was tried, and trying
    /// it again would send it twice.
    pub(crate) async fn settle(&self, settle: Settle) {
        if let Err(e) = settle.record.await {
            tracing::warn!(subject = %settle.message.subject, error = %e, "attempt not recorded");
        }
        let _ = settle.message.ack().await;
    }

    async fn deliver_task(
        &self,
        message: jetstream::Message,
        task: DeliveryTask,
        slot: Slot,
    ) -> Option<Settle> {
        let Some(live) = self.directory.get(&task.endpoint_id) else {
            // The endpoint was deleted: its tasks go with it.
            let _ = message.ack_with(AckKind::Term).await;
            return None;
        };
        if live.record.disabled {
            self.hold(message, task).await;
            return None;
        }
        let retry_soon = |what: &str, e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "{what}; task retried");
            let message = message.clone();
            async move {
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
            }
        };
        // A fresh task's first delivery, first try: nothing was recorded for it yet (its message
        // id keeps it single). Retries, resends, recovered tasks and redeliveries read the latest
        // record: a resend or another copy may have delivered it.
        let fresh = task.fresh
            && task.attempt == 0
            && !task.resend
            && message.info().is_ok_and(|info| info.delivered == 1);
        if !fresh && !task.resend {
            match self
                .stores
                .attempts
                .status(&task.endpoint_id, &task.event_id)
                .await
            {
                Ok(Some(last)) if attempt_log::delivered(&last) => {
                    let _ = message.ack().await;
                    return None;
                }
                Ok(_) => {}
                Err(e) => {
                    retry_soon("status unreadable", &e).await;
                    return None;
                }
            }
        }
        let number = match slot
            .numbers
            .take(&self.stores.attempts, &task.endpoint_id)
            .await
        {
            Ok(number) => number,
            Err(e) => {
                retry_soon("attempt number unreadable", &e).await;
                return None;
            }
        };
        let sequence = message
            .info()
            .map(|i| i.stream_sequence)
            .unwrap_or_default();
        let made = task.attempt + 1;
        let attempt = match self.attempt(&message, &live, &task, slot.limiter).await {
            Ok(attempt) => attempt,
            Err(EventError::Unavailable(e)) => {
                tracing::warn!(error = %e, "event unreadable; task retried");
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                    .await;
                return None;
            }
            Err(EventError::Gone(permanent)) => {
                let record = self.record_of(&task, number, None, State::Dead, &permanent);
                self.dead_letter_then_ack(&message, &task, (sequence, made), &permanent, record)
                    .await;
                return None;
            }
        };
        let error = attempt.error.clone().or_else(|| {
            attempt
                .status
                .filter(|s| !(200..300).contains(s))
                .map(|s| format!("HTTP {s}"))
        });
        let now = unix_now();
        match attempt.verdict {
            Verdict::Delivered => {
                self.healthy(&task.endpoint_id).await;
                let record = self.record_of(&task, number, Some(&attempt), State::Delivered, "");
                self.pipelined(message, &record).await
            }
            Verdict::Disable => {
                self.disable(&task.endpoint_id, "the endpoint answered 410 Gone")
                    .await;
                let record = self.record_of(&task, number, Some(&attempt), State::Queued, "");
                self.stored(&record).await;
                // The task itself is kept: tried again once the endpoint is enabled.
                let mut again = task;
                again.attempt = 0;
                again.fresh = false;
                self.hold(message, again).await;
                None
            }
            Verdict::Retry { after } => {
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
                    let record = self.record_of(&task, number, Some(&attempt), State::Dead, "");
                    self.dead_letter_then_ack(&message, &task, (sequence, made), &reason, record)
                        .await;
                    return None;
                };
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
                let record = self.record_of(&task, number, Some(&attempt), State::Failed, "");
                self.pipelined(message, &record).await
            }
        }
    }

    /// The record of one try of `task`: `attempt` is how it went; `None` when nothing was sent,
    /// and `unsent` says why.
    fn record_of(
        &self,
        task: &DeliveryTask,
        number: u64,
        attempt: Option<&deliver::Attempt>,
        state: State,
        unsent: &str,
    ) -> DeliveryAttempt {
        let delivered = attempt.is_some_and(|a| a.verdict == Verdict::Delivered);
        DeliveryAttempt {
            id: uuid::Uuid::now_v7().to_string(),
            event_id: task.event_id.clone(),
            endpoint_id: task.endpoint_id.clone(),
            attempt: task.attempt + 1,
            status: if delivered {
                delivery_attempt::Status::Succeeded
            } else {
                delivery_attempt::Status::Failed
            } as i32,
            response_status: attempt
                .and_then(|a| a.status)
                .map(u32::from)
                .unwrap_or_default(),
            latency_ms: attempt.map_or(0, |a| a.latency.as_millis() as u64),
            response_body: attempt.map(|a| a.response_body.clone()).unwrap_or_default(),
            // Why a request got no answer (or was never sent); an answer says it in its status.
            error: match attempt {
                Some(attempt) => attempt.error.clone().unwrap_or_default(),
                None => unsent.to_owned(),
            },
            attempted_at: Some(timestamp(unix_now())),
            state: state as i32,
            event_type: task.event_type.clone(),
            stream_sequence: task.stream_sequence,
            queued_at: task.created_at,
            number,
        }
    }

    /// Publishes `record` and leaves the task to be acked once it is stored.
    async fn pipelined(
        &self,
        message: jetstream::Message,
        record: &DeliveryAttempt,
    ) -> Option<Settle> {
        match self.stores.attempts.publish(record).await {
            Ok(record) => Some(Settle { message, record }),
            Err(e) => {
                tracing::warn!(error = %e, "attempt not recorded");
                let _ = message.ack().await;
                None
            }
        }
    }

    /// Stores `record` and waits for it; a failure is logged.
    async fn stored(&self, record: &DeliveryAttempt) {
        let stored = match self.stores.attempts.publish(record).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            tracing::warn!(endpoint = %record.endpoint_id, event = %record.event_id, error = %e, "attempt not recorded");
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

    /// Sends the task's event once and counts the attempt in the metrics. `Err` is a task that cannot be sent:
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
        let (body, content_type) = deliver::body_of(&event, &self.registry)
            .map_err(|e| EventError::Gone(e.to_string()))?;
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
        record: DeliveryAttempt,
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
        self.stored(&record).await;
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
