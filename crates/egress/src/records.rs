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

/// What an endpoint id may look like: `ep_` and a UUID when made here, but any 1 to 128 letters,
/// digits, `-` or `_` (a subject token).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
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
