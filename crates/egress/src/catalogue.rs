//! What has been seen on `EVENTS`: every subject with its message count (the stream's own
//! per-subject state) and its last event. From it come the event-type catalogue
//! (`GET /v1/event-types`) and the console's sources page. A scan reads one message per subject,
//! so it is kept for a few seconds and shared by every caller meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hookbus_proto::v1::Event;
use prost::Message;
use tokio::time::Instant;

use crate::store::StoreError;

/// How long a scan answers.
const FRESH_FOR: Duration = Duration::from_secs(5);
/// Subjects read at most; past them the catalogue says it is partial.
pub const MAX_SUBJECTS: usize = 2_000;

/// One event type.
#[derive(Debug, Clone)]
pub struct TypeSeen {
    pub sources: BTreeSet<String>,
    /// Its events still in `EVENTS`.
    pub count: u64,
    /// The latest of them.
    pub example: Event,
}

/// One source.
#[derive(Debug, Clone, Default)]
pub struct SourceSeen {
    pub count: u64,
    pub types: BTreeSet<String>,
    /// The latest event of each of its types, newest first.
    pub recent: Vec<Event>,
}

#[derive(Debug, Default)]
pub struct Seen {
    pub types: BTreeMap<String, TypeSeen>,
    pub sources: BTreeMap<String, SourceSeen>,
    /// More subjects than [`MAX_SUBJECTS`]: some types are missing.
    pub partial: bool,
}

#[derive(Default)]
pub struct Catalogue {
    last: tokio::sync::Mutex<Option<(Instant, Arc<Seen>)>>,
}

impl Catalogue {
    /// What `events` holds, scanned at most [`FRESH_FOR`] ago.
    pub async fn seen(
        &self,
        events: &async_nats::jetstream::stream::Stream,
    ) -> Result<Arc<Seen>, StoreError> {
        let mut last = self.last.lock().await;
        if let Some((at, seen)) = last.as_ref()
            && at.elapsed() < FRESH_FOR
        {
            return Ok(seen.clone());
        }
        let seen = Arc::new(scan(events).await?);
        *last = Some((Instant::now(), seen.clone()));
        Ok(seen)
    }
}

async fn scan(events: &async_nats::jetstream::stream::Stream) -> Result<Seen, StoreError> {
    let mut subjects = events
        .info_with_subjects("events.>")
        .await
        .map_err(|e| StoreError::new("list event subjects", e))?;
    let mut counts = Vec::new();
    let mut partial = false;
    while let Some(entry) = subjects.next().await {
        let (subject, count) = entry.map_err(|e| StoreError::new("list event subjects", e))?;
        if counts.len() == MAX_SUBJECTS {
            partial = true;
            break;
        }
        counts.push((subject, count as u64));
    }
    let mut seen = Seen {
        partial,
        ..Seen::default()
    };
    for (subject, count) in counts {
        let message = match events.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => message,
            // Gone since the count (expired or purged).
            Err(_) => continue,
        };
        let Ok(event) = Event::decode(message.payload) else {
            continue;
        };
        let source = seen.sources.entry(event.source.clone()).or_default();
        source.count += count;
        source.types.insert(event.r#type.clone());
        source.recent.push(event.clone());
        match seen.types.get_mut(&event.r#type) {
            Some(known) => {
                known.count += count;
                known.sources.insert(event.source.clone());
                if received(&event) > received(&known.example) {
                    known.example = event;
                }
            }
            None => {
                seen.types.insert(
                    event.r#type.clone(),
                    TypeSeen {
                        sources: BTreeSet::from([event.source.clone()]),
                        count,
                        example: event,
                    },
                );
            }
        }
    }
    for source in seen.sources.values_mut() {
        source
            .recent
            .sort_by_key(|e| std::cmp::Reverse(received(e)));
        source.recent.truncate(20);
    }
    Ok(seen)
}

fn received(event: &Event) -> (i64, i32) {
    event
        .received_at
        .as_ref()
        .map_or((0, 0), |t| (t.seconds, t.nanos))
}
