//! The consumer's handler: a batch of events in one transaction (ledger claims, effects, outbox
//! rows), split when it fails so that only the event that cannot be applied fails.

use std::sync::Arc;
use std::time::Duration;

use hookbus_bus::{Delivery, Outcome};
use hookbus_commerce::Sku;
use hookbus_proto::inventory::v1::{StockAdjusted, stock_adjusted::Mode};
use hookbus_service::BatchHandler;
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use tokio::sync::Notify;

use crate::batch::{ApplyError, Effect, Item, Op};
use crate::store::{Cause, Inventory};

/// The type of a restock or correction, carrying a `StockAdjusted`.
pub const STOCK_ADJUSTED: &str = "stock.adjusted";

/// Why an event cannot be applied: its payload is not what its type says.
#[derive(Debug, thiserror::Error)]
enum EffectError {
    #[error("stock.adjusted payload: {0}")]
    StockAdjusted(String),
    #[error("stock.adjusted payload: sku is empty")]
    EmptySku,
    #[error(transparent)]
    Commerce(#[from] hookbus_commerce::AdaptError),
}

fn effect_of(delivery: &Delivery) -> Result<Option<Effect>, EffectError> {
    let event = &delivery.event;
    if event.r#type == STOCK_ADJUSTED {
        let adjusted = match hookbus_proto::proto_name_of(&event.content_type) {
            Some("hookbus.inventory.v1.StockAdjusted") => {
                StockAdjusted::decode(event.payload.as_ref()).map_err(|e| e.to_string())
            }
            Some(other) => Err(format!("protobuf message {other}, expected StockAdjusted")),
            None => serde_json::from_slice(&event.payload).map_err(|e| e.to_string()),
        }
        .map_err(EffectError::StockAdjusted)?;
        let sku = Sku::parse(&adjusted.sku).map_err(|_| EffectError::EmptySku)?;
        let op = match adjusted.mode() {
            Mode::Set => Op::Set(adjusted.quantity),
            _ => Op::Add(adjusted.quantity),
        };
        return Ok(Some(Effect::Adjust {
            sku: sku.into_string(),
            op,
        }));
    }
    Ok(hookbus_commerce::adapt(event)?.map(Effect::Commerce))
}

/// Counters of the consumer's work, exported on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Events whose effect was committed by this process.
    pub applied: Counter<u64>,
    /// Deliveries of events the ledger shows applied before (by this replica or another).
    pub repeated: Counter<u64>,
}

/// What the consumer's handler needs.
#[derive(Clone)]
pub struct Handler {
    pub inventory: Arc<Inventory>,
    /// The durable consumer's name, the ledger's key.
    pub consumer: Arc<str>,
    pub wake_relay: Arc<Notify>,
    pub metrics: Metrics,
    /// The consumer's deliveries: on the last one a failing event is dead-lettered with its
    /// cause rather than retried.
    pub max_deliveries: u64,
}

impl BatchHandler for Handler {
    /// Handles a batch: one outcome per delivery, in order.
    async fn handle(&self, deliveries: Vec<Delivery>) -> Vec<Outcome> {
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(deliveries.len());
        let mut items = Vec::with_capacity(deliveries.len());
        let mut positions = Vec::with_capacity(deliveries.len());
        for (position, delivery) in deliveries.iter().enumerate() {
            outcomes.push(Outcome::Ack); // not an event the inventory acts on, unless below
            match effect_of(delivery) {
                Ok(Some(effect)) => {
                    positions.push(position);
                    items.push(Item {
                        stream_sequence: delivery.stream_sequence,
                        effect,
                        cause: Cause {
                            event_id: delivery.event.id.clone(),
                            traceparent: delivery
                                .headers
                                .get("traceparent")
                                .map(|v| v.as_str().to_owned()),
                        },
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    outcomes[position] = Outcome::Reject {
                        reason: e.to_string(),
                    }
                }
            }
        }
        if items.is_empty() {
            return outcomes;
        }
        let results = hookbus_store::apply_split(self.inventory.store(), &items, |tx, items| {
            let (inventory, consumer) = (self.inventory.clone(), self.consumer.clone());
            Box::pin(async move { inventory.apply_batch(tx, &consumer, items).await })
        })
        .await;
        // The effects are committed; a crash here, before the acks, must not apply them twice
        // on redelivery.
        if results.iter().any(Result::is_ok) {
            hookbus_service::failpoint("inventory-after-commit");
        }
        let mut applied_any = false;
        for (position, result) in positions.into_iter().zip(results) {
            let delivery = &deliveries[position];
            outcomes[position] = match result {
                Ok(true) => {
                    self.metrics.applied.inc();
                    applied_any = true;
                    Outcome::Ack
                }
                Ok(false) => {
                    self.metrics.repeated.inc();
                    Outcome::Ack
                }
                Err(ApplyError::Invalid(reason)) => Outcome::Reject { reason },
                Err(e) => {
                    tracing::warn!(error = %e, event = %delivery.event.id, "inventory update failed");
                    Outcome::retry_unless_last(
                        delivery.attempt,
                        self.max_deliveries,
                        Duration::from_millis(500 * delivery.attempt.min(10)),
                        e,
                    )
                }
            };
        }
        if applied_any {
            self.wake_relay.notify_one();
        }
        outcomes
    }
}
