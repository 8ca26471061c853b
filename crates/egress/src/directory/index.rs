//! The directory's in-memory index: the endpoints by id, by tenant and by route, and the pages
//! read from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::Live;

/// The endpoints by id, the same by tenant (`None`: those without one), and by route. Ids are
/// `ep_<UUIDv7>`, so id order is creation order.
#[derive(Default)]
pub(super) struct Index {
    pub(super) by_id: BTreeMap<String, Arc<Live>>,
    pub(super) by_tenant: HashMap<Option<String>, BTreeMap<String, Arc<Live>>>,
    pub(super) by_route: HashMap<Route, BTreeMap<String, Arc<Live>>>,
}

/// Where the dispatcher looks an endpoint up: its tenant, and the first token of one of its
/// event-type patterns, or `None` for a pattern that starts with a wildcard and for an endpoint
/// without patterns (which takes every type but the egress's own). An event then looks at the
/// endpoints of its tenant under its type's first token and under `None`, not at all of them.
pub(super) type Route = (Option<String>, Option<String>);

fn routes(live: &Live) -> BTreeSet<Route> {
    let tenant = &live.record.tenant;
    if live.record.event_types.is_empty() {
        return BTreeSet::from([(tenant.clone(), None)]);
    }
    live.record
        .event_types
        .iter()
        .map(|pattern| {
            let first = pattern.split('.').next().unwrap_or_default();
            let first = (first != "*" && first != ">").then(|| first.to_owned());
            (tenant.clone(), first)
        })
        .collect()
}

impl Index {
    pub(super) fn insert(&mut self, id: &str, live: Arc<Live>) {
        self.remove(id);
        self.by_tenant
            .entry(live.record.tenant.clone())
            .or_default()
            .insert(id.to_owned(), live.clone());
        for route in routes(&live) {
            self.by_route
                .entry(route)
                .or_default()
                .insert(id.to_owned(), live.clone());
        }
        self.by_id.insert(id.to_owned(), live);
    }

    pub(super) fn remove(&mut self, id: &str) {
        let Some(old) = self.by_id.remove(id) else {
            return;
        };
        let tenant = &old.record.tenant;
        if let Some(endpoints) = self.by_tenant.get_mut(tenant) {
            endpoints.remove(id);
            if endpoints.is_empty() {
                self.by_tenant.remove(tenant);
            }
        }
        for route in routes(&old) {
            if let Some(endpoints) = self.by_route.get_mut(&route) {
                endpoints.remove(id);
                if endpoints.is_empty() {
                    self.by_route.remove(&route);
                }
            }
        }
    }

    fn of_tenant(&self, tenant: Option<&str>) -> Option<&BTreeMap<String, Arc<Live>>> {
        self.by_tenant.get(&tenant.map(str::to_owned))
    }

    pub(super) fn page_where(
        &self,
        tenant: Option<&str>,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&Live) -> bool,
        scan: usize,
    ) -> (Vec<Arc<Live>>, Option<String>) {
        use std::ops::Bound;
        let map = match tenant {
            None => &self.by_id,
            Some(tenant) => match self.of_tenant(Some(tenant)) {
                Some(map) => map,
                None => return (Vec::new(), None),
            },
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut found = Vec::with_capacity(limit.min(256));
        let mut looked = 0usize;
        let mut entries = map.range::<str, _>((start, Bound::Unbounded)).peekable();
        while let Some((id, live)) = entries.next() {
            looked += 1;
            if keep(live) {
                found.push(live.clone());
                if found.len() == limit {
                    let next = entries.peek().map(|_| id.clone());
                    return (found, next);
                }
            }
            if looked >= scan {
                let next = entries.peek().map(|_| id.clone());
                return (found, next);
            }
        }
        (found, None)
    }
}
