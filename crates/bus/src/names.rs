//! The names an event carries, each a type whose `parse` is the only way in, so that a value of
//! one is known to be valid wherever it travels; and [`EventBuilder`], which builds every
//! envelope hookbus publishes together with its subject.

use bytes::Bytes;
use hookbus_proto::Timestamp;
use hookbus_proto::v1::Event;

/// A name that is not what its kind allows; the message says what is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {text:?} must be {rule}")]
pub struct NameError {
    pub kind: &'static str,
    pub text: String,
    pub rule: &'static str,
}

impl NameError {
    /// `text` as the name it is when `ok`, else the error of `kind` that states `rule`.
    fn check(ok: bool, kind: &'static str, rule: &'static str, text: &str) -> Result<String, Self> {
        if ok {
            Ok(text.to_owned())
        } else {
            Err(Self {
                kind,
                text: text.to_owned(),
                rule,
            })
        }
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;

            fn from_str(text: &str) -> Result<Self, NameError> {
                Self::parse(text)
            }
        }
    };
}

name_type!(
    /// An ingress source or a producing service, one subject token: 1 to 64 of `a-z`, `0-9`,
    /// `-`, `_`, starting with a letter or digit (`github`, `shop-eu_2`, `inventory`).
    SourceName
);

impl SourceName {
    const RULE: &'static str =
        "1 to 64 characters of a-z, 0-9, - and _, starting with a letter or digit";

    pub fn parse(text: &str) -> Result<Self, NameError> {
        let ok = !text.is_empty()
            && text.len() <= 64
            && text.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        NameError::check(ok, "source name", Self::RULE, text).map(Self)
    }
}

name_type!(
    /// An event type as dotted subject tokens (`orders.create`, `hookbus.delivery.exhausted`):
    /// no empty token, and no white space, control character, `*` or `>`.
    EventType
);

impl EventType {
    const RULE: &'static str =
        "dotted tokens, none empty, without white space, control characters, * or >";

    pub fn parse(text: &str) -> Result<Self, NameError> {
        let ok = !text.is_empty()
            && text.split('.').all(|token| {
                !token.is_empty()
                    && !token
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || c == '*' || c == '>')
            });
        NameError::check(ok, "event type", Self::RULE, text).map(Self)
    }

    /// A provider's own type, normalised into one (`orders/create` → `orders.create`; see
    /// [`crate::subject::normalize_type`]): never fails.
    pub fn normalize(raw: &str) -> Self {
        Self(crate::subject::normalize_type(raw))
    }

    /// Whether this is one of hookbus's own notices (`hookbus.…`).
    pub fn is_notice(&self) -> bool {
        self.0.starts_with("hookbus.")
    }
}

name_type!(
    /// An event's id: a UUID when hookbus makes it (v5 of what identifies a delivery, or v7),
    /// or 1 to 128 letters, digits, `-` or `_` when a caller of the egress API gives one.
    EventId
);

impl EventId {
    const RULE: &'static str = "1 to 128 letters, digits, - or _";

    pub fn parse(text: &str) -> Result<Self, NameError> {
        let ok = !text.is_empty()
            && text.len() <= 128
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        NameError::check(ok, "event id", Self::RULE, text).map(Self)
    }

    /// A new UUIDv7: time-ordered, unique.
    pub fn random() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The UUIDv5 of `key` under `namespace`: the same key always gives the same id.
    pub fn derived(namespace: &uuid::Uuid, key: &[u8]) -> Self {
        Self(uuid::Uuid::new_v5(namespace, key).to_string())
    }
}

/// Unix time now, as time since the epoch.
pub fn unix_now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Unix time now, in whole seconds.
pub fn unix_seconds() -> i64 {
    unix_now().as_secs() as i64
}

/// An envelope and the subject it is published on.
#[derive(Debug, Clone)]
pub struct Built {
    pub subject: String,
    pub event: Event,
}

/// Builds an event envelope and its subject, `events.<source>.<type>`; hookbus's own notices
/// ([`EventBuilder::notice`]) go on `events.<type>` (`events.hookbus.delivery.exhausted`).
#[derive(Debug, Clone)]
pub struct EventBuilder {
    subject: String,
    event: Event,
}

impl EventBuilder {
    /// An event of `source` and `event_type` with a new id, received now, from provider
    /// `hookbus`, as `application/json` until said otherwise.
    pub fn new(source: &SourceName, event_type: &EventType, payload: impl Into<Bytes>) -> Self {
        let subject = crate::subject::event_subject(source.as_str(), event_type.as_str());
        Self::with_subject(subject, source.as_str(), event_type, payload.into())
    }

    /// One of hookbus's own notices (`hookbus.delivery.exhausted`), of source `hookbus`.
    ///
    /// # Panics
    /// When `event_type` is not a `hookbus.` type: a notice's type is fixed in the code.
    pub fn notice(event_type: &EventType, payload: impl Into<Bytes>) -> Self {
        assert!(
            event_type.is_notice(),
            "{event_type} is not a hookbus notice"
        );
        let subject = format!("events.{event_type}");
        Self::with_subject(subject, "hookbus", event_type, payload.into())
    }

    fn with_subject(subject: String, source: &str, event_type: &EventType, payload: Bytes) -> Self {
        let now = unix_now();
        Self {
            subject,
            event: Event {
                id: EventId::random().into_string(),
                source: source.to_owned(),
                r#type: event_type.as_str().to_owned(),
                provider: "hookbus".into(),
                received_at: Some(Timestamp {
                    seconds: now.as_secs() as i64,
                    nanos: now.subsec_nanos() as i32,
                }),
                content_type: "application/json".into(),
                payload,
                ..Event::default()
            },
        }
    }

    pub fn id(mut self, id: &EventId) -> Self {
        self.event.id = id.as_str().to_owned();
        self
    }

    /// The verifier or format that produced it (`github`, `hookbus`).
    pub fn provider(mut self, provider: &str) -> Self {
        self.event.provider = provider.to_owned();
        self
    }

    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.event.content_type = content_type.into();
        self
    }

    /// When it reached hookbus, as time since the unix epoch.
    pub fn received_at(mut self, at: std::time::Duration) -> Self {
        self.event.received_at = Some(Timestamp {
            seconds: at.as_secs() as i64,
            nanos: at.subsec_nanos() as i32,
        });
        self
    }

    /// When it happened, in unix seconds, when the provider says.
    pub fn occurred_at(mut self, seconds: Option<i64>) -> Self {
        self.event.occurred_at = seconds.map(|seconds| Timestamp { seconds, nanos: 0 });
        self
    }

    pub fn delivery_id(mut self, delivery_id: impl Into<String>) -> Self {
        self.event.delivery_id = delivery_id.into();
        self
    }

    pub fn tenant(mut self, tenant: Option<String>) -> Self {
        self.event.tenant = tenant;
        self
    }

    pub fn headers(mut self, headers: std::collections::HashMap<String, String>) -> Self {
        self.event.headers = headers;
        self
    }

    pub fn build(self) -> Built {
        Built {
            subject: self.subject,
            event: self.event,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn is_source(text: &str) -> bool {
        let bytes = text.as_bytes();
        (1..=64).contains(&bytes.len())
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
    }

    proptest! {
        #[test]
        fn a_source_name_is_what_the_rule_says(text in "[a-z0-9_A-Z. -]{0,70}") {
            prop_assert_eq!(SourceName::parse(&text).is_ok(), is_source(&text));
            if let Ok(name) = SourceName::parse(&text) {
                prop_assert_eq!(name.as_str(), text.as_str());
            }
        }

        #[test]
        fn a_normalized_type_always_parses(raw in "\\PC{0,40}") {
            let normalized = EventType::normalize(&raw);
            prop_assert!(EventType::parse(normalized.as_str()).is_ok(), "{normalized}");
        }

        #[test]
        fn an_event_type_has_no_empty_token_and_no_wildcard(text in "[a-z.*> ]{0,20}") {
            let expected = !text.is_empty()
                && text.split('.').all(|t| !t.is_empty() && !t.contains(['*', '>', ' ']));
            prop_assert_eq!(EventType::parse(&text).is_ok(), expected);
        }

        #[test]
        fn an_event_id_is_a_subject_token_of_at_most_128(text in "[a-zA-Z0-9_.-]{0,130}") {
            let expected = (1..=128).contains(&text.len()) && !text.contains('.');
            prop_assert_eq!(EventId::parse(&text).is_ok(), expected);
        }
    }

    #[test]
    fn ids_made_here_parse() {
        assert!(EventId::parse(EventId::random().as_str()).is_ok());
        let key = b"github:delivery-1";
        let namespace = uuid::Uuid::NAMESPACE_OID;
        assert_eq!(
            EventId::derived(&namespace, key),
            EventId::derived(&namespace, key)
        );
    }

    #[test]
    fn the_builder_puts_the_subject_with_the_envelope() {
        let source = SourceName::parse("shop").unwrap();
        let event_type = EventType::normalize("orders/create");
        let built = EventBuilder::new(&source, &event_type, &b"{}"[..]).build();
        assert_eq!(built.subject, "events.shop.orders.create");
        assert_eq!(built.event.source, "shop");
        assert_eq!(built.event.r#type, "orders.create");
        let notice = EventType::parse("hookbus.delivery.exhausted").unwrap();
        let built = EventBuilder::notice(&notice, Vec::new()).build();
        assert_eq!(built.subject, "events.hookbus.delivery.exhausted");
        assert_eq!(built.event.source, "hookbus");
    }
}
