//! A 3-node nats-server cluster on 127.0.0.1 with every stream at R3. The ingress, the inventory
//! and the egress run as processes on the compose file's environment, `NATS_URL` listing the three
//! nodes. While orders pour into the ingress, the `EVENTS` stream's leader is killed with SIGKILL.
//! The load generator behaves as a provider does: it sends each order until it is answered 200.
//! Every order then reaches the inventory exactly once in effect (the stock of each SKU falls by
//! exactly its orders), and the egress's subscriber at least once, every repeat of an order
//! carrying the same `webhook-id`.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_nats::jetstream;
use common::{Stack, wait_for};
use hookbus_testkit::NatsCluster;

const ORDERS: u64 = 600;
const SKUS: u64 = 10;
const START_LEVEL: i64 = 1000;
const SENDERS: u64 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_under_load_loses_nothing_acknowledged() {
    let mut cluster = NatsCluster::start(3);
    let logs = tempfile::tempdir().unwrap();
    let compose = common::compose();
    let credentials = common::credentials(&compose);
    let stack = Stack::start(
        &compose,
        &["ingress", "inventory", "egress"],
        &cluster.url(),
        &[("HOOKBUS_NATS__EVENTS__REPLICAS", "3")],
        logs.path(),
    )
    .await;
    let (ingress, inventory, egress) = (
        stack.url("ingress"),
        stack.url("inventory"),
        stack.url("egress"),
    );
    let http = common::http_client();
    let client = common::nats_client(&cluster.url()).await;
    let mut events = jetstream::new(client).get_stream("EVENTS").await.unwrap();
    assert_eq!(events.info().await.unwrap().config.num_replicas, 3);
    common::wait_for_consumers(&cluster.url(), &["inventory", "egress-dispatcher"]).await;
    let inventory_api = (inventory.as_str(), credentials.inventory_token.as_str());
    common::set_stock(&http, inventory_api, SKUS, START_LEVEL).await;
    let seen = common::subscribe_to_orders(&http, (&egress, &credentials.egress_token)).await;

    // The load: SENDERS providers, each sending its orders until each is answered 200.
    let answered = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..SENDERS {
        let (http, ingress, secret) = (
            http.clone(),
            ingress.clone(),
            credentials.shop_secret.clone(),
        );
        let (answered, refused) = (answered.clone(), refused.clone());
        senders.spawn(async move {
            for id in (sender..ORDERS).step_by(SENDERS as usize) {
                let others = common::send_until_stored((&http, &secret), &ingress, id, SKUS).await;
                refused.fetch_add(others, Ordering::Relaxed);
                answered.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    // A quarter in, the leader of EVENTS dies.
    wait_for("a quarter of the orders", async || {
        (answered.load(Ordering::Relaxed) as u64 >= ORDERS / 4).then_some(())
    })
    .await;
    let leader = events
        .info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("EVENTS has a leader");
    let at_kill = answered.load(Ordering::Relaxed);
    cluster.node(&leader).kill();
    while let Some(done) = senders.join_next().await {
        done.unwrap();
    }
    eprintln!(
        "killed the EVENTS leader {leader} after {at_kill} orders; {} answers other than 200 were retried",
        refused.load(Ordering::Relaxed)
    );

    // Exactly once in effect at the inventory, at least once at the subscriber.
    let orders: BTreeSet<u64> = (0..ORDERS).collect();
    common::expect_stock(&http, &inventory, &orders, (SKUS, START_LEVEL)).await;
    let count = common::expect_orders_at_subscriber(&seen, &orders).await;
    eprintln!("{count} deliveries for {ORDERS} orders");
    stack.stop().await;
}
