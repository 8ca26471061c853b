//! What the egress keeps, all in JetStream and replicated with the cluster:
//!
//! - KV `egress_endpoints`: one protobuf `Endpoint` per id, watched by every replica.
//! - KV `egress_dispatched`: one key per dispatched event (its id; the value is its `EVENTS`
//!   sequence), written once the event's tasks are stored, kept for `retention` and at least 3
//!   days. It is the dispatcher's dedup: one write per event, whatever its endpoints.
//! - KV `egress_status`: one JSON [`Status`] per (endpoint, event), key `<endpoint>.<event>`,
//!   written after each attempt and kept for the retention period: what `recover` reads.
//! - KV `egress_health`: since when an endpoint has been failing, for `disable_after`.
//! - KV `egress_replicas`: one key per running replica, refreshed while it lives; the replicas
//!   share the task partitions among the keys present.
//! - Stream `EGRESS_TASKS`: tasks on `egress.tasks.<partition>.<endpoint>` (the partition is
//!   [`partition_of`] the endpoint id), one durable consumer per partition; retries and parked
//!   tasks waiting on `egress.retry.<endpoint>.<event>` as message schedules that the server
//!   publishes onto the task subject when they are due; tasks of a disabled endpoint held on
//!   `egress.held.<endpoint>` until it is enabled.
//! - Stream `EGRESS_ATTEMPTS`: one protobuf `DeliveryAttempt` per try,
//!   `egress.attempts.<endpoint>.<event>` (`egress.attempts.<endpoint>` before 2026-12-02).

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use hookbus_bus::ProvisionError;
use serde::{Deserialize, Serialize};

pub const ENDPOINTS_BUCKET: &str = "egress_endpoints";
pub const STATUS_BUCKET: &str = "egress_status";
pub const HEALTH_BUCKET: &str = "egress_health";
pub const DISPATCHED_BUCKET: &str = "egress_dispatched";
/// The least time a dispatched event stays marked, whatever `retention` is.
pub const DISPATCHED_AT_LEAST: Duration = Duration::from_secs(3 * 24 * 3600);
pub const TASKS_STREAM: &str = "EGRESS_TASKS";
pub const ATTEMPTS_STREAM: &str = "EGRESS_ATTEMPTS";
pub const REPLICAS_BUCKET: &str = "egress_replicas";
/// The priority group every partition consumer pins one replica in.
pub const PRIORITY_GROUP: &str = "egress";
/// Where `EGRESS_TASKS` records the partition count its subjects were laid out for.
const PARTITIONS_METADATA: &str = "hookbus.partitions";

/// The partition of an endpoint: FNV-1a (64 bit) of its id, modulo `partitions`. Stable across
/// versions and replicas, since the task subjects are laid out by it.
pub fn partition_of(endpoint: &str, partitions: u16) -> u16 {
    (fnv1a(endpoint.as_bytes()) % u64::from(partitions.max(1))) as u16
}

/// FNV-1a, 64 bit.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub fn task_subject(partition: u16, endpoint: &str) -> String {
    format!("egress.tasks.{partition}.{endpoint}")
}

/// An endpoint's task subject, whatever its partition.
pub fn endpoint_tasks(endpoint: &str) -> String {
    format!("egress.tasks.*.{endpoint}")
}

/// What one partition's consumer reads.
pub fn partition_filter(partition: u16) -> String {
    format!("egress.tasks.{partition}.*")
}

/// The durable consumer of one partition.
pub fn partition_consumer(partition: u16) -> String {
    format!("egress-p{partition}")
}

/// Where a disabled endpoint's tasks wait until it is enabled.
pub fn held_subject(endpoint: &str) -> String {
    format!("egress.held.{endpoint}")
}

pub fn retry_subject(endpoint: &str, event: &str) -> String {
    format!("egress.retry.{endpoint}.{event}")
}

/// Where an attempt of one (endpoint, event) is stored.
pub fn attempt_subject(endpoint: &str, event: &str) -> String {
    format!("egress.attempts.{endpoint}.{event}")
}

/// Where the egress stored an endpoint's attempts before they had a subject per event
/// (before 2026-12-02); still read beside the new ones.
pub fn legacy_attempts(endpoint: &str) -> String {
    format!("egress.attempts.{endpoint}")
}

/// Where an endpoint's attempts are.
pub fn endpoint_attempts(endpoint: &str) -> Vec<String> {
    vec![
        legacy_attempts(endpoint),
        format!("egress.attempts.{endpoint}.*"),
    ]
}

/// Where one event's attempts to every endpoint are.
pub fn message_attempts(event: &str) -> String {
    format!("egress.attempts.*.{event}")
}

pub fn status_key(endpoint: &str, event: &str) -> String {
    format!("{endpoint}.{event}")
}

/// A broker write that did not complete.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct StoreError {
    pub what: &'static str,
    pub reason: String,
}

impl StoreError {
    pub fn new(what: &'static str, reason: impl std::fmt::Display) -> Self {
        Self {
            what,
            reason: reason.to_string(),
        }
    }
}

/// Where a task for one (endpoint, event) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for its first try (also while the endpoint is disabled).
    Queued,
    /// Failed at least once; a retry is scheduled.
    Failed,
    Delivered,
    /// Every attempt failed; in the dead letters.
    Dead,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub state: State,
    pub event_type: String,
    pub stream_sequence: u64,
    pub attempts: u32,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The handles to everything above.
#[derive(Clone)]
pub struct Stores {
    pub js: jetstream::Context,
    pub endpoints: kv::Store,
    pub status: kv::Store,
    pub dispatched: kv::Store,
    pub health: kv::Store,
    pub replicas: kv::Store,
    pub tasks: stream::Stream,
    pub attempts: stream::Stream,
    pub events: stream::Stream,
}

fn provision(what: &str) -> impl Fn(String) -> ProvisionError + '_ {
    move |reason| ProvisionError {
        stream: what.to_owned(),
        reason,
    }
}

fn bucket_config(name: &str, max_age: Duration, replicas: usize) -> kv::Config {
    kv::Config {
        bucket: name.into(),
        history: 1,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// The bucket as it is, or created with these settings.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, ProvisionError> {
    match js.get_key_value(name).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_key_value(bucket_config(name, max_age, replicas))
            .await
            .map_err(|e| provision(name)(e.to_string())),
    }
}

impl Stores {
    /// Creates (or updates) the buckets and streams; any replica may start first.
    pub async fn provision(
        js: jetstream::Context,
        retention: Duration,
        replicas: usize,
        events: &str,
        (partitions, replica_timeout): (u16, Duration),
    ) -> Result<Self, ProvisionError> {
        check_layout(&js, partitions).await?;
        hookbus_bus::streams::ensure_stream(
            &js,
            stream::Config {
                name: TASKS_STREAM.into(),
                description: Some("egress delivery tasks, scheduled retries and held tasks".into()),
                subjects: vec![
                    "egress.tasks.*.*".into(),
                    "egress.retry.*.*".into(),
                    "egress.held.*".into(),
                ],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                max_age: retention,
                num_replicas: replicas,
                allow_message_schedules: true,
                allow_message_ttl: true,
                // One durable consumer per partition, and room for a few readers beside them.
                max_consumers: i32::from(partitions) + 64,
                duplicate_window: Duration::from_secs(120),
                metadata: [(PARTITIONS_METADATA.to_owned(), partitions.to_string())].into(),
                ..Default::default()
            },
        )
        .await?;
        hookbus_bus::streams::ensure_stream(
            &js,
            stream::Config {
                name: ATTEMPTS_STREAM.into(),
                description: Some("egress delivery attempts".into()),
                subjects: vec!["egress.attempts.*".into(), "egress.attempts.*.*".into()],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                max_age: retention,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        let endpoints = bucket(&js, ENDPOINTS_BUCKET, Duration::ZERO, replicas).await?;
        let status = bucket(&js, STATUS_BUCKET, retention, replicas).await?;
        let dispatched = bucket(
            &js,
            DISPATCHED_BUCKET,
            retention.max(DISPATCHED_AT_LEAST),
            replicas,
        )
        .await?;
        let health = bucket(&js, HEALTH_BUCKET, Duration::ZERO, replicas).await?;
        // Its max_age is how long a replica that stopped refreshing its key counts as alive, so
        // it follows `replica_timeout` of the replica that started last.
        let replicas_bucket = js
            .create_or_update_key_value(bucket_config(REPLICAS_BUCKET, replica_timeout, replicas))
            .await
            .map_err(|e| provision(REPLICAS_BUCKET)(e.to_string()))?;
        let get = |name: &'static str| {
            let js = js.clone();
            async move {
                js.get_stream(name)
                    .await
                    .map_err(|e| provision(name)(e.to_string()))
            }
        };
        let tasks = get(TASKS_STREAM).await?;
        let attempts = get(ATTEMPTS_STREAM).await?;
        let events = js
            .get_stream(events)
            .await
            .map_err(|e| provision(events)(e.to_string()))?;
        Ok(Self {
            js,
            endpoints,
            status,
            dispatched,
            health,
            replicas: replicas_bucket,
            tasks,
            attempts,
            events,
        })
    }

    pub async fn status(&self, endpoint: &str, event: &str) -> Result<Option<Status>, StoreError> {
        let what = "read a status record";
        match self
            .status
            .get(status_key(endpoint, event))
            .await
            .map_err(|e| StoreError::new(what, e))?
        {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::new(what, format!("{endpoint}.{event}: {e}"))),
        }
    }

    pub async fn put_status(
        &self,
        endpoint: &str,
        event: &str,
        status: &Status,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(status).map_err(|e| StoreError::new("status", e))?;
        self.status
            .put(status_key(endpoint, event), bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| StoreError::new("write a status record", e))
    }

    /// The `EVENTS` sequence of an event that was dispatched, if it was.
    pub async fn dispatched(&self, event: &str) -> Result<Option<u64>, StoreError> {
        let what = "read a dispatch marker";
        match self
            .dispatched
            .get(event)
            .await
            .map_err(|e| StoreError::new(what, e))?
        {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.parse().ok())
                .map(Some)
                .ok_or_else(|| StoreError::new(what, format!("{event}: not a sequence"))),
        }
    }

    /// Marks an event dispatched (once its tasks are stored). A marker already there is kept.
    pub async fn mark_dispatched(&self, event: &str, sequence: u64) -> Result<(), StoreError> {
        match self
            .dispatched
            .create(event, sequence.to_string().into())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(StoreError::new("write a dispatch marker", e)),
        }
    }

    /// The status records of one endpoint written at or after `since` (unix seconds), each as
    /// last written, with its event id. Reads the bucket's writes since then, not the
    /// endpoint's whole history: a record created since `since` was written since, and so was
    /// every record an attempt since then changed.
    pub async fn statuses_written_since(
        &self,
        endpoint: &str,
        since: i64,
    ) -> Result<Vec<(String, Status)>, StoreError> {
        let what = "read the status records";
        let prefix = format!("$KV.{STATUS_BUCKET}.{endpoint}.");
        let start_time = time::OffsetDateTime::from_unix_timestamp(since)
            .map_err(|e| StoreError::new(what, e))?;
        let writes = read_all(
            &self.status.stream,
            format!("{prefix}*"),
            jetstream::consumer::DeliverPolicy::ByStartTime { start_time },
        )
        .await
        .map_err(|e| StoreError::new(what, e))?;
        let mut last: std::collections::BTreeMap<String, Option<Status>> = Default::default();
        for message in writes {
            let Some(event) = message.subject.as_str().strip_prefix(&prefix) else {
                continue;
            };
            let removed = message
                .headers
                .as_ref()
                .is_some_and(|h| h.get("KV-Operation").is_some());
            let status = (!removed)
                .then(|| serde_json::from_slice::<Status>(&message.payload).ok())
                .flatten();
            last.insert(event.to_owned(), status);
        }
        Ok(last
            .into_iter()
            .filter_map(|(event, status)| Some((event, status?)))
            .collect())
    }
}

/// Refuses a task stream laid out otherwise: by another partition count (every endpoint's tasks
/// would be on another partition's subject), or one consumer per endpoint (before partitions).
async fn check_layout(js: &jetstream::Context, partitions: u16) -> Result<(), ProvisionError> {
    let Ok(mut existing) = js.get_stream(TASKS_STREAM).await else {
        return Ok(());
    };
    let config = &existing
        .info()
        .await
        .map_err(|e| provision(TASKS_STREAM)(e.to_string()))?
        .config;
    let refuse = |reason: String| Err(provision(TASKS_STREAM)(reason));
    match config.metadata.get(PARTITIONS_METADATA) {
        Some(found) if *found == partitions.to_string() => Ok(()),
        Some(found) => refuse(format!(
            "was laid out for egress.partitions = {found}, and egress.partitions is \
             {partitions}; set it back to {found} (the partition count is fixed once the \
             stream exists)"
        )),
        None if config.subjects.iter().any(|s| s == "egress.tasks.*") => refuse(
            "holds the tasks of an earlier egress (one consumer per endpoint); once its \
             tasks are delivered, delete it (`nats stream rm EGRESS_TASKS`) and start again"
                .into(),
        ),
        None => Ok(()),
    }
}

/// Every message on `filter` in `stream` (from `deliver`), read with an ephemeral consumer.
pub async fn read_all(
    stream: &stream::Stream,
    filter: String,
    deliver: jetstream::consumer::DeliverPolicy,
) -> Result<Vec<jetstream::Message>, String> {
    read_all_of(stream, vec![filter], deliver).await
}

/// Every message on any of `filters` in `stream` (from `deliver`), in stream order.
pub async fn read_all_of(
    stream: &stream::Stream,
    mut filters: Vec<String>,
    deliver: jetstream::consumer::DeliverPolicy,
) -> Result<Vec<jetstream::Message>, String> {
    use futures_util::StreamExt;
    let (filter_subject, filter_subjects) = if filters.len() == 1 {
        (filters.remove(0), Vec::new())
    } else {
        (String::new(), filters)
    };
    let mut consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            filter_subject,
            filter_subjects,
            deliver_policy: deliver,
            ack_policy: jetstream::consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut left = consumer
        .info()
        .await
        .map_err(|e| e.to_string())?
        .num_pending as usize;
    let mut found = Vec::with_capacity(left);
    while left > 0 {
        let mut batch = consumer
            .fetch()
            .max_messages(left.min(1000))
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let before = found.len();
        while let Some(message) = batch.next().await {
            found.push(message.map_err(|e| e.to_string())?);
        }
        if found.len() == before {
            break;
        }
        left = left.saturating_sub(found.len() - before);
    }
    Ok(found)
}
