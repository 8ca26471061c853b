//! What a read or write of the egress's stores that did not complete says.

/// A broker read or write that did not complete.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct StoreError {
    pub what: &'static str,
    pub reason: String,
}

impl StoreError {
    pub fn new(what: &'static str, reason: impl std::fmt::Display) -> Self {
        Self {
            what,
            reason: reason.to_string(),
        }
    }
}
