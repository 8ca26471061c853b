//! Prometheus metrics of the ingress.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The configured source, or `_unknown` for a path that names none.
    pub source: String,
    /// `accepted`, `duplicate`, `challenge`, or the error code.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub source: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub verification_failures: Family<FailureLabels, Counter>,
    pub publish_seconds: Histogram,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            verification_failures: Family::default(),
            publish_seconds: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        };
        let registry = registry.sub_registry_with_prefix("hookbus_ingress");
        registry.register(
            "requests",
            "Webhook requests by source and outcome",
            metrics.requests.clone(),
        );
        registry.register(
            "verification_failures",
            "Signature verification failures by source and reason",
            metrics.verification_failures.clone(),
        );
        registry.register(
            "publish_seconds",
            "Time from publish to PubAck, retries included",
            metrics.publish_seconds.clone(),
        );
        metrics
    }
}
