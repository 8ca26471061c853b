//! Which endpoints an event goes to.
//!
//! - `event_types` are patterns on the event type with `*` for one token and a final `>` for the
//!   rest (`order.*`, `stock.>`). Empty means every type except `hookbus.*`.
//! - A `hookbus.*` type (the egress's own notices, such as `hookbus.delivery.exhausted`) goes only
//!   to an endpoint that lists a pattern starting with `hookbus.`: a catch-all endpoint that keeps
//!   failing cannot receive, and fail on, the notices about its own failures.
//! - `sources`: empty means every source.
//! - Tenancy: an event with a tenant goes only to that tenant's endpoints; an event without one
//!   goes only to endpoints without one (the operator's own subscribers).

/// What an endpoint subscribes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    pub event_types: Vec<String>,
    pub sources: Vec<String>,
    pub tenant: Option<String>,
}

/// The prefix of the egress's own event types.
const OWN_TYPES: &str = "hookbus";

impl Subscription {
    pub fn matches(&self, event_type: &str, source: &str, tenant: Option<&str>) -> bool {
        if self.tenant.as_deref() != tenant {
            return false;
        }
        if !self.sources.is_empty() && !self.sources.iter().any(|s| s == source) {
            return false;
        }
        let own = event_type.split('.').next() == Some(OWN_TYPES);
        if self.event_types.is_empty() {
            return !own;
        }
        self.event_types.iter().any(|pattern| {
            (!own || pattern.split('.').next() == Some(OWN_TYPES))
                && hookbus_bus::subject::matches(pattern, event_type)
        })
    }
}

/// An event-type pattern that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("{0:?} has an empty token")]
    EmptyToken(String),
    #[error("{0:?} contains white space")]
    WhiteSpace(String),
    #[error("{0:?}: > must be a whole last token")]
    Gt(String),
    #[error("{0:?}: * must be a whole token")]
    Star(String),
}

/// Checks one event-type pattern; the error says what is wrong with it.
pub fn check_pattern(pattern: &str) -> Result<(), PatternError> {
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(PatternError::EmptyToken(pattern.to_owned()));
        }
        if token.contains(char::is_whitespace) {
            return Err(PatternError::WhiteSpace(pattern.to_owned()));
        }
        if token.contains('>') && (*token != ">" || i + 1 != tokens.len()) {
            return Err(PatternError::Gt(pattern.to_owned()));
        }
        if token.contains('*') && *token != "*" {
            return Err(PatternError::Star(pattern.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(event_types: &[&str], sources: &[&str], tenant: Option<&str>) -> Subscription {
        Subscription {
            event_types: event_types.iter().map(|s| (*s).to_owned()).collect(),
            sources: sources.iter().map(|s| (*s).to_owned()).collect(),
            tenant: tenant.map(str::to_owned),
        }
    }

    #[test]
    fn types_sources_and_tenants_select_the_endpoints() {
        let all = sub(&[], &[], None);
        assert!(all.matches("order.created", "shop", None));
        assert!(!all.matches("hookbus.delivery.exhausted", "hookbus", None));
        assert!(
            !all.matches("order.created", "shop", Some("acme")),
            "no tenant's events"
        );

        let orders = sub(&["order.*"], &["shop"], None);
        assert!(orders.matches("order.created", "shop", None));
        assert!(!orders.matches("order.created", "github", None));
        assert!(!orders.matches("order.created.late", "shop", None));
        assert!(!orders.matches("stock.low", "shop", None));

        let everything = sub(&[">"], &[], None);
        assert!(everything.matches("a.b.c", "x", None));
        assert!(
            !everything.matches("hookbus.endpoint.disabled", "hookbus", None),
            "hookbus.* only when listed"
        );
        let notices = sub(&["hookbus.>"], &[], None);
        assert!(notices.matches("hookbus.endpoint.disabled", "hookbus", None));

        let acme = sub(&[], &[], Some("acme"));
        assert!(acme.matches("order.created", "api", Some("acme")));
        assert!(!acme.matches("order.created", "api", Some("globex")));
        assert!(!acme.matches("order.created", "api", None));
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        for good in ["order.created", "order.*", "*.created", ">", "stock.>"] {
            check_pattern(good).unwrap();
        }
        for (bad, says) in [
            ("order..created", "empty token"),
            ("", "empty token"),
            ("order.>.x", "last token"),
            ("order.cre*", "whole token"),
            ("order created", "white space"),
        ] {
            let error = check_pattern(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
