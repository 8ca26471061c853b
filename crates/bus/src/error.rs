//! The error of a JetStream request that failed.

/// A JetStream or key-value request that failed, and which one it was.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {cause}")]
pub struct NatsError {
    /// What was asked: `get stream DLQ`, `create consumer`, `publish`.
    pub what: &'static str,
    cause: Box<dyn std::error::Error + Send + Sync>,
}

impl NatsError {
    /// A `map_err` adapter that names the request.
    pub fn of<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
        what: &'static str,
    ) -> impl FnOnce(E) -> Self {
        move |cause| Self {
            what,
            cause: cause.into(),
        }
    }
}
