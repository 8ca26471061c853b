//! The consumer's handler: one event, one transaction (ledger claim, effect, outbox rows).

use std::sync::Arc;
use std::time::Duration;

use hookbus_bus::{Delivery, Outcome};
use hookbus_commerce::CommerceEvent;
use hookbus_proto::inventory::v1::{StockAdjusted, stock_adjusted::Mode};
use hookbus_store::StoreError;
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use tokio::sync::Notify;

use crate::store::{Cause, Inventory};

/// The type of a restock or correction, carrying a `StockAdjusted`.
pub const STOCK_ADJUSTED: &str = "stock.adjusted";

enum Effect {
    Commerce(CommerceEvent),
    Adjust(StockAdjusted),
}

fn effect_of(delivery: &Delivery) -> Result<Option<Effect>, String> {
    let event = &delivery.event;
    if event.r#type == STOCK_ADJUSTED {
        let adjusted = match hookbus_proto::proto_name_of(&event.content_type) {
            Some("hookbus.inventory.v1.StockAdjusted") => {
                StockAdjusted::decode(event.payload.as_ref()).map_err(|e| e.to_string())
            }
            Some(other) => Err(format!("protobuf message {other}, expected StockAdjusted")),
            None => serde_json::from_slice(&event.payload).map_err(|e| e.to_string()),
        }
        .map_err(|e| format!("stock.adjusted payload: {e}"))?;
        if adjusted.sku.trim().is_empty() {
            return Err("stock.adjusted payload: sku is empty".into());
        }
        return Ok(Some(Effect::Adjust(adjusted)));
    }
    hookbus_commerce::adapt(event)
        .map(|typed| typed.map(Effect::Commerce))
        .map_err(|e| e.to_string())
}

/// Counters of the consumer's work, exported on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Events whose effect was committed by this process.
    pub applied: Counter<u64>,
    /// Deliveries of events the ledger shows applied before (by this replica or another).
    pub repeated: Counter<u64>,
}

/// Handles one delivery for consumer `consumer`.
pub async fn handle(
    inventory: Arc<Inventory>,
    consumer: Arc<str>,
    wake_relay: Arc<Notify>,
    metrics: Metrics,
    delivery: Delivery,
) -> Outcome {
    let effect = match effect_of(&delivery) {
        Ok(Some(effect)) => effect,
        Ok(None) => return Outcome::Ack, // not an event the inventory acts on
        Err(reason) => return Outcome::Reject { reason },
    };
    let cause = Cause {
        event_id: delivery.event.id.clone(),
        traceparent: delivery
            .headers
            .get("traceparent")
            .map(|v| v.as_str().to_owned()),
    };
    match apply(&inventory, &consumer, &delivery, &effect, &cause).await {
        Ok(applied) => {
            // The effect is committed; a crash here must not apply it twice on redelivery.
            hookbus_bus::failpoint("inventory-after-commit");
            if applied {
                metrics.applied.inc();
                wake_relay.notify_one();
            } else {
                metrics.repeated.inc();
            }
            Outcome::Ack
        }
        Err(e) => {
            tracing::warn!(error = %e, event = %delivery.event.id, "inventory update failed, will retry");
            Outcome::Retry {
                after: Duration::from_millis(500 * delivery.attempt.min(10)),
            }
        }
    }
}

/// Claims the event and applies its effect in one transaction; `false` when it was applied before.
async fn apply(
    inventory: &Inventory,
    consumer: &str,
    delivery: &Delivery,
    effect: &Effect,
    cause: &Cause,
) -> Result<bool, StoreError> {
    let mut tx = inventory.store().begin().await?;
    let first = hookbus_store::claim(
        &mut tx,
        consumer,
        &delivery.event.id,
        delivery.stream_sequence,
    )
    .await?;
    if !first {
        tx.rollback().await?;
        return Ok(false);
    }
    match effect {
        Effect::Commerce(CommerceEvent::OrderCreated(order)) => {
            inventory.order_created(&mut tx, order, cause).await?;
        }
        Effect::Commerce(CommerceEvent::OrderCancelled(cancel)) => {
            inventory.order_cancelled(&mut tx, cancel, cause).await?;
        }
        Effect::Adjust(adjusted) => {
            let quantity = adjusted.quantity;
            let set = adjusted.mode() == Mode::Set;
            inventory
                .adjust(
                    &mut tx,
                    &adjusted.sku,
                    |level| if set { quantity } else { level + quantity },
                    None,
                    cause,
                )
                .await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}
