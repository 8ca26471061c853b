//! The endpoints every replica knows: the `egress_endpoints` KV bucket, watched into memory with
//! secrets decrypted, so the dispatcher and the workers never wait on a lookup.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::stream::RawMessageErrorKind;
use futures_util::StreamExt;
use hookbus_proto::egress::v1::Endpoint;
use hookbus_signature::SigningSecret;
use prost::Message;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::crypto::{SecretBox, SecretError};

mod index;

use crate::endpoint::Subscription;
use index::Index;

/// One endpoint as the workers use it.
#[derive(Debug)]
pub struct Live {
    pub record: Endpoint,
    pub url: reqwest::Url,
    pub subscription: Subscription,
    pub headers: BTreeMap<String, String>,
    /// Decrypted secrets with when each stops signing (unix seconds; `None` for the current one),
    /// newest first.
    pub secrets: Vec<(SigningSecret, Option<i64>)>,
}

/// An endpoint record that cannot be delivered to.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not an endpoint record: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("url: {0}")]
    Url(#[from] url::ParseError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// Why the watch could not be shown to have applied the whole bucket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FreshError {
    #[error("endpoints bucket unreadable: {0}")]
    Unreadable(String),
    #[error("endpoints bucket: no answer within {0:?}")]
    NoAnswer(Duration),
    #[error("the endpoint watch has not reached revision {last} within {within:?}")]
    Behind { last: u64, within: Duration },
}

impl Live {
    pub fn decode(record: Endpoint, secrets: &SecretBox) -> Result<Self, RecordError> {
        let url = reqwest::Url::parse(&record.url)?;
        let mut opened = Vec::new();
        for secret in &record.secrets {
            let plain = secrets.open(&record.id, &secret.ciphertext)?;
            opened.push((
                SigningSecret::from_key(plain),
                secret.expires_at.as_ref().map(|t| t.seconds),
            ));
        }
        Ok(Self {
            url,
            subscription: Subscription {
                event_types: record.event_types.clone(),
                sources: record.sources.clone(),
                tenant: record.tenant.clone(),
            },
            headers: record
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            secrets: opened,
            record,
        })
    }

    /// The secrets that sign at `now` (unix seconds), newest first.
    pub fn active_secrets(&self, now: i64) -> Vec<SigningSecret> {
        self.secrets
            .iter()
            .filter(|(_, expires)| expires.is_none_or(|at| now < at))
            .map(|(secret, _)| secret.clone())
            .collect()
    }
}

/// The watched endpoints.
pub struct Directory {
    endpoints: RwLock<Index>,
    /// The last bucket revision applied; bumped on every change.
    revision: watch::Sender<u64>,
    /// When the last check that the watch had applied the whole bucket began, and how it
    /// ended; held while a check runs ([`Directory::fresh_since`]).
    checked: tokio::sync::Mutex<Option<(Instant, Result<(), FreshError>)>>,
    /// How many of the endpoints are disabled.
    pub disabled: prometheus_client::metrics::gauge::Gauge,
}

impl Directory {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            endpoints: RwLock::default(),
            revision: watch::Sender::new(0),
            checked: tokio::sync::Mutex::new(None),
            disabled: Default::default(),
        })
    }

    /// Returns once the watch has applied every change stored in `bucket` before `since`, or
    /// fails after `within`. The dispatcher asks it with the moment an event reached it: an
    /// endpoint whose creation was answered before the event was stored is then known when the
    /// event is dispatched, on every replica, however late this replica's watch is. One check
    /// runs at a time (the bucket's last message from its stream leader, then a wait for the
    /// watch), and each answers, success or failure, every caller that came before it began.
    pub async fn fresh_since(
        &self,
        bucket: &kv::Store,
        since: Instant,
        within: Duration,
    ) -> Result<(), FreshError> {
        let mut checked = self.checked.lock().await;
        if let Some((began, outcome)) = checked.as_ref()
            && *began >= since
        {
            return outcome.clone();
        }
        let began = Instant::now();
        let deadline = began + within;
        let outcome = async {
            // The last message of the bucket, from its stream leader (a direct get could come
            // from a replica that lags): a lighter request than the stream's info.
            let every_key = format!("{}>", bucket.prefix);
            let newest = bucket.stream.get_last_raw_message_by_subject(&every_key);
            let last = match tokio::time::timeout_at(deadline, newest).await {
                Ok(Ok(message)) => message.sequence,
                // An emptied bucket (its stream purged) leaves nothing to wait for.
                Ok(Err(e)) if e.kind() == RawMessageErrorKind::NoMessageFound => 0,
                Ok(Err(e)) => return Err(FreshError::Unreadable(e.to_string())),
                Err(_) => return Err(FreshError::NoAnswer(within)),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.caught_up(last, left).await {
                return Err(FreshError::Behind { last, within });
            }
            Ok(())
        }
        .await;
        *checked = Some((began, outcome.clone()));
        outcome
    }

    /// How many endpoints there are.
    pub fn len(&self) -> usize {
        self.endpoints.read().expect("not poisoned").by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, id: &str) -> Option<Arc<Live>> {
        self.endpoints
            .read()
            .expect("not poisoned")
            .by_id
            .get(id)
            .cloned()
    }

    /// Up to `limit` endpoints after the id `after`, in id order (only `tenant`'s when given),
    /// and whether more follow. Reads `limit` + 1 entries, however many endpoints there are.
    pub fn page(
        &self,
        tenant: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<Live>>, bool) {
        let (found, next) = self.page_where(tenant, after, limit, |_| true, usize::MAX);
        (found, next.is_some())
    }

    /// Up to `limit` endpoints after the id `after` that `keep` takes, in id order (only
    /// `tenant`'s when given), looking at `scan` endpoints at most; and the id to go on after
    /// when more may follow (the last one taken, or the last one looked at).
    pub fn page_where(
        &self,
        tenant: Option<&str>,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&Live) -> bool,
        scan: usize,
    ) -> (Vec<Arc<Live>>, Option<String>) {
        self.endpoints
            .read()
            .expect("not poisoned")
            .page_where(tenant, after, limit, keep, scan)
    }

    /// The endpoints an event goes to (disabled ones included: their tasks are kept). Only the
    /// endpoints on the event's routes are looked at: its tenant's (those without a tenant for
    /// an event without), under its type's first token or a leading wildcard.
    pub fn matching(&self, event_type: &str, source: &str, tenant: Option<&str>) -> Vec<Arc<Live>> {
        let index = self.endpoints.read().expect("not poisoned");
        let tenant_key = tenant.map(str::to_owned);
        let first = event_type.split('.').next().unwrap_or_default().to_owned();
        let named = index.by_route.get(&(tenant_key.clone(), Some(first)));
        let wildcard = index.by_route.get(&(tenant_key, None));
        let matches = |live: &&Arc<Live>| live.subscription.matches(event_type, source, tenant);
        match (named, wildcard) {
            (Some(one), None) | (None, Some(one)) => {
                one.values().filter(matches).cloned().collect()
            }
            (Some(named), Some(wildcard)) => {
                // An endpoint with both kinds of pattern is under both.
                let mut found: Vec<Arc<Live>> = named.values().filter(matches).cloned().collect();
                found.extend(
                    wildcard
                        .iter()
                        .filter(|(id, _)| !named.contains_key(*id))
                        .map(|(_, live)| live)
                        .filter(matches)
                        .cloned(),
                );
                found
            }
            (None, None) => Vec::new(),
        }
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// Waits until the watch has applied `revision` (a write this replica just made).
    pub async fn caught_up(&self, revision: u64, within: Duration) -> bool {
        let mut changes = self.revision.subscribe();
        tokio::time::timeout(within, changes.wait_for(|seen| *seen >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn apply(&self, entry: &kv::Entry, secrets: &SecretBox) {
        let mut endpoints = self.endpoints.write().expect("not poisoned");
        let was_disabled = endpoints
            .by_id
            .get(&entry.key)
            .is_some_and(|l| l.record.disabled);
        match entry.operation {
            kv::Operation::Put => match Endpoint::decode(entry.value.clone())
                .map_err(RecordError::from)
                .and_then(|record| Live::decode(record, secrets))
            {
                Ok(live) => endpoints.insert(&entry.key, Arc::new(live)),
                Err(e) => {
                    tracing::error!(endpoint = %entry.key, error = %e, "endpoint record unusable; not delivering to it");
                    endpoints.remove(&entry.key);
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                endpoints.remove(&entry.key);
            }
        }
        let disabled = endpoints
            .by_id
            .get(&entry.key)
            .is_some_and(|l| l.record.disabled);
        match (was_disabled, disabled) {
            (false, true) => {
                self.disabled.inc();
            }
            (true, false) => {
                self.disabled.dec();
            }
            _ => {}
        }
        drop(endpoints);
        self.revision
            .send_modify(|seen| *seen = (*seen).max(entry.revision));
    }

    /// Follows the bucket until `shutdown`, resuming after the last applied revision when the
    /// watch breaks (a broker restart).
    pub async fn follow(
        self: Arc<Self>,
        bucket: kv::Store,
        secrets: Arc<SecretBox>,
        shutdown: CancellationToken,
    ) {
        let mut last = 0u64;
        loop {
            let watch = if last == 0 {
                bucket.watch_with_history(">").await
            } else {
                bucket.watch_all_from_revision(last + 1).await
            };
            match watch {
                Ok(mut watch) => loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        entry = watch.next() => match entry {
                            Some(Ok(entry)) => {
                                last = last.max(entry.revision);
                                self.apply(&entry, &secrets);
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "endpoint watch broke; resuming");
                                break;
                            }
                            None => break,
                        }
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot watch endpoints; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn live(id: usize, tenant: Option<&str>, patterns: &[&str], sources: &[&str]) -> Arc<Live> {
        let record = Endpoint {
            id: format!("ep_{id}"),
            url: "http://127.0.0.1:9/".into(),
            event_types: patterns.iter().map(|p| (*p).to_owned()).collect(),
            sources: sources.iter().map(|s| (*s).to_owned()).collect(),
            tenant: tenant.map(str::to_owned),
            ..Endpoint::default()
        };
        Arc::new(Live {
            url: reqwest::Url::parse(&record.url).unwrap(),
            subscription: Subscription {
                event_types: record.event_types.clone(),
                sources: record.sources.clone(),
                tenant: record.tenant.clone(),
            },
            headers: BTreeMap::new(),
            secrets: Vec::new(),
            record,
        })
    }

    const PATTERNS: &[&str] = &[
        "order.*",
        "order.created",
        "*.created",
        ">",
        "stock.>",
        "hookbus.*",
        "*.*",
        "invoice.paid",
    ];
    const TYPES: &[&str] = &[
        "order.created",
        "order.cancelled",
        "stock.low",
        "invoice.paid",
        "hookbus.endpoint.disabled",
        "user.created",
    ];
    const TENANTS: &[Option<&str>] = &[None, Some("acme"), Some("globex")];

    proptest! {
        /// The routes give exactly what a look at every endpoint gives, through inserts,
        /// changes and removals.
        #[test]
        fn matching_by_route_equals_matching_every_endpoint(
            endpoints in prop::collection::vec(
                (0..3usize, prop::collection::vec(0..PATTERNS.len(), 0..3), any::<bool>()),
                1..40,
            ),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let directory = Directory::new();
            {
                let mut index = directory.endpoints.write().unwrap();
                for (i, (tenant, patterns, from_api)) in endpoints.iter().enumerate() {
                    let patterns: Vec<&str> = patterns.iter().map(|p| PATTERNS[*p]).collect();
                    let sources: &[&str] = if *from_api { &["api"] } else { &[] };
                    // Each id twice: the second record replaces the first.
                    index.insert(&format!("ep_{i}"), live(i, TENANTS[(*tenant + 1) % 3], &["x.y"], &[]));
                    index.insert(&format!("ep_{i}"), live(i, TENANTS[*tenant], &patterns, sources));
                }
                for pick in &removed {
                    index.remove(&format!("ep_{}", pick.index(endpoints.len())));
                }
            }
            let all: Vec<Arc<Live>> = directory.endpoints.read().unwrap().by_id.values().cloned().collect();
            for event_type in TYPES {
                for source in ["api", "shop"] {
                    for tenant in TENANTS {
                        let mut got: Vec<String> = directory
                            .matching(event_type, source, *tenant)
                            .iter()
                            .map(|l| l.record.id.clone())
                            .collect();
                        got.sort();
                        let mut expected: Vec<String> = all
                            .iter()
                            .filter(|l| l.subscription.matches(event_type, source, *tenant))
                            .map(|l| l.record.id.clone())
                            .collect();
                        expected.sort();
                        prop_assert_eq!(got, expected, "{} from {} for {:?}", event_type, source, tenant);
                    }
                }
            }
        }
    }

    #[test]
    fn pages_follow_id_order_per_tenant() {
        let directory = Directory::new();
        {
            let mut index = directory.endpoints.write().unwrap();
            for i in 0..10 {
                let tenant = if i % 2 == 0 { Some("acme") } else { None };
                index.insert(&format!("ep_{i}"), live(i, tenant, &[], &[]));
            }
        }
        let ids = |page: &[Arc<Live>]| page.iter().map(|l| l.record.id.clone()).collect::<Vec<_>>();
        let (first, more) = directory.page(None, None, 4);
        assert_eq!(
            (ids(&first), more),
            (
                vec!["ep_0".into(), "ep_1".into(), "ep_2".into(), "ep_3".into()],
                true
            )
        );
        let (rest, more) = directory.page(None, Some("ep_3"), 10);
        assert_eq!((rest.len(), more), (6, false));
        let (acme, more) = directory.page(Some("acme"), Some("ep_2"), 2);
        assert_eq!(
            (ids(&acme), more),
            (vec!["ep_4".to_owned(), "ep_6".to_owned()], true)
        );
        assert_eq!(directory.page(Some("nobody"), None, 2).0.len(), 0);
    }
}
