//! Delivery attempts, a page at a time, each page O(limit) ([`crate::attempt_log`]):
//!
//! - an endpoint's (`GET /v1/endpoints/{id}/attempts`), newest first: the page reads the block of
//!   the iterator's position and older blocks until it is full. The iterator is the block and
//!   the stream sequence of the page's last attempt, so a page goes on exactly where the last
//!   one stopped, even where two replicas numbered attempts in one block during a hand-over;
//! - one event's at one endpoint (`?event_id=`), newest first: the few records of that pair;
//! - one message's at every endpoint (`GET /v1/messages/{id}/attempts`), in the order they were
//!   made: read forward from the iterator's stream sequence.

use axum::Json;
use axum::extract::{Path, State};
use hookbus_proto::egress::v1::DeliveryAttempt;
use hookbus_proto::egress::v1::delivery_attempt::{State as TaskState, Status};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::endpoints::load;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::input::{Params, rfc3339};
use super::page::{self, PageRequest};
use crate::access::Scope;
use crate::attempt_log::{self, BLOCK, Found, Start};
use crate::engine::Engine;
use crate::records::valid_id;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AttemptOut {
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    /// 1 for the first try.
    #[schema(minimum = 1)]
    pub attempt: u32,
    /// `succeeded` or `failed`.
    pub status: String,
    /// Where the task stood after this try: `delivered`, `failed` (a retry is scheduled),
    /// `queued` (held until its endpoint is enabled) or `dead` (dead-lettered).
    pub state: String,
    /// The HTTP status; absent when no answer came.
    pub response_status: Option<u32>,
    pub latency_ms: u64,
    /// The first KiB of the answer.
    pub response_body: String,
    /// Why it failed without an answer (timeout, refused address, connection error).
    pub error: Option<String>,
    #[schema(format = DateTime)]
    pub attempted_at: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AttemptList {
    pub items: Vec<AttemptOut>,
    /// Pass as `iterator` for the next page; `null` when `done`.
    pub iterator: Option<String>,
    /// Nothing follows.
    pub done: bool,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AttemptQuery {
    /// Only the attempts of this event.
    pub event_id: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 250)]
    pub limit: Option<usize>,
    /// The `iterator` of the previous page.
    pub iterator: Option<String>,
}

fn attempt_out(a: DeliveryAttempt) -> AttemptOut {
    AttemptOut {
        status: if a.status == Status::Succeeded as i32 {
            "succeeded".into()
        } else {
            "failed".into()
        },
        state: match a.state() {
            TaskState::Delivered => "delivered",
            TaskState::Queued => "queued",
            TaskState::Dead => "dead",
            // Every record is written with a state; none is unspecified.
            TaskState::Failed | TaskState::Unspecified => "failed",
        }
        .into(),
        response_status: Some(a.response_status).filter(|s| *s != 0),
        error: Some(a.error).filter(|e| !e.is_empty()),
        attempted_at: rfc3339(a.attempted_at.map(|t| t.seconds).unwrap_or_default()),
        id: a.id,
        endpoint_id: a.endpoint_id,
        event_id: a.event_id,
        attempt: a.attempt,
        latency_ms: a.latency_ms,
        response_body: a.response_body,
    }
}

/// The delivery attempts of an endpoint, newest first.
#[utoipa::path(get, path = "/v1/endpoints/{id}/attempts", tag = "deliveries", operation_id = "list_attempts",
    params(("id" = String, Path), AttemptQuery),
    responses((status = 200, body = AttemptList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    State(state): AppState,
    Path(id): Path<String>,
    Params(query): Params<AttemptQuery>,
) -> ApiResult<Json<AttemptList>> {
    list_in(&state.engine, &Scope::Operator, &id, query)
        .await
        .map(Json)
}

/// A page of the attempts of an endpoint that `scope` sees, newest first.
pub async fn list_in(
    engine: &Engine,
    scope: &Scope,
    id: &str,
    query: AttemptQuery,
) -> ApiResult<AttemptList> {
    let page = PageRequest::new("attempts", query.limit, query.iterator.as_deref())?;
    load(engine, scope, id).await?;
    match query.event_id.as_deref() {
        Some(event) if valid_id(event) => {
            let all = engine
                .stores
                .attempts
                .all(&attempt_log::of_event(id, event), Start::Sequence(1))
                .await?;
            newest_first(all, &page)
        }
        Some(_) => newest_first(Vec::new(), &page),
        None => by_blocks(engine, id, &page).await,
    }
}

/// A page of an endpoint's attempts, newest first, read block by block from the iterator's
/// position `<block>:<sequence>`: what is older than that attempt in its block, then the older
/// blocks, until the page is full.
async fn by_blocks(engine: &Engine, id: &str, page: &PageRequest) -> ApiResult<AttemptList> {
    let log = &engine.stores.attempts;
    let bad = || ApiError::invalid("iterator", "is not an iterator of this list");
    let (mut block, mut before) = match page.after.as_deref() {
        Some(position) => {
            let (block, sequence) = position.split_once(':').ok_or_else(bad)?;
            (
                block.parse::<u64>().map_err(|_| bad())?,
                sequence.parse::<u64>().map_err(|_| bad())?,
            )
        }
        None => match log.last_number(id).await? {
            Some(last) => (last / BLOCK, u64::MAX),
            None => return Ok(AttemptList::of("attempts", Vec::new(), None)),
        },
    };
    // The block of the oldest attempt still stored (older ones expired): read once, when the
    // walk needs to know whether anything older is left.
    let mut oldest: Option<u64> = None;
    let mut items = Vec::with_capacity(page.limit);
    loop {
        let mut found = log.block(id, block).await?;
        found.retain(|(sequence, _)| *sequence < before);
        let mut found = found.into_iter().rev().peekable();
        while let Some((sequence, attempt)) = found.next() {
            items.push(attempt_out(attempt));
            if items.len() < page.limit {
                continue;
            }
            if found.peek().is_some() {
                return Ok(AttemptList::of(
                    "attempts",
                    items,
                    Some(format!("{block}:{sequence}")),
                ));
            }
            break;
        }
        if block == 0 {
            return Ok(AttemptList::of("attempts", items, None));
        }
        let oldest = match oldest {
            Some(oldest) => oldest,
            None => *oldest.insert(log.first_number(id).await?.map_or(0, |n| n / BLOCK)),
        };
        if oldest >= block {
            return Ok(AttemptList::of("attempts", items, None));
        }
        block -= 1;
        before = u64::MAX;
        if items.len() == page.limit {
            return Ok(AttemptList::of(
                "attempts",
                items,
                Some(format!("{block}:{before}")),
            ));
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MessageAttemptQuery {
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 250)]
    pub limit: Option<usize>,
    /// The `iterator` of the previous page.
    pub iterator: Option<String>,
}

/// The delivery attempts of one message (event) to every endpoint, in the order they were made.
/// A message that has no attempts (yet) answers an empty list.
#[utoipa::path(get, path = "/v1/messages/{id}/attempts", tag = "deliveries", operation_id = "list_message_attempts",
    params(("id" = String, Path, description = "The event id"), MessageAttemptQuery),
    responses((status = 200, body = AttemptList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_for_message(
    State(state): AppState,
    Path(id): Path<String>,
    Params(query): Params<MessageAttemptQuery>,
) -> ApiResult<Json<AttemptList>> {
    list_for_message_in(&state.engine, &Scope::Operator, &id, query)
        .await
        .map(Json)
}

/// A page of one message's attempts, in the order they were made. A tenant sees only the
/// attempts to its own endpoints.
pub async fn list_for_message_in(
    engine: &Engine,
    scope: &Scope,
    id: &str,
    query: MessageAttemptQuery,
) -> ApiResult<AttemptList> {
    let page = PageRequest::new("message-attempts", query.limit, query.iterator.as_deref())?;
    if !valid_id(id) {
        return Err(ApiError::not_found(format!("no message {id}")));
    }
    let from = page.after_sequence()?.map_or(1, |after| after + 1);
    let (found, more) = engine
        .stores
        .attempts
        .forward(
            &attempt_log::of_message(id),
            Start::Sequence(from),
            page.limit,
        )
        .await?;
    let last = found.last().map(|(sequence, _)| sequence.to_string());
    let visible = |endpoint: &str| {
        scope.is_operator()
            || engine
                .directory
                .get(endpoint)
                .is_some_and(|live| scope.sees(&live.record))
    };
    let items = found
        .into_iter()
        .filter(|(_, a)| visible(&a.endpoint_id))
        .map(|(_, a)| attempt_out(a))
        .collect();
    Ok(AttemptList::of(
        "message-attempts",
        items,
        last.filter(|_| more),
    ))
}

impl AttemptList {
    /// A page of the list; `next` is the position after it, when more follow.
    fn of(list: &str, items: Vec<AttemptOut>, next: Option<String>) -> Self {
        let (iterator, done) = page::next(list, next.as_deref());
        Self {
            items,
            iterator,
            done,
        }
    }
}

/// The page of `attempts` (in stream order) before the iterator's position, newest first.
fn newest_first(attempts: Vec<Found>, page: &PageRequest) -> ApiResult<AttemptList> {
    let before = page.after_sequence()?.unwrap_or(u64::MAX);
    let mut found = attempts
        .into_iter()
        .rev()
        .filter(|(sequence, _)| *sequence < before);
    let mut items = Vec::with_capacity(page.limit);
    let mut last = None;
    for (sequence, attempt) in found.by_ref().take(page.limit) {
        last = Some(sequence);
        items.push(attempt_out(attempt));
    }
    let more = found.next().is_some();
    Ok(AttemptList::of(
        "attempts",
        items,
        last.filter(|_| more).map(|s| s.to_string()),
    ))
}
