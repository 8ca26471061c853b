//! A complete consumer: prints every Shopify-style order created, from the beginning of the stream.
//! Run it with `NATS_URL=… cargo run -p hookbus-examples --bin print-orders`.

use hookbus_bus::{ConsumerSpec, Outcome, StartPosition};
use hookbus_service::run_consumer_from_env;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let spec = ConsumerSpec::new("print-orders", &["events.*.orders.create"]);
    run_consumer_from_env(spec.start(StartPosition::All), |delivery| async move {
        let event = delivery.event;
        println!(
            "{} {}: {}",
            event.source,
            event.id,
            String::from_utf8_lossy(&event.payload)
        );
        Outcome::Ack // or Outcome::Retry { after } / Outcome::Reject { reason }
    })
    .await?;
    Ok(())
}
