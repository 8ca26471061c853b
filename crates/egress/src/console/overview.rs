//! `GET /console/overview`: what the egress is doing, from its own stores and the broker (not
//! from Prometheus): events in and deliveries out in the last minute, the failure rate of the
//! last minute's attempts, the endpoints failing longest, and the size of the dead-letter queue.

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;

use super::AppState;
use super::pages::{error_page, operator_only};
use super::session::Viewer;
use crate::api::{ApiError, rfc3339};
use crate::attempt_log::Start;
use crate::engine::{Engine, unix_now};
use crate::store::StoreError;

/// Attempts of the last minute read to tell the failure rate.
const SAMPLE: usize = 250;
/// Failing endpoints looked at.
const FAILING_SCAN: usize = 500;

#[derive(Serialize)]
struct Failing {
    id: String,
    url: String,
    since: String,
    hours: f64,
}

/// Messages on `filter` stored since `since`: the pending count of a consumer made to start
/// there, removed at once.
async fn count_since(
    stream: &stream::Stream,
    filter: &str,
    since: time::OffsetDateTime,
) -> Result<u64, StoreError> {
    let mut reader = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: filter.to_owned(),
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: since },
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(10),
            ..Default::default()
        })
        .await
        .map_err(|e| StoreError::new("create counter", e))?;
    let pending = reader
        .info()
        .await
        .map_err(|e| StoreError::new("counter info", e))?
        .num_pending;
    let name = reader.cached_info().name.clone();
    let _ = stream.delete_consumer(&name).await;
    Ok(pending)
}

async fn figures(engine: &Engine) -> Result<serde_json::Value, StoreError> {
    let now = time::OffsetDateTime::now_utc();
    let minute_ago = now - time::Duration::minutes(1);
    let events_in = count_since(&engine.stores.events, "events.>", minute_ago).await?;
    let attempts_out = count_since(
        &engine.stores.attempts.stream,
        "egress.attempts.>",
        minute_ago,
    )
    .await?;
    let (sample, _) = engine
        .stores
        .attempts
        .forward("egress.attempts.>", Start::Time(minute_ago), SAMPLE)
        .await?;
    let failed = sample
        .iter()
        .filter(|(_, a)| !crate::attempt_log::delivered(a))
        .count();
    let failure_rate = (!sample.is_empty()).then(|| failed as f64 / sample.len() as f64 * 100.0);

    let mut failing = Vec::new();
    let mut keys = engine
        .stores
        .health
        .keys()
        .await
        .map_err(|e| StoreError::new("list endpoint health", e))?
        .take(FAILING_SCAN);
    let today = unix_now();
    while let Some(key) = keys.next().await {
        let Ok(id) = key else { continue };
        let Ok(Some(value)) = engine.stores.health.get(&id).await else {
            continue;
        };
        let Some(since) = std::str::from_utf8(&value)
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
        else {
            continue;
        };
        let url = engine
            .directory
            .get(&id)
            .map(|live| live.record.url.clone())
            .unwrap_or_default();
        failing.push(Failing {
            id,
            url,
            since: rfc3339(since),
            hours: ((today - since) as f64 / 360.0).round() / 10.0,
        });
    }
    failing.sort_by(|a, b| a.since.cmp(&b.since));
    failing.truncate(10);

    let dlq = engine
        .stores
        .js
        .get_stream(hookbus_bus::dlq::DLQ_STREAM)
        .await
        .map_err(|e| StoreError::new("get stream DLQ", e))?
        .info()
        .await
        .map_err(|e| StoreError::new("DLQ info", e))?
        .state
        .messages;
    Ok(json!({
        "events_in": events_in,
        "attempts_out": attempts_out,
        "failure_rate": failure_rate.map(|r| format!("{r:.1}")),
        "sampled": sample.len(),
        "failing": failing,
        "dead_letters": dlq,
        "endpoints": engine.directory.len(),
    }))
}

/// The overview page (the operator's only).
pub async fn page(State(state): AppState, viewer: Viewer) -> Response {
    if let Some(refused) = operator_only(&state, &viewer) {
        return refused;
    }
    match figures(&state.engine).await {
        Ok(figures) => state.views.render(
            StatusCode::OK,
            "overview.html",
            json!({ "layout": viewer.layout(&state, "overview"), "figures": figures }),
        ),
        Err(e) => error_page(&state, &viewer, ApiError::internal(e)),
    }
}
