//! Every list pages the same way: `limit` (default 50, at most 250) and an opaque `iterator`
//! from the previous page's answer; the answer says `done` when nothing follows. An iterator is
//! the list's name and the position after the page's last item, in URL-safe base64, so one list's
//! iterator is refused by another.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::{ApiError, ApiResult};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 250;

/// Where a page starts and how long it is.
pub struct PageRequest {
    pub limit: usize,
    /// The position after the previous page; `None` for the first page.
    pub after: Option<String>,
}

impl PageRequest {
    /// Reads `limit` and `iterator` for the list called `list`.
    pub fn new(list: &str, limit: Option<usize>, iterator: Option<&str>) -> ApiResult<Self> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("must be 1 to {MAX_LIMIT}"),
            ));
        }
        let after =
            match iterator.filter(|i| !i.is_empty()) {
                None => None,
                Some(iterator) => Some(decode(list, iterator).ok_or_else(|| {
                    ApiError::invalid("iterator", "is not an iterator of this list")
                })?),
            };
        Ok(Self { limit, after })
    }

    /// The position as a stream sequence, for the lists that page by one.
    pub fn after_sequence(&self) -> ApiResult<Option<u64>> {
        self.after
            .as_deref()
            .map(|position| {
                position
                    .parse()
                    .map_err(|_| ApiError::invalid("iterator", "is not an iterator of this list"))
            })
            .transpose()
    }
}

/// The `iterator` and `done` of an answer: `next` is the position after the page's last item
/// when more follow.
pub fn next(list: &str, next: Option<&str>) -> (Option<String>, bool) {
    match next {
        Some(position) => (
            Some(URL_SAFE_NO_PAD.encode(format!("{list}:{position}"))),
            false,
        ),
        None => (None, true),
    }
}

fn decode(list: &str, iterator: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(iterator).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let position = text.strip_prefix(list)?.strip_prefix(':')?;
    (!position.is_empty()).then(|| position.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_iterator_reads_back_only_in_its_own_list() {
        let (iterator, done) = next("endpoints", Some("ep_1"));
        assert!(!done);
        let iterator = iterator.unwrap();
        let page = PageRequest::new("endpoints", None, Some(&iterator)).unwrap();
        assert_eq!((page.limit, page.after.as_deref()), (50, Some("ep_1")));
        assert!(PageRequest::new("dead-letters", None, Some(&iterator)).is_err());
        assert!(PageRequest::new("endpoints", None, Some("not base64!")).is_err());
        assert_eq!(next("endpoints", None), (None, true));
    }

    #[test]
    fn limit_is_1_to_250() {
        assert!(PageRequest::new("x", Some(0), None).is_err());
        assert!(PageRequest::new("x", Some(251), None).is_err());
        assert_eq!(PageRequest::new("x", Some(250), None).unwrap().limit, 250);
    }
}
