//! The partitioned runtime: a fixed set of durable consumers (partitions) shared among the
//! replicas of a service, each partition read by one replica at a time. It is the second way
//! the bus consumes a stream, beside [`crate::consumer`] (one durable consumer that every
//! replica pulls from): for work that must stay in one place per key, such as an egress
//! endpoint's queue and limits.
//!
//! - **Membership.** Every replica keeps a key in a KV bucket, refreshed four times per
//!   `replica_timeout`; the bucket's `max_age` is `replica_timeout`, so a replica that stops (or
//!   is killed) drops out of it within that time. Each replica reads the keys present and takes
//!   the partitions that rendezvous hashing gives it ([`assign`]): a member joining or leaving
//!   moves only the partitions it wins or held. A replica always counts itself in, so a late
//!   refresh of its own key never makes it drop its partitions; if the others drop it
//!   meanwhile, they only pull on standby, since the server keeps delivering a pinned partition
//!   to its pinned client.
//! - **Ownership.** [`run`] starts the caller's owner for each partition this replica is given
//!   and stops it when the partition moves away; a partition given back while its previous owner
//!   still hands over starts once that hand-over is done.
//! - **Pinned pulls.** Each partition is a durable consumer in a priority group with the
//!   `pinned_client` policy (nats-server 2.11+): the server delivers to one pull client at a
//!   time, and moves the pin after `priority_timeout` without pulls or on an unpin
//!   ([`Pinned`]).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::consumer::{PriorityPolicy, pull};
use async_nats::jetstream::{kv, stream};
use futures_util::TryStreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::NatsError;

/// FNV-1a, 64 bit: a stable hash for laying keys out on partitions.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The partitions `me` owns among `members` (which need not include it): partition `p` goes to
/// the member with the highest score for `(member, p)`.
pub fn assign(members: &BTreeSet<String>, partitions: u16, me: &str) -> BTreeSet<u16> {
    (0..partitions)
        .filter(|&partition| {
            let mine = score(me, partition);
            members
                .iter()
                .filter(|member| member.as_str() != me)
                .all(|member| (score(member, partition), member.as_str()) < (mine, me))
        })
        .collect()
}

/// splitmix64's finalizer over the member's hash and the partition.
fn score(member: &str, partition: u16) -> u64 {
    let mut z = fnv1a(member.as_bytes()) ^ u64::from(partition).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// This replica among the members of a partitioned service.
pub struct Membership {
    /// This replica's key in `bucket`.
    pub id: String,
    /// The bucket of live replicas; its `max_age` is `replica_timeout`.
    pub bucket: kv::Store,
    pub partitions: u16,
    pub replica_timeout: Duration,
}

impl Membership {
    /// Refreshes this replica's key and publishes the partitions it owns into `owned`, until
    /// `shutdown`; then removes its key, so the others take its partitions at once.
    async fn run(self, owned: watch::Sender<BTreeSet<u16>>, shutdown: CancellationToken) {
        let period = self.replica_timeout / 4;
        loop {
            if let Err(e) = self.bucket.put(&self.id, "alive".into()).await {
                tracing::warn!(error = %e, "cannot refresh this replica's key");
            }
            match self.members().await {
                Ok(mut members) => {
                    members.insert(self.id.clone());
                    let mine = assign(&members, self.partitions, &self.id);
                    owned.send_if_modified(|current| {
                        if *current == mine {
                            return false;
                        }
                        tracing::info!(
                            replicas = members.len(),
                            partitions = mine.len(),
                            "partitions assigned"
                        );
                        *current = mine;
                        true
                    });
                }
                // The broker away: keep what is owned; the server keeps or moves the pins.
                Err(e) => tracing::warn!(error = %e, "cannot read the replicas"),
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(period) => {}
            }
        }
        let _ = self.bucket.delete(&self.id).await;
    }

    async fn members(&self) -> Result<BTreeSet<String>, NatsError> {
        let keys = self
            .bucket
            .keys()
            .await
            .map_err(NatsError::of("list members"))?;
        keys.try_collect()
            .await
            .map_err(NatsError::of("list members"))
    }
}

/// Runs `own(partition, stop)` for each partition this replica is given, until `shutdown`; then
/// leaves the membership, so the others take over at once, and waits for every owner to hand
/// over. `owned` hears how many partitions this replica runs.
pub async fn run<F, Fut>(
    membership: Membership,
    shutdown: CancellationToken,
    owned: impl Fn(usize),
    own: F,
) where
    F: Fn(u16, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (assigned_tx, mut assigned) = watch::channel(BTreeSet::new());
    let leave = CancellationToken::new();
    let members = tokio::spawn(membership.run(assigned_tx, leave.clone()));
    let mut running: HashMap<u16, (CancellationToken, JoinHandle<()>)> = HashMap::new();
    let mut leaving: HashMap<u16, JoinHandle<()>> = HashMap::new();
    loop {
        let mine = assigned.borrow_and_update().clone();
        let lost: Vec<u16> = running
            .keys()
            .copied()
            .filter(|p| !mine.contains(p))
            .collect();
        for partition in lost {
            if let Some((stop, handle)) = running.remove(&partition) {
                stop.cancel();
                leaving.insert(partition, handle);
            }
        }
        leaving.retain(|_, handle| !handle.is_finished());
        for partition in mine {
            if running.contains_key(&partition) {
                continue;
            }
            let stop = shutdown.child_token();
            let previous = leaving.remove(&partition);
            let owner = own(partition, stop.clone());
            let handle = tokio::spawn(async move {
                // Given back while still handing over: the hand-over ends first.
                if let Some(previous) = previous {
                    let _ = previous.await;
                }
                owner.await;
            });
            running.insert(partition, (stop, handle));
        }
        owned(running.len());
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
    owned(0);
}

/// One partition's durable consumer, pinned to one pull client of `group` at a time.
pub struct Pinned {
    pub stream: stream::Stream,
    /// The consumer's settings; the priority settings are set by [`Pinned::new`].
    pub config: pull::Config,
    pub group: String,
}

impl Pinned {
    /// `config` with the `pinned_client` policy in `group`; the server moves the pin after
    /// `priority_timeout` without pulls from the pinned client.
    pub fn new(
        stream: stream::Stream,
        mut config: pull::Config,
        group: &str,
        priority_timeout: Duration,
    ) -> Self {
        config.priority_policy = PriorityPolicy::PinnedClient;
        config.priority_groups = vec![group.to_owned()];
        config.priority_timeout = priority_timeout;
        Self {
            stream,
            config,
            group: group.to_owned(),
        }
    }

    /// The consumer's messages to this client: it creates the consumer when missing, then pulls
    /// in `batch`es that expire after `expiry`, with heartbeats. While another client holds the
    /// pin, the pull waits on standby.
    pub async fn messages(
        &self,
        batch: usize,
        expiry: Duration,
    ) -> Result<pull::Stream, NatsError> {
        let consumer = self
            .stream
            .create_consumer(self.config.clone())
            .await
            .map_err(NatsError::of("create partition consumer"))?;
        consumer
            .stream()
            .group(self.group.as_str())
            .max_messages_per_batch(batch)
            .expires(expiry)
            .heartbeat(expiry / 2)
            .messages()
            .await
            .map_err(NatsError::of("pull partition"))
    }

    /// Lets the server pin the next client that pulls, at once.
    pub async fn unpin(&self) {
        let name = self.config.durable_name.as_deref().unwrap_or_default();
        if let Err(e) = self.stream.unpin_consumer(name, self.group.as_str()).await {
            tracing::debug!(consumer = %name, error = %e, "unpin not confirmed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn every_partition_has_exactly_one_owner_and_a_leaver_moves_only_its_own() {
        let three = members(&["a", "b", "c"]);
        let owned: Vec<BTreeSet<u16>> = ["a", "b", "c"]
            .iter()
            .map(|me| assign(&three, 64, me))
            .collect();
        for partition in 0..64 {
            let owners = owned.iter().filter(|o| o.contains(&partition)).count();
            assert_eq!(owners, 1, "partition {partition}");
        }
        for o in &owned {
            assert!(o.len() > 8, "a fair share, not {}", o.len());
        }
        // c leaves: a and b keep what they had and split c's.
        let two = members(&["a", "b"]);
        let (a, b) = (assign(&two, 64, "a"), assign(&two, 64, "b"));
        assert!(owned[0].is_subset(&a) && owned[1].is_subset(&b));
        assert_eq!(a.len() + b.len(), 64);
        assert!(a.is_disjoint(&b));
        // Alone, a replica owns everything, counted in or not.
        assert_eq!(assign(&members(&[]), 64, "a").len(), 64);
        assert_eq!(assign(&members(&["a"]), 64, "a").len(), 64);
    }
}
