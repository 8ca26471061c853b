//! Restarts under load. The five services run as processes on the compose file's environment
//! (with a real SMTP listener and the machine's PostgreSQL) while Shopify orders flow into the
//! ingress from senders that, like a provider, send each order until it is answered 200. Each
//! service in turn is stopped with SIGTERM and started again, then killed with SIGKILL and started
//! again. Afterwards nothing acknowledged is lost and no effect is doubled: the stock of each SKU
//! fell by exactly its orders, analytics counted each order once with its revenue, the
//! notifications ledger holds one confirmation per order and every customer got theirs, and the
//! subscriber got every order, each always under one `webhook-id`.
//!
//! A SIGKILL between the SMTP server's acceptance of an email and the ledger's commit sends that
//! email again on redelivery (at least once, as `docs/notifications.md` says), under the same
//! `Message-ID`, so mail systems can recognise it. The test allows at most the notifications
//! consumer's concurrency of such repeats, and checks that each carries its original's id.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{SERVICES, Stack, get_json, wait_for};
use hookbus_testkit::{NatsServer, SmtpServer};
use serde_json::Value;

const SKUS: u64 = 10;
const START_LEVEL: i64 = 100_000;
const SENDERS: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_restarted_by_sigterm_and_sigkill_under_load_loses_and_doubles_nothing() {
    let nats = NatsServer::start();
    let smtp = SmtpServer::start();
    let logs = tempfile::tempdir().unwrap();
    let compose = common::compose();
    let credentials = common::credentials(&compose);
    let smtp_url = smtp.url();
    let mut stack = Stack::start(
        &compose,
        SERVICES,
        &nats.url(),
        &[("HOOKBUS_NOTIFICATIONS__SMTP__URL", &smtp_url)],
        logs.path(),
    )
    .await;
    let url = |name: &str| stack.url(name);
    let (ingress, inventory, notifications, analytics, egress) = (
        url("ingress"),
        url("inventory"),
        url("notifications"),
        url("analytics"),
        url("egress"),
    );
    let http = common::http_client();
    common::wait_for_consumers(&nats.url(), common::CONSUMERS).await;
    let inventory_api = (inventory.as_str(), credentials.inventory_token.as_str());
    common::set_stock(&http, inventory_api, SKUS, START_LEVEL).await;
    let seen = common::subscribe_to_orders(&http, (&egress, &credentials.egress_token)).await;

    // The load: each sender sends order after order, each until it is answered 200, until told
    // to stop; `sent` counts the orders answered 200.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..SENDERS {
        let (http, ingress, secret) = (
            http.clone(),
            ingress.clone(),
            credentials.shop_secret.clone(),
        );
        let (stop, sent) = (stop.clone(), sent.clone());
        senders.spawn(async move {
            let mut ids = Vec::new();
            let mut id = sender;
            while !stop.load(Ordering::Relaxed) {
                common::send_until_stored((&http, &secret), &ingress, id, SKUS).await;
                sent.fetch_add(1, Ordering::Relaxed);
                ids.push(id);
                id += SENDERS;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ids
        });
    }

    // Each service in turn, by SIGTERM then by SIGKILL, with orders flowing throughout.
    let mut restarts = Vec::new();
    for name in SERVICES {
        for signal in ["TERM", "KILL"] {
            let before = sent.load(Ordering::Relaxed);
            wait_for("orders flowing", async || {
                (sent.load(Ordering::Relaxed) >= before + 10).then_some(())
            })
            .await;
            let status = stack.restart(name, signal).await;
            if signal == "TERM" {
                assert!(status.success(), "{name} exited with {status:?} on SIGTERM");
            }
            restarts.push(format!("{name}/SIG{signal} at {before}"));
        }
    }
    let before = sent.load(Ordering::Relaxed);
    wait_for("orders after the last restart", async || {
        (sent.load(Ordering::Relaxed) >= before + 10).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut orders = BTreeSet::new();
    while let Some(ids) = senders.join_next().await {
        orders.extend(ids.unwrap());
    }
    let total = orders.len() as u64;
    eprintln!("{total} orders; restarts: {}", restarts.join(", "));

    // The inventory: exactly once in effect.
    common::expect_stock(&http, &inventory, &orders, (SKUS, START_LEVEL)).await;
    // Analytics: each order counted once, with its revenue.
    hookbus_testkit::wait_for(
        Duration::from_secs(90),
        "analytics to count every order",
        async || {
            let stats =
                get_json(&http, &format!("{analytics}/v1/stats/events?bucket=hour")).await?;
            let count: u64 = stats["items"]
                .as_array()?
                .iter()
                .filter(|i| i["source"] == "shop" && i["type"] == "orders.create")
                .filter_map(|i| i["count"].as_u64())
                .sum();
            assert!(
                count <= total,
                "analytics counted {count} of {total} orders"
            );
            (count == total).then_some(())
        },
    )
    .await;
    let revenue = get_json(&http, &format!("{analytics}/v1/stats/revenue"))
        .await
        .unwrap();
    let eur: i64 = revenue["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["currency"] == "EUR")
        .filter_map(|i| i["amount_minor"].as_i64())
        .sum();
    assert_eq!(eur, 100 * total as i64, "{revenue}");
    // Notifications: one ledger row per order; every customer mailed.
    hookbus_testkit::wait_for(
        Duration::from_secs(90),
        "a confirmation per order in the ledger",
        async || {
            let sent = get_json(&http, &format!("{notifications}/v1/sent?limit=1000")).await?;
            let confirmations: Vec<&Value> = sent["items"]
                .as_array()?
                .iter()
                .filter(|i| i["rule"] == "order_confirmation")
                .collect();
            let events: BTreeSet<&str> = confirmations
                .iter()
                .filter_map(|i| i["event_id"].as_str())
                .collect();
            assert_eq!(
                events.len(),
                confirmations.len(),
                "a confirmation recorded twice"
            );
            (confirmations.len() as u64 == total).then_some(())
        },
    )
    .await;
    let mails = smtp
        .wait_for(total as usize, Duration::from_secs(60))
        .unwrap();
    let mut per_customer: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for mail in &mails {
        let message_id = mail.header("Message-ID").expect("a Message-ID");
        per_customer
            .entry(mail.to.join(","))
            .or_default()
            .push(message_id);
    }
    assert_eq!(per_customer.len() as u64, total, "every customer mailed");
    for (customer, ids) in &per_customer {
        let distinct: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "{customer}: a repeat under another Message-ID: {ids:?}"
        );
    }
    let repeated: usize = per_customer.values().map(|ids| ids.len() - 1).sum();
    assert!(repeated <= 4, "{repeated} emails sent twice");
    // The subscriber: every order, each under one webhook-id.
    let count = common::expect_orders_at_subscriber(&seen, &orders).await;
    eprintln!("{count} deliveries for {total} orders; {repeated} emails repeated after a SIGKILL");
    stack.stop().await;
}
