//! Flows: how tasks reach deliveries without a JetStream consumer per endpoint.
//!
//! - Tasks are on `egress.tasks.<partition>.<endpoint>`; `egress.partitions` (64 by default)
//!   durable consumers read them, one per partition, whatever the number of endpoints.
//! - Each partition consumer is in the `egress` priority group with the `pinned_client` policy:
//!   the server delivers a partition's tasks to one pull client at a time.
//! - The replicas share the partitions by [`membership`]: each pulls only the partitions it owns,
//!   and hands a partition over when it is assigned elsewhere or stops ([`partition`]).
//! - Inside the owner each endpoint has its own queue with its `max_in_flight`, its rate limit
//!   and a small buffer; what does not fit is parked ([`queue`]).

pub mod membership;
pub mod partition;
pub mod queue;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use membership::Membership;

/// Runs this replica's share of the partitions until `shutdown`; then leaves the membership, so
/// the others take over at once, and hands every partition over.
pub async fn run(engine: Arc<Engine>, shutdown: CancellationToken) {
    let (owned, mut assigned) = watch::channel(BTreeSet::new());
    let membership = Membership {
        id: uuid::Uuid::now_v7().simple().to_string(),
        bucket: engine.stores.replicas.clone(),
        partitions: engine.settings.partitions,
        replica_timeout: engine.settings.replica_timeout,
    };
    let leave = CancellationToken::new();
    let members = tokio::spawn(membership.run(owned, leave.clone()));
    let mut running: HashMap<u16, (CancellationToken, JoinHandle<()>)> = HashMap::new();
    let mut leaving: HashMap<u16, JoinHandle<()>> = HashMap::new();
    loop {
        let owned = assigned.borrow_and_update().clone();
        let lost: Vec<u16> = running
            .keys()
            .copied()
            .filter(|p| !owned.contains(p))
            .collect();
        for partition in lost {
            if let Some((stop, handle)) = running.remove(&partition) {
                stop.cancel();
                leaving.insert(partition, handle);
            }
        }
        leaving.retain(|_, handle| !handle.is_finished());
        for partition in owned {
            if running.contains_key(&partition) {
                continue;
            }
            let stop = shutdown.child_token();
            let previous = leaving.remove(&partition);
            let engine = engine.clone();
            let token = stop.clone();
            let handle = tokio::spawn(async move {
                // Owned again while still handing over: the hand-over ends first.
                if let Some(previous) = previous {
                    let _ = previous.await;
                }
                partition::own(engine, partition, token).await;
            });
            running.insert(partition, (stop, handle));
        }
        engine.metrics.partitions_owned.set(running.len() as i64);
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = assigned.changed() => if changed.is_err() { break },
        }
    }
    leave.cancel();
    let _ = members.await;
    // Every partition's stop is a child of `shutdown`: they hand over together.
    for handle in running
        .into_values()
        .map(|(_, handle)| handle)
        .chain(leaving.into_values())
    {
        let _ = handle.await;
    }
    engine.metrics.partitions_owned.set(0);
    // Parks, holds and status writes started by the deliveries.
    engine.tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), engine.tracker.wait()).await;
}
