//! What every hookbus service shares, so that each service's `run` holds only what is its own:
//!
//! - start-up ([`start`]): the `--config` argument, configuration, telemetry, the TLS crypto
//!   provider, the listening socket, SIGINT/SIGTERM, and the failpoints of the crash tests;
//! - the HTTP shell ([`http`]): `/healthz`, `/readyz`, `/metrics`, and one [`ErrorBody`];
//! - [`ConsumerApp`]: a consumer service's settings turned into a running consumer on the
//!   `EVENTS` stream, resuming from its ledger.
//!
//! It may import the bus, config, telemetry and store crates; no service crate imports another
//! service, and none of them imports this crate's callers.

#![forbid(unsafe_code)]

pub mod consumer;
pub mod http;
pub mod start;

pub use consumer::{
    BatchHandler, ConsumerApp, ConsumerSettings, run_batch_consumer_from_env, run_consumer_from_env,
};
pub use http::{ErrorBody, ErrorDetail, HttpError, readiness, readyz_of, serve, with_health};
pub use start::{
    ServiceArgs, ServiceError, failpoint, install_crypto_provider, run_service, stop_on_signal,
};
