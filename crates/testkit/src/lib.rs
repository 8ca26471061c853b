//! What hookbus's tests share: a `nats-server` of their own (from `hookbus-nats-server`), an SMTP
//! server that keeps what it accepts, waiting for a condition with a deadline, and the HTTP reads
//! tests repeat.
//!
//! Tests get one server each, on a free port with its own temporary store, stopped on drop; it can
//! be stopped and started again on the same port and store, to test broker loss.

#![forbid(unsafe_code)]

mod http;
mod smtp;
mod wait;

pub use hookbus_nats_server::{
    MIN_VERSION, NatsCluster, NatsServer, ServerError, free_port, nats_server_binary, version_of,
};
pub use http::{get_json, get_text, json_of};
pub use smtp::{Mail, SmtpServer};
pub use wait::{Timeout, wait_for, wait_until};
