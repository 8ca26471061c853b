//! Create-or-update of the streams hookbus owns, so any service can start first.

use async_nats::jetstream::{self, stream};

use crate::StreamSettings;

pub const EVENTS_STREAM: &str = "EVENTS";

#[derive(Debug, thiserror::Error)]
#[error("cannot provision stream {stream}: {reason}")]
pub struct ProvisionError {
    pub stream: String,
    pub reason: String,
}

/// The `EVENTS` stream's configuration from settings.
pub fn events_stream_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: EVENTS_STREAM.into(),
        description: Some("hookbus events (subjects events.<source>.<type>)".into()),
        subjects: vec!["events.>".into()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: settings.duplicate_window,
        max_age: settings.max_age,
        num_replicas: settings.replicas,
        allow_message_ttl: true,
        ..Default::default()
    }
}

/// Creates the `EVENTS` stream, or updates the settings hookbus manages on an existing one
/// (leaving any other setting an operator changed as it is).
pub async fn ensure_events_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<stream::Info, ProvisionError> {
    ensure_stream(js, events_stream_config(settings)).await
}

/// Creates `wanted`, or updates the settings hookbus manages on an existing stream of that name.
pub async fn ensure_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
) -> Result<stream::Info, ProvisionError> {
    let error = |reason: String| ProvisionError {
        stream: wanted.name.clone(),
        reason,
    };
    // Two attempts: a concurrent creator can win the race between our lookup and our create.
    for _ in 0..2 {
        match js.get_stream(&wanted.name).await {
            Ok(existing) => {
                let current = existing.cached_info().config.clone();
                let merged = stream::Config {
                    subjects: wanted.subjects.clone(),
                    duplicate_window: wanted.duplicate_window,
                    max_age: wanted.max_age,
                    num_replicas: wanted.num_replicas,
                    allow_message_ttl: wanted.allow_message_ttl,
                    allow_message_schedules: wanted.allow_message_schedules,
                    allow_direct: wanted.allow_direct || current.allow_direct,
                    description: wanted.description.clone(),
                    // Set only where hookbus sets one (an update to it needs nats-server 2.13).
                    max_consumers: if wanted.max_consumers > 0 {
                        wanted.max_consumers
                    } else {
                        current.max_consumers
                    },
                    ..current.clone()
                };
                if merged == current {
                    return Ok(existing.cached_info().clone());
                }
                return js
                    .update_stream(merged)
                    .await
                    .map_err(|e| error(format!("update: {e}")));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref je)
                        if je.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                match js.create_stream(wanted.clone()).await {
                    Ok(created) => return Ok(created.cached_info().clone()),
                    Err(e)
                        if matches!(
                            e.kind(),
                            jetstream::context::CreateStreamErrorKind::JetStream(ref je)
                                if je.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST
                        ) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(error(format!("create: {e}"))),
                }
            }
            Err(e) => return Err(error(e.to_string())),
        }
    }
    Err(error("created and deleted concurrently; try again".into()))
}
