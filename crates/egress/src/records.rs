//! Endpoint records in the `egress_endpoints` bucket, as the API and the delivery side change
//! them: read one, change one with optimistic concurrency, and wait until this replica's
//! directory has the change.

use std::time::Duration;

use async_nats::jetstream::kv;
use hookbus_proto::egress::v1::Endpoint;
use prost::Message;

use crate::directory::Directory;
use crate::engine::{timestamp, unix_now};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("no endpoint {0}")]
    NotFound(String),
    #[error("endpoint {0} kept changing under concurrent updates")]
    Contended(String),
    #[error("endpoint record {id} is unreadable: {source}")]
    Corrupt {
        id: String,
        source: prost::DecodeError,
    },
    #[error("endpoints bucket: {0}")]
    Broker(String),
}

/// An endpoint's id: `ep_` and a UUID when made here, but any 1 to 128 letters, digits, `-` or
/// `_` (a subject token), as an event id is. `parse` is the only way in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(String);

impl EndpointId {
    pub fn parse(text: &str) -> Result<Self, hookbus_bus::NameError> {
        hookbus_bus::EventId::parse(text)
            .map(|_| Self(text.to_owned()))
            .map_err(|e| hookbus_bus::NameError {
                kind: "endpoint id",
                ..e
            })
    }

    /// A new id: `ep_` and a UUIDv7 without dashes.
    pub fn random() -> Self {
        Self(format!("ep_{}", uuid::Uuid::now_v7().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Whether `id` can be an endpoint's or an event's id.
pub fn valid_id(id: &str) -> bool {
    EndpointId::parse(id).is_ok()
}

/// The record and its revision.
pub async fn load(bucket: &kv::Store, id: &str) -> Result<(Endpoint, u64), RecordError> {
    if !valid_id(id) {
        return Err(RecordError::NotFound(id.to_owned()));
    }
    match bucket.entry(id).await {
        Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
            let record = Endpoint::decode(entry.value).map_err(|source| RecordError::Corrupt {
                id: id.to_owned(),
                source,
            })?;
            Ok((record, entry.revision))
        }
        Ok(_) => Err(RecordError::NotFound(id.to_owned())),
        Err(e) => Err(RecordError::Broker(e.to_string())),
    }
}

/// Changes a record with `change` (which returns whether it changed anything), retrying on a
/// concurrent write; `None` when nothing changed. Waits until `directory` has the new record.
pub async fn update(
    bucket: &kv::Store,
    directory: &Directory,
    id: &str,
    mut change: impl FnMut(&mut Endpoint) -> bool,
) -> Result<Option<Endpoint>, RecordError> {
    for _ in 0..10 {
        let (mut record, revision) = load(bucket, id).await?;
        if !change(&mut record) {
            return Ok(None);
        }
        record.updated_at = Some(timestamp(unix_now()));
        match bucket
            .update(id, record.encode_to_vec().into(), revision)
            .await
        {
            Ok(new_revision) => {
                directory
                    .caught_up(new_revision, Duration::from_secs(5))
                    .await;
                return Ok(Some(record));
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(RecordError::Broker(e.to_string())),
        }
    }
    Err(RecordError::Contended(id.to_owned()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn an_endpoint_id_is_a_subject_token_of_at_most_128(text in "[a-zA-Z0-9_. -]{0,130}") {
            let expected = (1..=128).contains(&text.len())
                && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            prop_assert_eq!(EndpointId::parse(&text).is_ok(), expected);
            if let Ok(id) = EndpointId::parse(&text) {
                prop_assert_eq!(id.as_str(), text.as_str());
            }
        }
    }

    #[test]
    fn ids_made_here_parse() {
        let id = EndpointId::random();
        assert!(id.as_str().starts_with("ep_"));
        assert!(EndpointId::parse(id.as_str()).is_ok());
    }
}
