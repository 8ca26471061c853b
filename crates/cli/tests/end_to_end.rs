//! The whole system as six processes, configured only by the environment that
//! `deploy/docker-compose.yml` gives each container: nats-server and the per-service binaries
//! `hookbus-ingress`, `hookbus-inventory`, `hookbus-notifications`, `hookbus-analytics` and
//! `hookbus-egress`. The test replaces only what points at the compose network (NATS_URL, each
//! DATABASE_URL, which becomes a fresh database on the machine's PostgreSQL, the listen addresses
//! and the SMTP server, a real listener here) and opens private networks to the egress, whose
//! subscribers run on 127.0.0.1. Every compose healthcheck route answers 200. Shopify-signed
//! `orders/create` webhooks go in through the ingress with the compose file's secret; the stock
//! drops, the confirmation emails arrive, analytics counts the orders, and a Shopify
//! `orders/cancelled` webhook restores the stock. The egress delivers the orders and the
//! inventory's stock events, signed, to endpoints subscribed through its API.

mod common;

use std::time::Duration;

use common::{Stack, get_json, receiver, wait_for};
use hookbus_testkit::{NatsServer, SmtpServer};
use serde_json::{Value, json};

/// A Shopify webhook through the ingress, which must store it (200, not a duplicate).
async fn shopify(
    (http, secret): (&reqwest::Client, &str),
    ingress: &str,
    topic: &str,
    id: &str,
    body: &Value,
) {
    let (status, answer) = common::post_shopify((http, secret), ingress, topic, id, body)
        .await
        .unwrap();
    assert_eq!(status, 200, "{topic} {id}: {answer}");
    assert_eq!(answer["duplicate"], false, "{answer}");
}

fn order(id: u64, email: &str, quantity: i64, price: &str, total: &str) -> Value {
    common::order(id, email, ("SKU-A", quantity), price, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_orders_flow_through_six_processes_configured_as_compose_configures_them() {
    let nats = NatsServer::start();
    let smtp = SmtpServer::start();
    let logs = tempfile::tempdir().unwrap();
    let compose = common::compose();
    let credentials = common::credentials(&compose);
    let shop_secret = credentials.shop_secret.as_str();

    let stack = Stack::start(
        &compose,
        common::SERVICES,
        &nats.url(),
        &[("HOOKBUS_NOTIFICATIONS__SMTP__URL", &smtp.url())],
        logs.path(),
    )
    .await;
    let (ingress, inventory, notifications, analytics, egress) = (
        stack.url("ingress"),
        stack.url("inventory"),
        stack.url("notifications"),
        stack.url("analytics"),
        stack.url("egress"),
    );
    let http = common::http_client();
    // Inventory and notifications start at `new`: their consumers must exist before the orders.
    common::wait_for_consumers(&nats.url(), common::CONSUMERS).await;

    // Two subscribers: Shopify orders from the ingress, and the inventory's stock events.
    let (orders_url, orders_seen) = receiver().await;
    let (stock_url, stock_seen) = receiver().await;
    let mut endpoint_secrets = Vec::new();
    for body in [
        json!({"url": orders_url, "event_types": ["orders.*"], "sources": ["shop"]}),
        json!({"url": stock_url, "event_types": ["stock.changed"]}),
    ] {
        let created: Value = hookbus_testkit::json_of(
            http.post(format!("{egress}/v1/endpoints"))
                .bearer_auth(&credentials.egress_token)
                .json(&body),
        )
        .await;
        endpoint_secrets.push(created["secret"].as_str().expect("a secret").to_owned());
    }

    let put = http
        .put(format!("{inventory}/v1/stock/SKU-A"))
        .bearer_auth(&credentials.inventory_token)
        .json(&json!({"level": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    shopify(
        (&http, shop_secret),
        &ingress,
        "orders/create",
        "wh-1001",
        &order(1001, "ada@example.com", 2, "12.50", "25.00"),
    )
    .await;
    shopify(
        (&http, shop_secret),
        &ingress,
        "orders/create",
        "wh-1002",
        &order(1002, "bob@example.com", 4, "5.00", "20.00"),
    )
    .await;

    // The stock drops by both orders: 10 - 2 - 4.
    let level = |http: reqwest::Client| {
        let url = format!("{inventory}/v1/stock/SKU-A");
        async move { get_json(&http, &url).await?["level"].as_i64() }
    };
    wait_for("stock 4", async || {
        (level(http.clone()).await == Some(4)).then_some(())
    })
    .await;

    // Both confirmation emails arrive, rendered.
    let mut mails = smtp.wait_for(2, Duration::from_secs(30)).unwrap();
    mails.sort_by(|a, b| a.to.cmp(&b.to));
    assert_eq!(mails.len(), 2, "{mails:?}");
    assert_eq!(mails[0].to, ["ada@example.com"]);
    assert_eq!(
        mails[0].header("Subject").as_deref(),
        Some("Your order 1001")
    );
    assert_eq!(
        mails[0].body().trim_end(),
        "Thank you for your order of 25.00 EUR."
    );
    assert_eq!(mails[1].to, ["bob@example.com"]);
    assert_eq!(
        mails[1].header("Subject").as_deref(),
        Some("Your order 1002")
    );

    // Analytics counts both orders once, and their revenue.
    wait_for("analytics counts", async || {
        let stats = get_json(&http, &format!("{analytics}/v1/stats/events?bucket=hour")).await?;
        let count: i64 = stats["items"]
            .as_array()?
            .iter()
            .filter(|i| i["source"] == "shop" && i["type"] == "orders.create")
            .filter_map(|i| i["count"].as_i64())
            .sum();
        (count == 2).then_some(())
    })
    .await;
    let revenue = get_json(&http, &format!("{analytics}/v1/stats/revenue"))
        .await
        .unwrap();
    let eur: Vec<&Value> = revenue["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["currency"] == "EUR")
        .collect();
    let total: i64 = eur.iter().filter_map(|i| i["amount_minor"].as_i64()).sum();
    assert_eq!(total, 4500, "{revenue}");

    // The stock crossed below 5: the inventory's LowStock reached notifications' ops rule.
    wait_for("the low-stock alert in the ledger", async || {
        let sent = get_json(&http, &format!("{notifications}/v1/sent")).await?;
        sent["items"]
            .as_array()?
            .iter()
            .any(|i| i["rule"] == "ops_alert")
            .then_some(())
    })
    .await;

    // A cancelled order restores its stock.
    shopify(
        (&http, shop_secret),
        &ingress,
        "orders/cancelled",
        "wh-1002-cancel",
        &json!({"id": 1002, "cancel_reason": "customer", "cancelled_at": "2026-11-28T11:00:00Z"}),
    )
    .await;
    wait_for("stock 8", async || {
        (level(http.clone()).await == Some(8)).then_some(())
    })
    .await;

    // The egress delivered the three Shopify webhooks as they came in, and the stock changes.
    let orders = wait_for("three orders at the subscriber", async || {
        let seen = orders_seen.lock().unwrap().clone();
        (seen.len() >= 3).then_some(seen)
    })
    .await;
    let mut types: Vec<&str> = orders
        .iter()
        .map(|(h, _)| h["hookbus-event-type"].to_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(
        types,
        ["orders.cancelled", "orders.create", "orders.create"]
    );
    for (headers, body) in &orders {
        standardwebhooks::Webhook::new(&endpoint_secrets[0])
            .unwrap()
            .verify(body, headers)
            .expect("signed with the endpoint's secret");
    }
    let first: Value = orders
        .iter()
        .map(|(_, body)| serde_json::from_slice::<Value>(body).unwrap())
        .find(|o| o["id"] == 1001)
        .expect("order 1001");
    assert_eq!(first, order(1001, "ada@example.com", 2, "12.50", "25.00"));
    let stock = wait_for("the stock changes at the subscriber", async || {
        let seen = stock_seen.lock().unwrap().clone();
        (seen.len() >= 3).then_some(seen)
    })
    .await;
    for (headers, body) in &stock {
        assert_eq!(headers["hookbus-event-type"], "stock.changed");
        standardwebhooks::Webhook::new(&endpoint_secrets[1])
            .unwrap()
            .verify(body, headers)
            .unwrap();
        let change: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(change["sku"], "SKU-A", "{change}");
    }

    stack.stop().await;
}
