//! Prometheus metrics of the consumer runtime, one series per consumer (the `consumer` label is
//! the durable name).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub consumer: String,
}

/// What a service's consumers count. Register it once per registry with [`Self::register`] and
/// give each [`crate::ConsumerSpec`] a clone; the default is counted but exposed nowhere.
#[derive(Clone, Debug)]
pub struct ConsumerMetrics {
    /// Messages handled and acknowledged.
    pub processed: Family<ConsumerLabels, Counter>,
    /// Messages handed back for a later delivery (a `Retry`, a panic).
    pub retried: Family<ConsumerLabels, Counter>,
    /// Messages stored in `DLQ` (a `Reject`, deliveries exhausted, a last delivery timed out).
    pub dead_lettered: Family<ConsumerLabels, Counter>,
    /// How long handlers ran (one observation per batch), whatever they answered.
    pub handler_seconds: Family<ConsumerLabels, Histogram, fn() -> Histogram>,
    /// Messages per batch handed to a handler.
    pub batch_messages: Family<ConsumerLabels, Histogram, fn() -> Histogram>,
    /// Messages on the stream that the consumer has not been delivered yet, as last seen on the
    /// server (every few seconds).
    pub pending: Family<ConsumerLabels, Gauge>,
    /// Messages delivered and not yet acknowledged, as last seen on the server.
    pub ack_pending: Family<ConsumerLabels, Gauge>,
}

fn handler_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    ])
}

fn batch_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
}

impl Default for ConsumerMetrics {
    fn default() -> Self {
        Self {
            processed: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            handler_seconds: Family::new_with_constructor(handler_histogram),
            batch_messages: Family::new_with_constructor(batch_histogram),
            pending: Family::default(),
            ack_pending: Family::default(),
        }
    }
}

impl ConsumerMetrics {
    /// New metrics, registered in `registry` as `hookbus_consumer_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("hookbus_consumer");
        sub.register(
            "processed",
            "Messages handled and acknowledged",
            metrics.processed.clone(),
        );
        sub.register(
            "retried",
            "Messages handed back for a later delivery",
            metrics.retried.clone(),
        );
        sub.register(
            "dead_lettered",
            "Messages stored in the DLQ stream",
            metrics.dead_lettered.clone(),
        );
        sub.register(
            "handler_seconds",
            "Time a handler ran",
            metrics.handler_seconds.clone(),
        );
        sub.register(
            "batch_messages",
            "Messages per batch handed to a handler",
            metrics.batch_messages.clone(),
        );
        sub.register(
            "pending",
            "Messages not yet delivered to the consumer",
            metrics.pending.clone(),
        );
        sub.register(
            "ack_pending",
            "Messages delivered and not yet acknowledged",
            metrics.ack_pending.clone(),
        );
        metrics
    }
}
