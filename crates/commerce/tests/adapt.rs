//! Provider payloads to typed events, and the errors for payloads that do not fit.

use hookbus_commerce::{CommerceEvent, FILTER_SUBJECTS, adapt};
use hookbus_proto::commerce::v1::{LineItem, Money, OrderCancelled, OrderCreated};
use hookbus_proto::v1::Event;
use prost::Message;

fn event(event_type: &str, content_type: &str, payload: Vec<u8>) -> Event {
    Event {
        id: "e-1".into(),
        source: "shop".into(),
        r#type: event_type.into(),
        content_type: content_type.into(),
        payload: payload.into(),
        ..Event::default()
    }
}

/// An `orders/create` body of the shape Shopify's Admin API sends (abridged).
const SHOPIFY_ORDER: &str = r#"{
  "id": 820982911946154508,
  "email": "jon@example.com",
  "created_at": "2026-11-28T09:10:11-05:00",
  "currency": "JPY",
  "total_price": "4500",
  "line_items": [
    {"id": 466157049, "sku": "IPOD2008GREEN", "quantity": 1, "price": "1500", "title": "IPod Nano"},
    {"id": 518995019, "sku": "IPOD2008RED", "quantity": 2, "price": "1500.00", "title": "IPod Nano"}
  ],
  "shipping_address": {"city": "Ottawa"}
}"#;

#[test]
fn a_shopify_order_becomes_order_created_in_minor_units() {
    let adapted = adapt(&event(
        "orders.create",
        "application/json",
        SHOPIFY_ORDER.into(),
    ))
    .unwrap();
    let yen = |amount_minor| {
        Some(Money {
            currency: "JPY".into(),
            amount_minor,
        })
    };
    assert_eq!(
        adapted,
        Some(CommerceEvent::OrderCreated(OrderCreated {
            order_id: "820982911946154508".into(),
            line_items: vec![
                LineItem {
                    sku: "IPOD2008GREEN".into(),
                    quantity: 1,
                    unit_price: yen(1500)
                },
                LineItem {
                    sku: "IPOD2008RED".into(),
                    quantity: 2,
                    unit_price: yen(1500)
                },
            ],
            total: yen(4500),
            customer_email: "jon@example.com".into(),
            created_at: Some(hookbus_proto::Timestamp {
                seconds: 1_795_875_011,
                nanos: 0
            }),
        }))
    );
}

#[test]
fn a_shopify_cancellation_becomes_order_cancelled() {
    let body = r#"{"id": 820982911946154508, "cancel_reason": "customer", "cancelled_at": "2026-11-28T15:00:00Z"}"#;
    let adapted = adapt(&event("orders.cancelled", "application/json", body.into())).unwrap();
    assert_eq!(
        adapted,
        Some(CommerceEvent::OrderCancelled(OrderCancelled {
            order_id: "820982911946154508".into(),
            reason: "customer".into(),
            cancelled_at: Some(hookbus_proto::Timestamp {
                seconds: 1_795_878_000,
                nanos: 0
            }),
        }))
    );
}

#[test]
fn canonical_json_and_protobuf_read_the_same() {
    let order = OrderCreated {
        order_id: "A-1".into(),
        line_items: vec![LineItem {
            sku: "S".into(),
            quantity: 3,
            unit_price: None,
        }],
        total: Some(Money {
            currency: "KWD".into(),
            amount_minor: 1234,
        }),
        customer_email: String::new(),
        created_at: None,
    };
    let json = serde_json::to_vec(&order).unwrap();
    let from_json = adapt(&event("order.created", "application/json", json)).unwrap();
    let from_proto = adapt(&event(
        "order.created",
        "application/protobuf; proto=hookbus.commerce.v1.OrderCreated",
        order.encode_to_vec(),
    ))
    .unwrap();
    assert_eq!(from_json, Some(CommerceEvent::OrderCreated(order)));
    assert_eq!(from_json, from_proto);
}

#[test]
fn payloads_that_do_not_fit_are_named() {
    let cases = [
        (
            "orders.create",
            "application/json",
            "not json",
            "not a Shopify order",
        ),
        (
            "orders.create",
            "application/json",
            r#"{"id":1,"currency":"EUR","line_items":[{"quantity":1}]}"#,
            "line_items[0].sku",
        ),
        (
            "orders.create",
            "application/json",
            r#"{"id":1,"currency":"EUR","line_items":[{"sku":"a","quantity":0}]}"#,
            "line_items[0].quantity",
        ),
        (
            "orders.create",
            "application/json",
            r#"{"id":1,"currency":"JPY","line_items":[{"sku":"a","quantity":1,"price":"1.5"}]}"#,
            "line_items[0].price",
        ),
        (
            "orders.create",
            "application/json",
            r#"{"id":1,"line_items":[{"sku":"a","quantity":1}]}"#,
            "currency",
        ),
        (
            "orders.create",
            "application/json",
            r#"{"id":1,"currency":"EUR","line_items":[]}"#,
            "line_items is empty",
        ),
        (
            "orders.create",
            "application/json",
            r#"{"id":1,"currency":"EUR","created_at":"yesterday","line_items":[{"sku":"a","quantity":1}]}"#,
            "created_at",
        ),
        (
            "order.created",
            "application/json",
            r#"{"orderId": 5}"#,
            "canonical hookbus JSON",
        ),
        (
            "order.created",
            "application/protobuf; proto=hookbus.commerce.v1.OrderCancelled",
            "",
            "expected hookbus.commerce.v1.OrderCreated",
        ),
    ];
    for (event_type, content_type, body, needle) in cases {
        let err = adapt(&event(event_type, content_type, body.into())).unwrap_err();
        assert!(err.to_string().contains(needle), "{body}: {err}");
        assert!(err.to_string().starts_with(event_type), "{err}");
    }
}

#[test]
fn other_types_are_not_commerce_events_and_the_filter_covers_every_mapped_type() {
    assert_eq!(
        adapt(&event("push", "application/json", b"{}".to_vec())).unwrap(),
        None
    );
    for t in [
        "orders.create",
        "orders.cancelled",
        "order.created",
        "order.cancelled",
    ] {
        let subject = format!("events.shop.{t}");
        let covered = FILTER_SUBJECTS.iter().any(|f| {
            let f: Vec<_> = f.split('.').collect();
            let s: Vec<_> = subject.split('.').collect();
            f.len() == s.len() && f.iter().zip(&s).all(|(a, b)| *a == "*" || a == b)
        });
        assert!(covered, "{subject}");
    }
}
