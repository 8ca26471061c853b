//! Commerce adapters: which (provider, type) means which typed event, and how each provider's
//! payload becomes a `hookbus.commerce.v1` message.
//!
//! | event type | provider / format | typed event |
//! |---|---|---|
//! | `orders.create` | Shopify order JSON | `OrderCreated` |
//! | `orders.cancelled` | Shopify order JSON | `OrderCancelled` |
//! | `order.created` | canonical hookbus JSON (proto3 JSON) or protobuf | `OrderCreated` |
//! | `order.cancelled` | canonical hookbus JSON (proto3 JSON) or protobuf | `OrderCancelled` |
//!
//! A payload that does not fit gets an [`AdaptError`] naming the field; consumers dead-letter the
//! event with it.

#![forbid(unsafe_code)]

mod money;
mod shopify;
mod sku;

use hookbus_proto::commerce::v1::{OrderCancelled, OrderCreated};
use hookbus_proto::v1::Event;
use prost::Message;

pub use money::{AmountError, exponent, format_minor, parse_decimal};
pub use sku::{BlankSku, Sku};

/// Subjects that carry every event this crate understands: the default filter of the services.
pub const FILTER_SUBJECTS: &[&str] = &[
    "events.*.orders.create",
    "events.*.orders.cancelled",
    "events.*.order.created",
    "events.*.order.cancelled",
];

/// A typed commerce event.
#[derive(Debug, Clone, PartialEq)]
pub enum CommerceEvent {
    OrderCreated(OrderCreated),
    OrderCancelled(OrderCancelled),
}

/// Why a payload could not be read as the event its type says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event_type} payload: {reason}")]
pub struct AdaptError {
    pub event_type: String,
    pub reason: PayloadError,
}

/// What is wrong with a commerce payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("protobuf message {found}, expected {expected}")]
    ProtoName {
        found: String,
        expected: &'static str,
    },
    #[error("not a valid {expected}: {reason}")]
    Proto {
        expected: &'static str,
        reason: String,
    },
    #[error("not {expected}: {reason}")]
    Json {
        expected: &'static str,
        reason: String,
    },
    #[error("{field} {text:?} is not an RFC 3339 time: {reason}")]
    Time {
        field: &'static str,
        text: String,
        reason: String,
    },
    #[error("currency is missing or not an ISO 4217 code")]
    Currency,
    #[error("{field}: {reason}")]
    Amount { field: String, reason: AmountError },
    #[error("line_items[{0}].sku is missing")]
    MissingSku(usize),
    #[error("line_items[{0}].quantity must be positive")]
    Quantity(usize),
    #[error("line_items is empty")]
    NoLineItems,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Created,
    Cancelled,
}

/// The typed event for `event`, `Ok(None)` when its type is not a commerce event.
pub fn adapt(event: &Event) -> Result<Option<CommerceEvent>, AdaptError> {
    let (kind, shopify_format) = match event.r#type.as_str() {
        "orders.create" => (Kind::Created, true),
        "orders.cancelled" => (Kind::Cancelled, true),
        "order.created" => (Kind::Created, false),
        "order.cancelled" => (Kind::Cancelled, false),
        _ => return Ok(None),
    };
    let error = |reason: PayloadError| AdaptError {
        event_type: event.r#type.clone(),
        reason,
    };
    let payload = event.payload.as_ref();
    if let Some(name) = hookbus_proto::proto_name_of(&event.content_type) {
        let expected = match kind {
            Kind::Created => "hookbus.commerce.v1.OrderCreated",
            Kind::Cancelled => "hookbus.commerce.v1.OrderCancelled",
        };
        if name != expected {
            return Err(error(PayloadError::ProtoName {
                found: name.to_owned(),
                expected,
            }));
        }
        return match kind {
            Kind::Created => OrderCreated::decode(payload).map(CommerceEvent::OrderCreated),
            Kind::Cancelled => OrderCancelled::decode(payload).map(CommerceEvent::OrderCancelled),
        }
        .map(Some)
        .map_err(|e| {
            error(PayloadError::Proto {
                expected,
                reason: e.to_string(),
            })
        });
    }
    let adapted = if shopify_format {
        match kind {
            Kind::Created => shopify::order_created(payload).map(CommerceEvent::OrderCreated),
            Kind::Cancelled => shopify::order_cancelled(payload).map(CommerceEvent::OrderCancelled),
        }
    } else {
        match kind {
            Kind::Created => serde_json::from_slice::<OrderCreated>(payload)
                .map(CommerceEvent::OrderCreated)
                .map_err(|e| PayloadError::Json {
                    expected: "canonical hookbus JSON for OrderCreated",
                    reason: e.to_string(),
                }),
            Kind::Cancelled => serde_json::from_slice::<OrderCancelled>(payload)
                .map(CommerceEvent::OrderCancelled)
                .map_err(|e| PayloadError::Json {
                    expected: "canonical hookbus JSON for OrderCancelled",
                    reason: e.to_string(),
                }),
        }
    };
    adapted.map(Some).map_err(error)
}
