//! Name → JSON: turns a payload whose content type is `application/protobuf; proto=<full name>` into
//! its proto3 JSON form, for subscribers that want JSON.

use std::collections::HashMap;

use prost::Message;
use serde::Serialize;

use crate::{commerce, egress, inventory, v1};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("content type {0:?} is not application/protobuf with a proto=<message name> parameter")]
    NotProtobuf(String),
    #[error("unknown protobuf message type {0:?}")]
    UnknownType(String),
    #[error("payload is not a valid {name}: {source}")]
    Decode {
        name: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("cannot encode {name} as JSON: {source}")]
    Json {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

type ToJson = fn(&[u8]) -> Result<serde_json::Value, RegistryError>;

/// A typed message that the registry knows: its protobuf full name.
pub trait Named: Message + Default + Serialize {
    const NAME: &'static str;
}

macro_rules! named {
    ($($ty:ty => $name:literal),* $(,)?) => {
        $(impl Named for $ty { const NAME: &'static str = $name; })*
        fn all_entries() -> Vec<(&'static str, ToJson)> {
            vec![$(($name, to_json::<$ty> as ToJson)),*]
        }
    };
}

named! {
    v1::Event => "hookbus.v1.Event",
    commerce::v1::Money => "hookbus.commerce.v1.Money",
    commerce::v1::LineItem => "hookbus.commerce.v1.LineItem",
    commerce::v1::OrderCreated => "hookbus.commerce.v1.OrderCreated",
    commerce::v1::OrderCancelled => "hookbus.commerce.v1.OrderCancelled",
    inventory::v1::StockAdjusted => "hookbus.inventory.v1.StockAdjusted",
    inventory::v1::StockLevelChanged => "hookbus.inventory.v1.StockLevelChanged",
    inventory::v1::LowStock => "hookbus.inventory.v1.LowStock",
    inventory::v1::OutOfStock => "hookbus.inventory.v1.OutOfStock",
    egress::v1::Endpoint => "hookbus.egress.v1.Endpoint",
    egress::v1::EndpointSecret => "hookbus.egress.v1.EndpointSecret",
    egress::v1::DeliveryTask => "hookbus.egress.v1.DeliveryTask",
    egress::v1::DeliveryAttempt => "hookbus.egress.v1.DeliveryAttempt",
    egress::v1::DeliveryExhausted => "hookbus.egress.v1.DeliveryExhausted",
    egress::v1::EndpointDisabled => "hookbus.egress.v1.EndpointDisabled",
}

fn to_json<M: Named>(bytes: &[u8]) -> Result<serde_json::Value, RegistryError> {
    let message = M::decode(bytes).map_err(|source| RegistryError::Decode {
        name: M::NAME.to_owned(),
        source,
    })?;
    serde_json::to_value(&message).map_err(|source| RegistryError::Json {
        name: M::NAME.to_owned(),
        source,
    })
}

/// The content type services publish a typed message with.
pub fn content_type_for<M: Named>() -> String {
    format!("application/protobuf; proto={}", M::NAME)
}

/// The message name in a content type such as `application/protobuf; proto=hookbus.commerce.v1.OrderCreated`.
pub fn proto_name_of(content_type: &str) -> Option<&str> {
    let mut parts = content_type.split(';');
    let media = parts.next()?.trim();
    if !media.eq_ignore_ascii_case("application/protobuf")
        && !media.eq_ignore_ascii_case("application/x-protobuf")
    {
        return None;
    }
    parts.find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("proto")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// Every typed message of hookbus, by full name.
#[derive(Debug)]
pub struct Registry {
    entries: HashMap<&'static str, ToJson>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            entries: all_entries().into_iter().collect(),
        }
    }
}

impl Registry {
    /// The full names the registry knows.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.keys().copied()
    }

    /// Decodes `payload` by the message named in `content_type` and returns its proto3 JSON form.
    pub fn to_json(
        &self,
        content_type: &str,
        payload: &[u8],
    ) -> Result<serde_json::Value, RegistryError> {
        let name = proto_name_of(content_type)
            .ok_or_else(|| RegistryError::NotProtobuf(content_type.to_owned()))?;
        let convert = self
            .entries
            .get(name)
            .ok_or_else(|| RegistryError::UnknownType(name.to_owned()))?;
        convert(payload)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::commerce::v1::{LineItem, Money, OrderCreated};

    #[test]
    fn registry_knows_every_message_in_the_descriptor_set() {
        let fds = prost_types_free_names();
        let registry = Registry::default();
        let mut known: Vec<_> = registry.names().map(str::to_owned).collect();
        known.sort();
        assert_eq!(
            known, fds,
            "add new messages to the registry in registry.rs"
        );
    }

    /// Message names from the encoded descriptor set, read with prost's own wire decoding of the
    /// few fields needed (FileDescriptorSet.file = 1, FileDescriptorProto.package = 2 / message_type = 4,
    /// DescriptorProto.name = 1).
    fn prost_types_free_names() -> Vec<String> {
        #[derive(Clone, PartialEq, Message)]
        struct Fds {
            #[prost(message, repeated, tag = "1")]
            file: Vec<Fdp>,
        }
        #[derive(Clone, PartialEq, Message)]
        struct Fdp {
            #[prost(string, optional, tag = "2")]
            package: Option<String>,
            #[prost(message, repeated, tag = "4")]
            message_type: Vec<Dp>,
        }
        #[derive(Clone, PartialEq, Message)]
        struct Dp {
            #[prost(string, optional, tag = "1")]
            name: Option<String>,
        }
        let fds = Fds::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let mut names: Vec<String> = fds
            .file
            .iter()
            .filter(|f| f.package().starts_with("hookbus."))
            .flat_map(|f| {
                f.message_type
                    .iter()
                    .map(move |m| format!("{}.{}", f.package(), m.name()))
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn typed_payload_turns_into_proto3_json() {
        let order = OrderCreated {
            order_id: "1001".into(),
            line_items: vec![LineItem {
                sku: "SKU-1".into(),
                quantity: 2,
                unit_price: Some(Money {
                    currency: "JPY".into(),
                    amount_minor: 1500,
                }),
            }],
            total: Some(Money {
                currency: "JPY".into(),
                amount_minor: 3000,
            }),
            customer_email: "a@example.com".into(),
            created_at: None,
        };
        let ct = content_type_for::<OrderCreated>();
        assert_eq!(
            ct,
            "application/protobuf; proto=hookbus.commerce.v1.OrderCreated"
        );
        let json = Registry::default()
            .to_json(&ct, &order.encode_to_vec())
            .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "orderId": "1001",
                "lineItems": [{"sku": "SKU-1", "quantity": "2",
                               "unitPrice": {"currency": "JPY", "amountMinor": "1500"}}],
                "total": {"currency": "JPY", "amountMinor": "3000"},
                "customerEmail": "a@example.com"
            })
        );
        // and back: the JSON form is the canonical hookbus JSON format
        let back: OrderCreated = serde_json::from_value(json).unwrap();
        assert_eq!(back, order);
    }

    #[test]
    fn unknown_and_malformed_payloads_are_named() {
        let registry = Registry::default();
        let err = registry
            .to_json("application/protobuf; proto=hookbus.nope.V1", b"")
            .unwrap_err();
        assert!(err.to_string().contains("hookbus.nope.V1"), "{err}");
        let err = registry.to_json("application/json", b"{}").unwrap_err();
        assert!(matches!(err, RegistryError::NotProtobuf(_)));
        let err = registry
            .to_json(
                "application/protobuf; proto=hookbus.commerce.v1.OrderCreated",
                &[0xff, 0xff, 0xff],
            )
            .unwrap_err();
        assert!(err.to_string().contains("OrderCreated"), "{err}");
    }
}
