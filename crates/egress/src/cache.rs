//! The events this replica dispatched lately, by stream sequence, so that its workers need not
//! read them back from `EVENTS` (one broker round trip per delivery, and a fan-out to n endpoints
//! would read the same event n times). Bounded by count and by payload bytes; the oldest go
//! first. A miss (another replica dispatched it, or it was evicted) reads `EVENTS` as before.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use hookbus_proto::v1::Event;

#[derive(Debug)]
pub struct EventCache {
    max_events: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    events: HashMap<u64, Event>,
    order: VecDeque<u64>,
    bytes: usize,
}

impl EventCache {
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            max_events,
            max_bytes,
            inner: Mutex::default(),
        }
    }

    pub fn insert(&self, sequence: u64, event: &Event) {
        let size = event.payload.len();
        if self.max_events == 0 || size > self.max_bytes {
            return;
        }
        let mut inner = self.inner.lock().expect("not poisoned");
        if inner.events.contains_key(&sequence) {
            return;
        }
        while inner.events.len() >= self.max_events || inner.bytes + size > self.max_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.events.remove(&oldest) {
                inner.bytes -= gone.payload.len();
            }
        }
        inner.bytes += size;
        inner.order.push_back(sequence);
        inner.events.insert(sequence, event.clone());
    }

    /// The event at `sequence`, if it is cached and is event `id`.
    pub fn get(&self, sequence: u64, id: &str) -> Option<Event> {
        let inner = self.inner.lock().expect("not poisoned");
        inner.events.get(&sequence).filter(|e| e.id == id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, size: usize) -> Event {
        Event {
            id: id.into(),
            payload: vec![0; size].into(),
            ..Event::default()
        }
    }

    #[test]
    fn the_oldest_go_first_by_count_and_by_bytes() {
        let cache = EventCache::new(2, 100);
        cache.insert(1, &event("a", 10));
        cache.insert(2, &event("b", 10));
        cache.insert(3, &event("c", 10));
        assert!(cache.get(1, "a").is_none(), "over the count");
        assert!(cache.get(2, "b").is_some() && cache.get(3, "c").is_some());
        cache.insert(4, &event("d", 85));
        assert!(
            cache.get(2, "b").is_none(),
            "over the bytes: the oldest goes"
        );
        assert!(cache.get(3, "c").is_some(), "10 + 85 fit");
        assert_eq!(cache.get(4, "d").unwrap().id, "d");
        assert!(
            cache.get(4, "other").is_none(),
            "a sequence holding another event"
        );
        cache.insert(5, &event("huge", 101));
        assert!(
            cache.get(5, "huge").is_none(),
            "larger than the whole cache"
        );
    }
}
