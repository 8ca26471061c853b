//! Dead letters: stream `DLQ` (subjects `dlq.<consumer>.<original subject>`, 30 days), holding the
//! original event with the reason, the attempt count and the consumer as headers.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;

use crate::error::NatsError;
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

/// A dead letter as stored.
#[derive(Debug, Clone)]
pub struct StoredLetter {
    /// Sequence in the `DLQ` stream.
    pub sequence: u64,
    pub consumer: String,
    pub subject: String,
    pub attempts: String,
    pub reason: String,
    pub event_id: Option<String>,
    pub payload: Bytes,
    pub headers: HeaderMap,
}

impl StoredLetter {
    fn of(sequence: u64, headers: HeaderMap, payload: Bytes) -> Self {
        use prost::Message;
        let get = |name: &str| headers.get(name).map(|v| v.to_string()).unwrap_or_default();
        Self {
            sequence,
            consumer: get(CONSUMER_HEADER),
            subject: get(SUBJECT_HEADER),
            attempts: get(ATTEMPTS_HEADER),
            reason: get(REASON_HEADER),
            event_id: hookbus_proto::v1::Event::decode(payload.clone())
                .ok()
                .map(|e| e.id),
            payload,
            headers,
        }
    }
}

/// The dead letter at `sequence` in `DLQ`, if there is one.
pub async fn get(
    js: &jetstream::Context,
    sequence: u64,
) -> Result<Option<StoredLetter>, NatsError> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let stream = js
        .get_stream(DLQ_STREAM)
        .await
        .map_err(NatsError::of("get stream DLQ"))?;
    match stream.get_raw_message(sequence).await {
        Ok(raw) => Ok(Some(StoredLetter::of(sequence, raw.headers, raw.payload))),
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(NatsError::of("get dead letter")(e)),
    }
}

fn filter(consumer: Option<&str>) -> String {
    match consumer {
        Some(name) => format!("dlq.{name}.>"),
        None => "dlq.>".into(),
    }
}

/// Dead letters, oldest first, of one consumer or of all.
pub async fn list(
    js: &jetstream::Context,
    consumer: Option<&str>,
    limit: usize,
) -> Result<Vec<StoredLetter>, NatsError> {
    page(js, filter(consumer), 1, limit).await
}

/// At most `limit` dead letters on `filter` (a subject under `dlq.`), oldest first, from the
/// `DLQ` stream sequence `from` on: a page read with one short-lived consumer that starts there,
/// so its cost follows `limit`, not the length of the stream.
pub async fn page(
    js: &jetstream::Context,
    filter: String,
    from: u64,
    limit: usize,
) -> Result<Vec<StoredLetter>, NatsError> {
    use futures_util::StreamExt;

    let stream = js
        .get_stream(DLQ_STREAM)
        .await
        .map_err(NatsError::of("get stream DLQ"))?;
    let reader = stream
        .create_consumer(jetstream::consumer::pull::Config {
            filter_subject: filter,
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ack_policy: jetstream::consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(NatsError::of("create DLQ reader"))?;
    let mut letters = Vec::new();
    while letters.len() < limit {
        let mut batch = reader
            .fetch()
            .max_messages((limit - letters.len()).min(500))
            .messages()
            .await
            .map_err(NatsError::of("fetch dead letters"))?;
        let before = letters.len();
        while let Some(message) = batch.next().await {
            let message = message.map_err(NatsError::of("read dead letter"))?;
            let sequence = message
                .info()
                .map(|i| i.stream_sequence)
                .unwrap_or_default();
            letters.push(StoredLetter::of(
                sequence,
                message.headers.clone().unwrap_or_default(),
                message.payload.clone(),
            ));
        }
        if letters.len() == before {
            break;
        }
    }
    let _ = stream
        .delete_consumer(reader.cached_info().name.as_str())
        .await;
    Ok(letters)
}

/// Publishes a dead letter again on its original subject, with a fresh message id (the event id
/// in the payload stays, so consumers that processed it already skip it), then removes it from
/// `DLQ`.
pub async fn retry(js: &jetstream::Context, letter: &StoredLetter) -> Result<(), NatsError> {
    let mut headers = HeaderMap::new();
    for (name, values) in letter.headers.iter() {
        let name: &str = name.as_ref();
        if name.starts_with("Hookbus-Dlq-") || name.starts_with("Nats-") {
            continue;
        }
        for value in values {
            headers.append(name, value.as_str());
        }
    }
    let message = PublishMessage::build()
        .payload(letter.payload.clone())
        .headers(headers)
        .message_id(format!("redrive:{}", uuid::Uuid::now_v7()));
    js.send_publish(letter.subject.clone(), message)
        .await
        .map_err(NatsError::of("publish dead letter again"))?
        .await
        .map_err(NatsError::of("publish dead letter again"))?;
    js.get_stream(DLQ_STREAM)
        .await
        .map_err(NatsError::of("get stream DLQ"))?
        .delete_message(letter.sequence)
        .await
        .map_err(NatsError::of("delete dead letter"))?;
    Ok(())
}

/// Removes the dead letters of one consumer, or all; returns how many.
pub async fn purge(js: &jetstream::Context, consumer: Option<&str>) -> Result<u64, NatsError> {
    let stream = js
        .get_stream(DLQ_STREAM)
        .await
        .map_err(NatsError::of("get stream DLQ"))?;
    let response = stream
        .purge()
        .filter(filter(consumer))
        .await
        .map_err(NatsError::of("purge dead letters"))?;
    Ok(response.purged)
}
