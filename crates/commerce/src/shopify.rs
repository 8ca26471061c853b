//! Shopify's order webhooks (`orders/create`, `orders/cancelled`): the order JSON of the Admin API.

use hookbus_proto::Timestamp;
use hookbus_proto::commerce::v1::{LineItem, Money, OrderCancelled, OrderCreated};
use serde::Deserialize;

use crate::PayloadError;
use crate::money::parse_decimal;
use crate::sku::Sku;

/// Shopify sends ids as JSON numbers (and as strings in some API versions).
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Number(u64),
    Text(String),
}

impl Id {
    fn into_string(self) -> String {
        match self {
            Self::Number(n) => n.to_string(),
            Self::Text(s) => s,
        }
    }
}

#[derive(Deserialize)]
struct Order {
    id: Id,
    currency: Option<String>,
    total_price: Option<String>,
    email: Option<String>,
    created_at: Option<String>,
    #[serde(default)]
    line_items: Vec<ShopifyLineItem>,
    cancel_reason: Option<String>,
    cancelled_at: Option<String>,
}

#[derive(Deserialize)]
struct ShopifyLineItem {
    sku: Option<String>,
    quantity: i64,
    price: Option<String>,
}

fn order(payload: &[u8]) -> Result<Order, PayloadError> {
    serde_json::from_slice(payload).map_err(|e| PayloadError::Json {
        expected: "a Shopify order",
        reason: e.to_string(),
    })
}

fn timestamp(field: &'static str, text: Option<&str>) -> Result<Option<Timestamp>, PayloadError> {
    let Some(text) = text else { return Ok(None) };
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| PayloadError::Time {
            field,
            text: text.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(Some(Timestamp {
        seconds: parsed.unix_timestamp(),
        nanos: parsed.nanosecond() as i32,
    }))
}

pub(crate) fn order_created(payload: &[u8]) -> Result<OrderCreated, PayloadError> {
    let order = order(payload)?;
    let currency = order
        .currency
        .filter(|c| c.len() == 3)
        .ok_or(PayloadError::Currency)?
        .to_ascii_uppercase();
    let money = |field: String, amount: &str| {
        parse_decimal(amount, &currency)
            .map(|amount_minor| Money {
                currency: currency.clone(),
                amount_minor,
            })
            .map_err(|reason| PayloadError::Amount { field, reason })
    };
    let mut line_items = Vec::with_capacity(order.line_items.len());
    for (i, item) in order.line_items.into_iter().enumerate() {
        let sku = item
            .sku
            .and_then(|s| Sku::parse(&s).ok())
            .ok_or(PayloadError::MissingSku(i))?
            .into_string();
        if item.quantity <= 0 {
            return Err(PayloadError::Quantity(i));
        }
        let unit_price = item
            .price
            .map(|p| money(format!("line_items[{i}].price"), &p))
            .transpose()?;
        line_items.push(LineItem {
            sku,
            quantity: item.quantity,
            unit_price,
        });
    }
    if line_items.is_empty() {
        return Err(PayloadError::NoLineItems);
    }
    Ok(OrderCreated {
        order_id: order.id.into_string(),
        line_items,
        total: order
            .total_price
            .map(|p| money("total_price".to_owned(), &p))
            .transpose()?,
        customer_email: order.email.unwrap_or_default(),
        created_at: timestamp("created_at", order.created_at.as_deref())?,
    })
}

pub(crate) fn order_cancelled(payload: &[u8]) -> Result<OrderCancelled, PayloadError> {
    let order = order(payload)?;
    Ok(OrderCancelled {
        order_id: order.id.into_string(),
        reason: order.cancel_reason.unwrap_or_default(),
        cancelled_at: timestamp("cancelled_at", order.cancelled_at.as_deref())?,
    })
}
