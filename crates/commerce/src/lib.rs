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

use hookbus_proto::commerce::v1::{OrderCancelled, OrderCreated};
use hookbus_proto::v1::Event;
use prost::Message;

pub use money::{exponent, format_minor, parse_decimal};

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
#[error("{event_type} payload: {message}")]
pub struct AdaptError {
    pub event_type: String,
    pub message: String,
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
    let error = |message: String| AdaptError {
        event_type: event.r#type.clone(),
        message,
    };
    let payload = event.payload.as_ref();
    if let Some(name) = hookbus_proto::proto_name_of(&event.content_type) {
        let expected = match kind {
            Kind::Created => "hookbus.commerce.v1.OrderCreated",
            Kind::Cancelled => "hookbus.commerce.v1.OrderCancelled",
        };
        if name != expected {
            return Err(error(format!(
                "protobuf message {name}, expected {expected}"
            )));
        }
        return match kind {
            Kind::Created => OrderCreated::decode(payload).map(CommerceEvent::OrderCreated),
            Kind::Cancelled => OrderCancelled::decode(payload).map(CommerceEvent::OrderCancelled),
        }
        .map(Some)
        .map_err(|e| error(format!("not a valid {expected}: {e}")));
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
                .map_err(|e| format!("not canonical hookbus JSON for OrderCreated: {e}")),
            Kind::Cancelled => serde_json::from_slice::<OrderCancelled>(payload)
                .map(CommerceEvent::OrderCancelled)
                .map_err(|e| format!("not canonical hookbus JSON for OrderCancelled: {e}")),
        }
    };
    adapted.map(Some).map_err(error)
}
