//! Which partitions this replica owns.
//!
//! Every replica keeps a key in the `egress_replicas` bucket, refreshed four times per
//! `replica_timeout`; the bucket's `max_age` is `replica_timeout`, so a replica that stops (or
//! is killed) drops out of it within that time. Each replica reads the keys present and takes
//! the partitions that rendezvous hashing gives it: partition `p` goes to the member with the
//! highest score for `(member, p)`. A member joining or leaving moves only the partitions it wins
//! or held. A replica always counts itself in, so a late refresh of its own key never makes it
//! drop its partitions; if the others drop it meanwhile, they only pull on standby, since the
//! server keeps delivering a pinned partition to its pinned client.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::TryStreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::fnv1a;

/// The partitions `me` owns among `members` (which need not include it).
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

/// This replica in `egress_replicas`.
pub struct Membership {
    pub id: String,
    pub bucket: kv::Store,
    pub partitions: u16,
    pub replica_timeout: Duration,
}

impl Membership {
    /// Refreshes this replica's key and publishes the partitions it owns into `owned`, until
    /// `shutdown`; then removes its key, so the others take its partitions at once.
    pub async fn run(self, owned: watch::Sender<BTreeSet<u16>>, shutdown: CancellationToken) {
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
                            "egress partitions assigned"
                        );
                        *current = mine;
                        true
                    });
                }
                // The broker away: keep what is owned; the server keeps or moves the pins.
                Err(e) => tracing::warn!(error = %e, "cannot read the egress replicas"),
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(period) => {}
            }
        }
        let _ = self.bucket.delete(&self.id).await;
    }

    async fn members(&self) -> Result<BTreeSet<String>, String> {
        let keys = self.bucket.keys().await.map_err(|e| e.to_string())?;
        keys.try_collect().await.map_err(|e| e.to_string())
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
