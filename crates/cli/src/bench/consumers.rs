//! `hookbus bench consumers`: how fast the inventory applies orders, on SQLite and on Postgres,
//! beside two baselines measured in the same run on the same stream: the raw pull-and-ack rate of
//! a plain JetStream pull consumer (`R_raw`), and the consumer runtime with a handler that only
//! acks (`R_runtime`). Every scenario consumes the same preloaded orders through a new durable
//! consumer that starts at the first of them; its clock runs from the consumer's creation until the server's
//! ack floor has passed the last order.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hookbus_bus::{ConsumerSpec, NatsConfig, Outcome, StartPosition};
use hookbus_proto::commerce::v1::{LineItem, Money, OrderCreated};
use hookbus_proto::v1::Event;
use prost::Message;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Orders preloaded once; every scenario of every round consumes all of them.
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// Distinct SKUs the orders draw from (fewer means more contention on the same rows).
    #[arg(long, default_value_t = 100)]
    skus: usize,
    /// Handlers at once, for the runtime and the inventory (the inventory's default is 8).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Rounds of the scenarios, interleaved; the median round of each is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The PostgreSQL server for the Postgres runs (a new database for each, dropped after);
    /// `none` skips them.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    /// Use this nats-server instead of starting a temporary one.
    #[arg(long)]
    nats_url: Option<String>,
}

const SUBJECT: &str = "events.bench.order.created";

pub async fn run(args: Args) -> anyhow::Result<String> {
    anyhow::ensure!(
        args.rounds > 0 && args.concurrency > 0 && args.events > 0 && args.skus > 0,
        "--rounds, --concurrency, --events and --skus must be more than 0"
    );
    let (server, nats_url, nats_version) = super::nats(args.nats_url.as_deref()).await?;
    let nats = NatsConfig {
        url: nats_url.clone(),
        ..NatsConfig::default()
    };
    let client = hookbus_bus::connect(&nats, "hookbus-bench").await?;
    let js = jetstream::new(client.clone());
    hookbus_bus::ensure_events_stream(&js, &nats.events).await?;
    let (first_sequence, last_sequence) = preload(&js, &args).await?;
    // Consumers start at the first preloaded order, with names new to this run, so a reused
    // server's older events and consumers do not count.
    let start = StartPosition::AfterSequence(first_sequence - 1);
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    eprintln!("preloaded {} orders on {SUBJECT}", args.events);

    let postgres = (args.postgres != "none").then_some(args.postgres.as_str());
    let mut runs: Vec<(&str, Vec<f64>)> = vec![
        ("raw pull-and-ack (R_raw)", Vec::new()),
        (
            "consumer runtime, handler only acks (R_runtime)",
            Vec::new(),
        ),
        ("inventory, SQLite", Vec::new()),
    ];
    if postgres.is_some() {
        runs.push(("inventory, PostgreSQL", Vec::new()));
    }
    for round in 1..=args.rounds {
        let name = |what: &str| format!("bench-{run_id}-{what}-{round}");
        let raw = raw_pull_and_ack(
            &js,
            &name("raw"),
            args.events,
            first_sequence,
            last_sequence,
        )
        .await?;
        let runtime =
            runtime_noop(&client, &js, &args, &name("runtime"), start, last_sequence).await?;
        let dir = tempfile::tempdir()?;
        let sqlite_url = format!("sqlite://{}", dir.path().join("inventory.db").display());
        let sqlite = inventory(
            &js,
            &nats,
            &args,
            &sqlite_url,
            (&name("sqlite"), start),
            last_sequence,
        )
        .await?;
        let mut rates = vec![raw, runtime, sqlite];
        if let Some(server) = postgres {
            let url = hookbus_store::testing::fresh_postgres_database_on(server)
                .await
                .with_context(|| {
                    format!("create a database on {server} (or pass --postgres none)")
                })?;
            let result = inventory(
                &js,
                &nats,
                &args,
                &url,
                (&name("postgres"), start),
                last_sequence,
            )
            .await;
            let _ = hookbus_store::testing::drop_postgres_database(&url).await;
            rates.push(result?);
        }
        eprintln!(
            "round {round}/{}: {}",
            args.rounds,
            runs.iter()
                .zip(&rates)
                .map(|((label, _), rate)| format!("{label} {rate:.0}/s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for ((_, all), rate) in runs.iter_mut().zip(rates) {
            all.push(rate);
        }
    }

    let medians: Vec<(&str, f64)> = runs
        .into_iter()
        .map(|(label, mut rates)| {
            rates.sort_by(f64::total_cmp);
            (label, rates[rates.len() / 2])
        })
        .collect();
    let (r_raw, r_runtime) = (medians[0].1, medians[1].1);
    let mut out = String::new();
    writeln!(out, "### `hookbus bench consumers`\n")?;
    writeln!(
        out,
        "{} orders ({} SKUs, 1 line each) · concurrency {} · {} rounds (median shown) · {} · {} cores\n",
        args.events,
        args.skus,
        args.concurrency,
        args.rounds,
        nats_version,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    writeln!(out, "| run | events/s | / R_raw | / R_runtime |")?;
    writeln!(out, "|---|---:|---:|---:|")?;
    for (label, rate) in &medians {
        writeln!(
            out,
            "| {label} | {rate:.0} | {:.3} | {:.3} |",
            rate / r_raw,
            rate / r_runtime
        )?;
    }
    drop(server);
    Ok(out)
}

/// Publishes `args.events` orders with pipelined acks; returns the first and the last one's
/// stream sequence.
async fn preload(js: &jetstream::Context, args: &Args) -> anyhow::Result<(u64, u64)> {
    let mut in_flight = FuturesUnordered::new();
    let (mut first, mut last) = (u64::MAX, 0);
    for n in 0..args.events {
        let order = OrderCreated {
            order_id: format!("bench-{n}"),
            line_items: vec![LineItem {
                sku: format!("SKU-{}", n % args.skus),
                quantity: 1,
                unit_price: Some(Money {
                    currency: "EUR".into(),
                    amount_minor: 1000,
                }),
            }],
            total: Some(Money {
                currency: "EUR".into(),
                amount_minor: 1000,
            }),
            customer_email: format!("customer-{n}@example.com"),
            created_at: None,
        };
        let event = Event {
            id: uuid::Uuid::now_v7().to_string(),
            source: "bench".into(),
            r#type: "order.created".into(),
            provider: "hookbus".into(),
            content_type: hookbus_proto::content_type_for::<OrderCreated>(),
            payload: order.encode_to_vec().into(),
            ..Event::default()
        };
        let headers = hookbus_bus::event_headers(
            &event,
            &hookbus_telemetry::outgoing_context(&Default::default()),
        );
        let ack = js
            .publish_with_headers(SUBJECT, headers, event.encode_to_vec().into())
            .await?;
        in_flight.push(ack.into_future());
        while in_flight.len() >= 1000 {
            if let Some(ack) = in_flight.next().await {
                let sequence = ack?.sequence;
                (first, last) = (first.min(sequence), last.max(sequence));
            }
        }
    }
    while let Some(ack) = in_flight.next().await {
        let sequence = ack?.sequence;
        (first, last) = (first.min(sequence), last.max(sequence));
    }
    Ok((first, last))
}

/// Waits until consumer `name` exists, then until its ack floor reaches `last_sequence`; returns
/// the rate over that time.
async fn until_acked(
    js: &jetstream::Context,
    name: &str,
    events: usize,
    last_sequence: u64,
) -> anyhow::Result<f64> {
    let stream = js.get_stream(hookbus_bus::EVENTS_STREAM).await?;
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut consumer = loop {
        if let Ok(consumer) = stream.get_consumer::<consumer::pull::Config>(name).await {
            break consumer;
        }
        anyhow::ensure!(
            Instant::now() < give_up,
            "consumer {name} was never created"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let started = Instant::now();
    let give_up = started + Duration::from_secs(600);
    loop {
        let info = consumer.info().await?;
        if info.ack_floor.stream_sequence >= last_sequence {
            break;
        }
        anyhow::ensure!(
            Instant::now() < give_up,
            "consumer {name} did not get through the orders within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// A plain pull consumer: messages in batches, each acked, nothing else.
async fn raw_pull_and_ack(
    js: &jetstream::Context,
    name: &str,
    events: usize,
    first_sequence: u64,
    last_sequence: u64,
) -> anyhow::Result<f64> {
    let stream = js.get_stream(hookbus_bus::EVENTS_STREAM).await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.to_owned()),
            filter_subject: SUBJECT.into(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: first_sequence,
            },
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let worker = tokio::spawn(async move {
        let mut messages = consumer.messages().await?;
        while let Some(message) = messages.next().await {
            let message = message?;
            let done = message
                .info()
                .is_ok_and(|i| i.stream_sequence >= last_sequence);
            message.ack().await.map_err(|e| anyhow::anyhow!(e))?;
            if done {
                break;
            }
        }
        anyhow::Ok(())
    });
    let rate = until_acked(js, name, events, last_sequence).await;
    worker.await??;
    rate
}

/// The consumer runtime with a handler that only acks.
async fn runtime_noop(
    client: &async_nats::Client,
    js: &jetstream::Context,
    args: &Args,
    name: &str,
    start: StartPosition,
    last_sequence: u64,
) -> anyhow::Result<f64> {
    let spec = ConsumerSpec::new(name, &[SUBJECT])
        .start(start)
        .concurrency(args.concurrency);
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(hookbus_bus::run_consumer(
        client.clone(),
        spec,
        |_| async { Outcome::Ack },
        shutdown.clone(),
    ));
    let rate = until_acked(js, name, args.events, last_sequence).await;
    shutdown.cancel();
    handle.await??;
    rate
}

/// The inventory service, as `hookbus inventory` runs it, on `database_url`.
async fn inventory(
    js: &jetstream::Context,
    nats: &NatsConfig,
    args: &Args,
    database_url: &str,
    (name, start): (&str, StartPosition),
    last_sequence: u64,
) -> anyhow::Result<f64> {
    let config = hookbus_inventory::Config {
        nats: nats.clone(),
        telemetry: Default::default(),
        inventory: hookbus_inventory::InventoryConfig {
            database_url: database_url.to_owned(),
            consumer: name.to_owned(),
            start,
            concurrency: args.concurrency,
            ..Default::default()
        },
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(hookbus_inventory::run(config, listener, shutdown.clone()));
    let rate = until_acked(js, name, args.events, last_sequence).await;
    shutdown.cancel();
    handle.await??;
    let rate = rate?;
    // Every order was applied, once: each took one unit of stock from SKUs that had none.
    let store =
        hookbus_store::Store::open(database_url, hookbus_inventory::store::migrations()).await?;
    let (total,): (i64,) =
        hookbus_store::sqlx::query_as("SELECT CAST(COALESCE(SUM(level), 0) AS BIGINT) FROM stock")
            .fetch_one(store.pool())
            .await?;
    // Closed before the caller drops a Postgres database under it.
    store.pool().close().await;
    anyhow::ensure!(
        total == -(args.events as i64),
        "the inventory on {database_url} holds {total} units, expected -{}",
        args.events
    );
    Ok(rate)
}
