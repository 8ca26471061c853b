//! Waiting for what a test expects to happen, with a deadline.

use std::time::Duration;

use tokio::time::Instant;

/// What did not happen in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} within {within:?}")]
pub struct Timeout {
    pub what: String,
    pub within: Duration,
}

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(25);

/// Checks `check` until it gives a value, and returns it; panics with "timed out waiting for
/// `what`" after `within`.
pub async fn wait_for<T>(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Checks `condition` until it holds; panics with "timed out waiting for `what`" after `within`.
pub async fn wait_until(within: Duration, what: &str, mut condition: impl AsyncFnMut() -> bool) {
    wait_for(within, what, async || condition().await.then_some(())).await
}
