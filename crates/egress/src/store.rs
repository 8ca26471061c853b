//! What the egress keeps, all in JetStream and replicated with the cluster:
//!
//! - KV `egress_endpoints`: one protobuf `Endpoint` per id, watched by every replica.
//! - KV `egress_dispatched`: one key per dispatched event (its id; the value is its `EVENTS`
//!   sequence), written once the event's tasks are stored, kept for `retention` and at least 3
//!   days. It is the dispatcher's dedup: one write per event, whatever its endpoints.
//! - KV `egress_health`: since when an endpoint has been failing, for `disable_after`.
//! - KV `egress_replicas`: one key per running replica, refreshed while it lives; the replicas
//!   share the task partitions among the keys present.
//! - Stream `EGRESS_TASKS`: tasks on `egress.tasks.<partition>.<endpoint>` (the partition is
//!   [`partition_of`] the endpoint id), one durable consumer per partition; retries and parked
//!   tasks waiting on `egress.retry.<endpoint>.<event>` as message schedules that the server
//!   publishes onto the task subject when they are due; tasks of a disabled endpoint held on
//!   `egress.held.<endpoint>` until it is enabled.
//! - Stream `EGRESS_ATTEMPTS`: one protobuf `DeliveryAttempt` per try, which is also the status
//!   of its (endpoint, event): [`crate::attempt_log`].

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use hookbus_bus::ProvisionError;

use crate::attempt_log::AttemptLog;

pub const ENDPOINTS_BUCKET: &str = "egress_endpoints";
pub const HEALTH_BUCKET: &str = "egress_health";
pub const DISPATCHED_BUCKET: &str = "egress_dispatched";
/// The least time a dispatched event stays marked, whatever `retention` is.
pub const DISPATCHED_AT_LEAST: Duration = Duration::from_secs(3 * 24 * 3600);
pub const TASKS_STREAM: &str = "EGRESS_TASKS";
pub use crate::attempt_log::STREAM as ATTEMPTS_STREAM;
pub const REPLICAS_BUCKET: &str = "egress_replicas";
/// Portal links redeemed: one key per link's nonce, kept longer than a link lives.
pub const PORTAL_LINKS_BUCKET: &str = "egress_portal_links";
/// The priority group every partition consumer pins one replica in.
pub const PRIORITY_GROUP: &str = "egress";
/// Where `EGRESS_TASKS` records the partition count its subjects were laid out for.
const PARTITIONS_METADATA: &str = "hookbus.partitions";

/// The partition of an endpoint: FNV-1a (64 bit) of its id, modulo `partitions`. Stable across
/// versions and replicas, since the task subjects are laid out by it.
pub fn partition_of(endpoint: &str, partitions: u16) -> u16 {
    (hookbus_bus::partitioned::fnv1a(endpoint.as_bytes()) % u64::from(partitions.max(1))) as u16
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

pub use crate::store_error::StoreError;

/// The handles to everything above.
#[derive(Clone)]
pub struct Stores {
    pub js: jetstream::Context,
    pub endpoints: kv::Store,
    pub dispatched: kv::Store,
    pub health: kv::Store,
    /// Portal links redeemed ([`crate::access`]).
    pub portal_links: kv::Store,
    pub replicas: kv::Store,
    pub tasks: stream::Stream,
    pub attempts: AttemptLog,
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
                subjects: vec!["egress.attempts.>".into()],
                // Statuses and pages are read with direct gets.
                allow_direct: true,
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                max_age: retention,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        let endpoints = bucket(&js, ENDPOINTS_BUCKET, Duration::ZERO, replicas).await?;
        let dispatched = bucket(
            &js,
            DISPATCHED_BUCKET,
            retention.max(DISPATCHED_AT_LEAST),
            replicas,
        )
        .await?;
        let health = bucket(&js, HEALTH_BUCKET, Duration::ZERO, replicas).await?;
        // A redeemed link's nonce is kept as long as the link could still be opened.
        let portal_links = bucket(
            &js,
            PORTAL_LINKS_BUCKET,
            Duration::from_secs(25 * 3600),
            replicas,
        )
        .await?;
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
        let attempts = AttemptLog::new(js.clone(), get(ATTEMPTS_STREAM).await?);
        let events = js
            .get_stream(events)
            .await
            .map_err(|e| provision(events)(e.to_string()))?;
        Ok(Self {
            js,
            endpoints,
            dispatched,
            health,
            portal_links,
            replicas: replicas_bucket,
            tasks,
            attempts,
            events,
        })
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
) -> Result<Vec<jetstream::Message>, StoreError> {
    use futures_util::StreamExt;
    let mut consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            filter_subject: filter,
            deliver_policy: deliver,
            ack_policy: jetstream::consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| StoreError::new("create reader", e))?;
    let mut left = consumer
        .info()
        .await
        .map_err(|e| StoreError::new("reader info", e))?
        .num_pending as usize;
    let mut found = Vec::with_capacity(left);
    while left > 0 {
        let mut batch = consumer
            .fetch()
            .max_messages(left.min(1000))
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| StoreError::new("fetch", e))?;
        let before = found.len();
        while let Some(message) = batch.next().await {
            found.push(message.map_err(|e| StoreError::new("read", e))?);
        }
        if found.len() == before {
            break;
        }
        left = left.saturating_sub(found.len() - before);
    }
    Ok(found)
}
