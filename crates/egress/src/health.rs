//! Endpoint health: since when an endpoint has been failing (kept in `egress_health`, so every
//! replica counts from the same moment), disabling one that failed for `disable_after` or
//! answered 410, and the egress's own notices (`events.hookbus.…`).

use std::time::Duration;

use hookbus_bus::{Built, EventBuilder, EventId, EventType};
use hookbus_proto::egress::v1::EndpointDisabled;
use prost::Message;
use tokio::time::Instant;

use crate::engine::Engine;
use crate::records;

impl Engine {
    /// Publishes one of the egress's own events (`events.hookbus.…`).
    pub(crate) async fn notify(
        &self,
        event_type: &str,
        payload: Vec<u8>,
        content_type: &str,
        key: &str,
    ) {
        let id = EventId::derived(&uuid::Uuid::NAMESPACE_OID, key.as_bytes());
        let event_type = EventType::parse(event_type).expect("the egress's notice types are valid");
        let Built { subject, event } = EventBuilder::notice(&event_type, payload)
            .id(&id)
            .delivery_id(id.as_str())
            .content_type(content_type)
            .build();
        let id = id.into_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        if let Err(e) = self
            .publisher
            .publish_event(
                subject,
                &event,
                &id,
                deadline,
                &hookbus_telemetry::TraceContext::default(),
            )
            .await
        {
            tracing::error!(event_type = %event_type, error = %e, "notice not published");
        }
    }

    /// Records a success: the endpoint is no longer failing. The stored record is cleared when
    /// this replica saw it failing, or has not cleared it since it started (another replica, or
    /// this one before a restart, may have written it).
    pub(crate) async fn healthy(&self, endpoint: &str) {
        let was = self
            .failing_since
            .lock()
            .expect("not poisoned")
            .remove(endpoint);
        let first = self
            .known_healthy
            .lock()
            .expect("not poisoned")
            .insert(endpoint.to_owned());
        if (was.is_some() || first) && self.stores.health.delete(endpoint).await.is_err() {
            self.known_healthy
                .lock()
                .expect("not poisoned")
                .remove(endpoint);
        }
    }

    /// Records a failure; returns for how long (seconds) the endpoint has been failing. Before
    /// it answers a time long enough to disable, it checks the stored record: a success on
    /// another replica since then has cleared it, and the count starts again.
    pub(crate) async fn failing(&self, endpoint: &str, now: i64) -> i64 {
        self.known_healthy
            .lock()
            .expect("not poisoned")
            .remove(endpoint);
        let since = self.failing_since_of(endpoint, now).await;
        if now - since < self.settings.disable_after.as_secs() as i64 {
            return now - since;
        }
        if self.stored_failing_since(endpoint).await.is_none() {
            self.failing_since
                .lock()
                .expect("not poisoned")
                .remove(endpoint);
            return now - self.failing_since_of(endpoint, now).await;
        }
        now - since
    }

    async fn stored_failing_since(&self, endpoint: &str) -> Option<i64> {
        self.stores
            .health
            .get(endpoint)
            .await
            .ok()
            .flatten()
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<i64>().ok())
    }

    async fn failing_since_of(&self, endpoint: &str, now: i64) -> i64 {
        let known = self
            .failing_since
            .lock()
            .expect("not poisoned")
            .get(endpoint)
            .copied();
        match known {
            Some(since) => since,
            None => {
                let since = match self.stored_failing_since(endpoint).await {
                    Some(since) => since,
                    None => {
                        let _ = self
                            .stores
                            .health
                            .put(endpoint, now.to_string().into())
                            .await;
                        now
                    }
                };
                self.failing_since
                    .lock()
                    .expect("not poisoned")
                    .insert(endpoint.to_owned(), since);
                since
            }
        }
    }

    /// Disables an endpoint (its tasks are kept) and publishes `hookbus.endpoint.disabled`.
    pub async fn disable(&self, endpoint: &str, reason: &str) {
        let changed = records::update(
            &self.stores.endpoints,
            &self.directory,
            endpoint,
            |record| {
                if record.disabled {
                    return false;
                }
                record.disabled = true;
                true
            },
        )
        .await;
        match changed {
            Ok(Some(_)) => {
                tracing::warn!(endpoint, reason, "endpoint disabled");
                self.failing_since
                    .lock()
                    .expect("not poisoned")
                    .remove(endpoint);
                let _ = self.stores.health.delete(endpoint).await;
                let notice = EndpointDisabled {
                    endpoint_id: endpoint.to_owned(),
                    reason: reason.to_owned(),
                };
                self.notify(
                    "hookbus.endpoint.disabled",
                    notice.encode_to_vec(),
                    &hookbus_proto::content_type_for::<EndpointDisabled>(),
                    &format!("disabled:{endpoint}:{}", uuid::Uuid::now_v7()),
                )
                .await;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(endpoint, error = %e, "cannot disable endpoint"),
        }
    }
}
