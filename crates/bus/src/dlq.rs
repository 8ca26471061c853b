//! Dead letters: stream `DLQ` (subjects `dlq.<consumer>.<original subject>`, 30 days), holding the
//! original event with the reason, the attempt count and the consumer as headers.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;

use crate::streams::{ProvisionError, ensure_stream};

pub const DLQ_STREAM: &str = "DLQ";
/// Why the message was dead-lettered.
pub const REASON_HEADER: &str = "Hookbus-Dlq-Reason";
/// The consumer that gave up on it.
pub const CONSUMER_HEADER: &str = "Hookbus-Dlq-Consumer";
/// How many deliveries were made.
pub const ATTEMPTS_HEADER: &str = "Hookbus-Dlq-Attempts";
/// The original subject and sequence in `EVENTS`.
pub const SUBJECT_HEADER: &str = "Hookbus-Dlq-Subject";
pub const SEQUENCE_HEADER: &str = "Hookbus-Dlq-Sequence";

/// The `DLQ` stream's configuration.
pub fn dlq_stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: DLQ_STREAM.into(),
        description: Some("hookbus dead letters (dlq.<consumer>.<original subject>)".into()),
        subjects: vec!["dlq.>".into()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::from_secs(30 * 24 * 3600),
        duplicate_window: Duration::from_secs(120),
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Creates or updates the `DLQ` stream.
pub async fn ensure_dlq_stream(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<stream::Info, ProvisionError> {
    ensure_stream(js, dlq_stream_config(replicas)).await
}

/// One message to dead-letter.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub consumer: &'a str,
    pub subject: &'a str,
    pub stream_sequence: u64,
    pub attempts: u64,
    pub reason: &'a str,
    pub payload: Bytes,
    pub headers: Option<&'a HeaderMap>,
}

/// Publishes a dead letter and waits for its PubAck. The message id is derived from the consumer
/// and the original sequence, so the same message dead-lettered twice (by two replicas, or by the
/// runtime and the max-deliveries advisory) is stored once.
pub async fn publish_dead_letter(
    js: &jetstream::Context,
    letter: DeadLetter<'_>,
) -> Result<(), jetstream::context::PublishError> {
    let mut headers = HeaderMap::new();
    if let Some(original) = letter.headers {
        for (name, values) in original.iter() {
            let name: &str = name.as_ref();
            if name == "Nats-Msg-Id" || name.starts_with("Nats-Expected") {
                continue;
            }
            for value in values {
                headers.append(name, value.as_str());
            }
        }
    }
    // Header values are single lines.
    let reason: String = letter
        .reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    headers.insert(REASON_HEADER, reason.as_str());
    headers.insert(CONSUMER_HEADER, letter.consumer);
    headers.insert(ATTEMPTS_HEADER, letter.attempts.to_string().as_str());
    headers.insert(SUBJECT_HEADER, letter.subject);
    headers.insert(SEQUENCE_HEADER, letter.stream_sequence.to_string().as_str());
    let message = PublishMessage::build()
        .payload(letter.payload)
        .headers(headers)
        .message_id(format!(
            "dlq:{}:{}",
            letter.consumer, letter.stream_sequence
        ));
    js.send_publish(
        format!("dlq.{}.{}", letter.consumer, letter.subject),
        message,
    )
    .await?
    .await?;
    Ok(())
}
