//! The demo endpoint of `hookbus dev`: an HTTP server that takes the egress's deliveries, checks
//! each signature with the endpoint's secret, logs what it received, and lists the latest
//! deliveries at `GET /`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use hookbus_signature::{Scheme, Verifier};
use serde::Serialize;

/// Deliveries kept for `GET /`.
const KEPT: usize = 100;

/// One delivery as the sink saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    pub webhook_id: String,
    pub event_type: String,
    /// Whether `webhook-signature` verified with the demo endpoint's secret.
    pub verified: bool,
    pub body: serde_json::Value,
}

struct Sink {
    verifier: Verifier,
    received: Mutex<VecDeque<Received>>,
}

/// The sink's routes: `POST` anywhere takes a delivery, `GET /` lists the latest.
pub fn router(secret: &str) -> anyhow::Result<axum::Router> {
    let sink = Arc::new(Sink {
        verifier: Verifier::new(Scheme::StandardWebhooks, &[secret], 300)?,
        received: Mutex::default(),
    });
    Ok(axum::Router::new()
        .route("/", get(list).post(receive))
        .fallback(receive)
        .with_state(sink))
}

async fn receive(State(sink): State<Arc<Sink>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let verified = sink
        .verifier
        .verify(&headers, &body, hookbus_egress::engine::unix_now())
        .map_err(|e| tracing::warn!(error = %e, "demo endpoint: signature did not verify"))
        .is_ok();
    let received = Received {
        webhook_id: header("webhook-id"),
        event_type: header("hookbus-event-type"),
        verified,
        body: serde_json::from_slice(&body)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into()),
    };
    tracing::info!(
        webhook_id = %received.webhook_id,
        event_type = %received.event_type,
        verified,
        bytes = body.len(),
        "demo endpoint received a delivery"
    );
    let mut kept = sink.received.lock().expect("not poisoned");
    if kept.len() == KEPT {
        kept.pop_front();
    }
    kept.push_back(received);
    if verified {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::UNAUTHORIZED
    }
}

async fn list(State(sink): State<Arc<Sink>>) -> Json<Vec<Received>> {
    let kept = sink.received.lock().expect("not poisoned");
    Json(kept.iter().rev().cloned().collect())
}
