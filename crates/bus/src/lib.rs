//! The bus: NATS connection from configuration, stream provisioning, subject naming and event
//! publishing that waits for JetStream's PubAck, the two consumer runtimes (one durable consumer
//! that every replica pulls, [`consumer`]; partitions shared among the replicas, one owner each,
//! [`partitioned`]) and dead letters.

#![forbid(unsafe_code)]

mod connect;
pub mod consumer;
pub mod dlq;
mod error;
mod metrics;
pub mod names;
pub mod partitioned;
mod publish;
pub mod streams;
pub mod subject;

pub use connect::{
    ConnectError, connect, ensure_fits_max_payload, flush_before_exit, is_connected,
    supports_version,
};
pub use consumer::{
    Checkpoint, ConsumerError, ConsumerSpec, Delivery, Outcome, StartPosition, run_batch_consumer,
    run_consumer,
};
pub use error::NatsError;
pub use hookbus_config::{NatsConfig, StreamSettings};
pub use metrics::{ConsumerLabels, ConsumerMetrics};
pub use names::{
    Built, EventBuilder, EventId, EventType, NameError, SourceName, unix_now, unix_seconds,
};
pub use publish::{PublishError, Published, Publisher, event_headers};
pub use streams::{EVENTS_STREAM, ProvisionError, ensure_events_stream, events_stream_config};

/// Room beyond the body for the envelope's other fields, the preserved provider headers and the
/// NATS headers, counted against the server's `max_payload`.
pub const ENVELOPE_HEADROOM: u64 = 32 * 1024;
