//! Flows: how tasks reach deliveries without a JetStream consumer per endpoint.
//!
//! - Tasks are on `egress.tasks.<partition>.<endpoint>`; `egress.partitions` (64 by default)
//!   durable consumers read them, one per partition, whatever the number of endpoints.
//! - Each partition consumer is in the `egress` priority group with the `pinned_client` policy:
//!   the server delivers a partition's tasks to one pull client at a time.
//! - The replicas share the partitions on the bus's partitioned runtime
//!   ([`hookbus_bus::partitioned`]: membership in `egress_replicas`, rendezvous assignment, pinned
//!   pulls): each pulls only the partitions it owns, and hands a partition over when it is
//!   assigned elsewhere or stops ([`partition`]).
//! - Inside the owner each endpoint has its own queue with its `max_in_flight`, its rate limit
//!   and a small buffer; what does not fit is parked ([`queue`]).

pub mod partition;
pub mod queue;

use std::sync::Arc;
use std::time::Duration;

use hookbus_bus::partitioned::{self, Membership};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;

/// Runs this replica's share of the partitions until `shutdown` on the bus's partitioned
/// runtime; then waits a little for the parks, holds and acks the deliveries started.
pub async fn run(engine: Arc<Engine>, shutdown: CancellationToken) {
    let membership = Membership {
        id: uuid::Uuid::now_v7().simple().to_string(),
        bucket: engine.stores.replicas.clone(),
        partitions: engine.settings.partitions,
        replica_timeout: engine.settings.replica_timeout,
    };
    let metrics = engine.metrics.clone();
    let owner = engine.clone();
    partitioned::run(
        membership,
        shutdown,
        move |owned| {
            metrics.partitions_owned.set(owned as i64);
        },
        move |partition, stop| partition::own(owner.clone(), partition, stop),
    )
    .await;
    // Parks, holds and the acks waiting for their attempt records.
    engine.tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), engine.tracker.wait()).await;
}
