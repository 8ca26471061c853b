//! The attempt log, stream `EGRESS_ATTEMPTS`: one protobuf `DeliveryAttempt` per try on
//! `egress.attempts.<endpoint>.<block>.<event>`. It is also each task's status: the latest record
//! of an (endpoint, event) says whether it was delivered, is waiting for a retry, or is dead, so
//! a delivery costs one stored write beside its task.
//!
//! - The status is a direct get of the last message on `egress.attempts.<endpoint>.*.<event>`.
//! - Newest first in O(limit): the replica that owns an endpoint's partition numbers its attempts
//!   from 0 ([`Numbers`]); `block` is `number / BLOCK`, so a page reads the newest block and as
//!   many older ones as it needs, each a batch of at most [`BLOCK`] records, whatever the
//!   endpoint's total.
//! - Reads go through the stream's direct get (`allow_direct`), in batches: no consumer is made.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::stream::{self, DirectGetErrorKind};
use futures_util::StreamExt;
use hookbus_proto::egress::v1::DeliveryAttempt;
use hookbus_proto::egress::v1::delivery_attempt::State;
use prost::Message;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::store_error::StoreError;

/// The stream of the log.
pub const STREAM: &str = "EGRESS_ATTEMPTS";

/// Attempts per block of an endpoint's log.
pub const BLOCK: u64 = 64;
/// The most records one direct-get batch asks for.
const BATCH: usize = 256;
/// How long a batch may take to arrive.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an attempt of an (endpoint, event) is stored.
pub fn subject(endpoint: &str, number: u64, event: &str) -> String {
    format!("egress.attempts.{endpoint}.{}.{event}", number / BLOCK)
}

/// Every attempt of one (endpoint, event).
pub fn of_event(endpoint: &str, event: &str) -> String {
    format!("egress.attempts.{endpoint}.*.{event}")
}

/// Every attempt of one endpoint.
pub fn of_endpoint(endpoint: &str) -> String {
    format!("egress.attempts.{endpoint}.*.*")
}

/// Every attempt of one event (message), at every endpoint.
pub fn of_message(event: &str) -> String {
    format!("egress.attempts.*.*.{event}")
}

fn of_block(endpoint: &str, block: u64) -> String {
    format!("egress.attempts.{endpoint}.{block}.*")
}

/// Whether the task of this record is done with: delivered.
pub fn delivered(record: &DeliveryAttempt) -> bool {
    record.state() == State::Delivered
}

/// A record and its sequence in the stream.
pub type Found = (u64, DeliveryAttempt);

/// A batch of direct gets, as `$JS.API.DIRECT.GET.<stream>` takes it.
#[derive(Serialize)]
struct BatchRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<String>,
    next_by_subj: &'a str,
    batch: usize,
}

/// The handle to the log.
#[derive(Clone)]
pub struct AttemptLog {
    pub stream: stream::Stream,
    js: async_nats::jetstream::Context,
    client: Client,
}

impl AttemptLog {
    pub fn new(js: async_nats::jetstream::Context, stream: stream::Stream) -> Self {
        Self {
            client: js.client(),
            js,
            stream,
        }
    }

    /// Stores a record, without waiting for the broker's answer: the returned future is it.
    pub async fn publish(&self, record: &DeliveryAttempt) -> Result<PublishAckFuture, StoreError> {
        self.js
            .publish(
                subject(&record.endpoint_id, record.number, &record.event_id),
                record.encode_to_vec().into(),
            )
            .await
            .map_err(|e| StoreError::new("store an attempt", e))
    }

    /// The latest record on `filter`, if any.
    async fn last(&self, filter: String) -> Result<Option<DeliveryAttempt>, StoreError> {
        let what = "read the last attempt";
        match self.stream.direct_get_last_for_subject(filter).await {
            Ok(message) => DeliveryAttempt::decode(message.payload)
                .map(Some)
                .map_err(|e| StoreError::new(what, e)),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::new(what, e)),
        }
    }

    /// The status of an (endpoint, event): its latest attempt.
    pub async fn status(
        &self,
        endpoint: &str,
        event: &str,
    ) -> Result<Option<DeliveryAttempt>, StoreError> {
        self.last(of_event(endpoint, event)).await
    }

    /// The number of the endpoint's latest attempt.
    pub async fn last_number(&self, endpoint: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.last(of_endpoint(endpoint)).await?.map(|r| r.number))
    }

    /// Up to `max` records on `filter`, in stream order, from `from`. `more` says whether others
    /// follow.
    pub async fn forward(
        &self,
        filter: &str,
        from: Start,
        max: usize,
    ) -> Result<(Vec<Found>, bool), StoreError> {
        let what = "read attempts";
        let fail = |e: &dyn std::fmt::Display| StoreError::new(what, e.to_string());
        let (seq, start_time) = match from {
            Start::Sequence(seq) => (Some(seq.max(1)), None),
            Start::Time(at) => (
                None,
                Some(
                    at.to_offset(time::UtcOffset::UTC)
                        .format(&time::format_description::well_known::Rfc3339)
                        .map_err(|e| fail(&e))?,
                ),
            ),
        };
        let request = serde_json::to_vec(&BatchRequest {
            seq,
            start_time,
            next_by_subj: filter,
            batch: max.clamp(1, BATCH),
        })
        .map_err(|e| fail(&e))?;
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| fail(&e))?;
        self.client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{STREAM}"),
                inbox,
                request.into(),
            )
            .await
            .map_err(|e| fail(&e))?;
        let mut found = Vec::new();
        loop {
            let reply = tokio::time::timeout(BATCH_TIMEOUT, replies.next())
                .await
                .map_err(|_| fail(&"no answer in time"))?
                .ok_or_else(|| fail(&"the connection closed"))?;
            let header = |name: &str| {
                reply
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .and_then(|v| v.as_str().parse::<u64>().ok())
            };
            match reply.status.map(|s| s.as_u16()) {
                None | Some(200) => {}
                // The end of the batch; pending is what matches after it.
                Some(204) => return Ok((found, header("Nats-Num-Pending").unwrap_or(0) > 0)),
                Some(404) => return Ok((found, false)),
                Some(status) => {
                    return Err(fail(&format!(
                        "{status} {}",
                        reply.description.as_deref().unwrap_or_default()
                    )));
                }
            }
            let sequence =
                header("Nats-Sequence").ok_or_else(|| fail(&"a reply without a sequence"))?;
            let record = DeliveryAttempt::decode(reply.payload).map_err(|e| fail(&e))?;
            found.push((sequence, record));
        }
    }

    /// Every record on `filter` from `from`, in stream order.
    pub async fn all(&self, filter: &str, mut from: Start) -> Result<Vec<Found>, StoreError> {
        let mut all = Vec::new();
        loop {
            let (found, more) = self.forward(filter, from, BATCH).await?;
            let last = found.last().map(|(sequence, _)| *sequence);
            all.extend(found);
            match last {
                Some(last) if more => from = Start::Sequence(last + 1),
                _ => return Ok(all),
            }
        }
    }

    /// One block of an endpoint's attempts, in stream order.
    pub async fn block(&self, endpoint: &str, block: u64) -> Result<Vec<Found>, StoreError> {
        self.all(&of_block(endpoint, block), Start::Sequence(1))
            .await
    }

    /// The number of the endpoint's oldest attempt still stored.
    pub async fn first_number(&self, endpoint: &str) -> Result<Option<u64>, StoreError> {
        let (found, _) = self
            .forward(&of_endpoint(endpoint), Start::Sequence(1), 1)
            .await?;
        Ok(found.first().map(|(_, r)| r.number))
    }
}

/// Where a forward read starts.
#[derive(Debug, Clone)]
pub enum Start {
    Sequence(u64),
    /// The first record stored at or after this time.
    Time(time::OffsetDateTime),
}

/// The numbers of the next attempts of the endpoints of one partition, at its owner: read from
/// the log on first use (the last number stored, plus one), then counted here. Made anew each
/// time the partition is taken, since its previous owner may have numbered more since.
#[derive(Default)]
pub struct Numbers {
    next: Mutex<HashMap<String, Arc<OnceCell<AtomicU64>>>>,
}

impl Numbers {
    /// The number of the endpoint's next attempt.
    pub async fn take(&self, log: &AttemptLog, endpoint: &str) -> Result<u64, StoreError> {
        let cell = self
            .next
            .lock()
            .expect("not poisoned")
            .entry(endpoint.to_owned())
            .or_default()
            .clone();
        let counter = cell
            .get_or_try_init(|| async {
                let last = log.last_number(endpoint).await?;
                Ok::<_, StoreError>(AtomicU64::new(last.map_or(0, |n| n + 1)))
            })
            .await?;
        Ok(counter.fetch_add(1, Ordering::Relaxed))
    }

    /// Forgets the endpoints `keep` says no to (deleted ones).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.next
            .lock()
            .expect("not poisoned")
            .retain(|endpoint, _| keep(endpoint));
    }
}
