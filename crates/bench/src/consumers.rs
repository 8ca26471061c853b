//! `hookbus-bench consumers`: how fast the consuming services take in orders (the inventory on
//! SQLite and on Postgres, the analytics and the notifications on SQLite), each as its own
//! process, beside two baselines measured in this process in the same run on the same stream: the
//! raw pull-and-ack rate of a plain JetStream pull consumer (`R_raw`), and the consumer runtime
//! with a handler that only acks (`R_runtime`). Every scenario consumes the same preloaded orders
//! through a new durable consumer that starts at the first of them (a service's, whose
//! configuration takes a time, at the second before it); its clock runs from the consumer's
//! creation until the server's ack floor has passed the last order. Each also reports the CPU
//! time its process spent per 1,000 orders, and the services their peak RSS.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hookbus_bus::{Built, EventBuilder, EventType, SourceName};
use hookbus_bus::{ConsumerSpec, NatsConfig, Outcome, StartPosition};
use hookbus_proto::commerce::v1::{LineItem, Money, OrderCreated};
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::process::{Service, Usage};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Orders preloaded once; every scenario of every round consumes all of them.
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// Distinct SKUs the orders draw from (fewer means more contention on the same rows).
    #[arg(long, default_value_t = 100)]
    skus: usize,
    /// Batches handled at once, by the runtime and by each service (the services' default is 2).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// The most events in one batch, for the runtime and each service (their default is 64).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
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
        args.rounds > 0
            && args.concurrency > 0
            && args.batch_size > 0
            && args.events > 0
            && args.skus > 0,
        "--rounds, --concurrency, --batch-size, --events and --skus must be more than 0"
    );
    let (server, nats_url, nats_version) = super::nats(args.nats_url.as_deref()).await?;
    let nats = NatsConfig {
        url: nats_url.clone(),
        ..NatsConfig::default()
    };
    let client = hookbus_bus::connect(&nats, "hookbus-bench").await?;
    let js = jetstream::new(client.clone());
    hookbus_bus::ensure_events_stream(&js, &nats.events).await?;
    // The services' consumers start at this time (their configuration takes no sequence): the
    // second before the first order.
    let preloaded_from = (time::OffsetDateTime::now_utc() - Duration::from_secs(1))
        .replace_nanosecond(0)?
        .format(&time::format_description::well_known::Rfc3339)?;
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
    let mut labels = vec![
        "raw pull-and-ack (R_raw), in this process",
        "consumer runtime, batches, plain acks, handler only acks (R_runtime), in this process",
        "consumer runtime, one at a time, confirmed acks, handler only acks, in this process",
        "inventory, SQLite",
    ];
    if postgres.is_some() {
        labels.push("inventory, PostgreSQL (the PostgreSQL server's CPU not counted)");
    }
    labels.extend([
        "analytics, SQLite",
        "notifications, SQLite, the default rules",
    ]);
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); labels.len()];
    let (js, args) = (&js, &args);
    let service = |service: &'static str, section: String, name: String| {
        let config = format!(
            "[nats]\nurl = {nats_url:?}\n\n[{service}]\n{section}consumer = {name:?}\nstart = {preloaded_from:?}\nconcurrency = {}\nbatch_size = {}\n",
            args.concurrency, args.batch_size
        );
        async move { consume_in(service, &config, js, &name, args.events, last_sequence).await }
    };
    for round in 1..=args.rounds {
        let name = |what: &str| format!("bench-{run_id}-{what}-{round}");
        let this = |rate: f64, cpu: f64| Run {
            rate,
            cpu,
            peak_kib: None,
        };
        let own = || Usage::of(std::process::id()).map_or(0.0, |u| u.cpu);
        let cpu = own();
        let raw =
            raw_pull_and_ack(js, &name("raw"), args.events, first_sequence, last_sequence).await?;
        let raw = this(raw, own() - cpu);
        let cpu = own();
        let runtime = runtime_noop(
            &client,
            js,
            args,
            &name("runtime"),
            start,
            last_sequence,
            true,
        )
        .await?;
        let runtime = this(runtime, own() - cpu);
        let cpu = own();
        let single = runtime_noop(
            &client,
            js,
            args,
            &name("single"),
            start,
            last_sequence,
            false,
        )
        .await?;
        let single = this(single, own() - cpu);
        let dir = tempfile::tempdir()?;
        let database = |file: &str| {
            format!(
                "database_url = {:?}\n",
                format!("sqlite://{}", dir.path().join(file).display())
            )
        };
        let sqlite_url = format!("sqlite://{}", dir.path().join("inventory.db").display());
        let sqlite = service("inventory", database("inventory.db"), name("sqlite")).await?;
        check_stock(&sqlite_url, args.events).await?;
        let mut results = vec![raw, runtime, single, sqlite];
        if let Some(server) = postgres {
            let url = hookbus_store::testing::fresh_postgres_database_on(server)
                .await
                .with_context(|| {
                    format!("create a database on {server} (or pass --postgres none)")
                })?;
            let result = async {
                let run = service(
                    "inventory",
                    format!("database_url = {url:?}\n"),
                    name("postgres"),
                )
                .await?;
                check_stock(&url, args.events).await?;
                anyhow::Ok(run)
            }
            .await;
            let _ = hookbus_store::testing::drop_postgres_database(&url).await;
            results.push(result?);
        }
        results.push(service("analytics", database("analytics.db"), name("analytics")).await?);
        results.push(
            service(
                "notifications",
                database("notifications.db"),
                name("notifications"),
            )
            .await?,
        );
        eprintln!(
            "round {round}/{}: {}",
            args.rounds,
            labels
                .iter()
                .zip(&results)
                .map(|(label, run)| format!("{label} {:.0}/s", run.rate))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (all, run) in runs.iter_mut().zip(results) {
            all.push(run);
        }
    }

    // The median of each column over the rounds.
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let medians: Vec<(&str, Run)> = labels
        .iter()
        .zip(runs)
        .map(|(label, runs)| {
            let peaks: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.peak_kib.map(|k| k as f64))
                .collect();
            let run = Run {
                rate: median(runs.iter().map(|r| r.rate).collect()),
                cpu: median(runs.iter().map(|r| r.cpu).collect()),
                peak_kib: (!peaks.is_empty()).then(|| median(peaks) as u64),
            };
            (*label, run)
        })
        .collect();
    let (r_raw, r_runtime) = (medians[0].1.rate, medians[1].1.rate);
    let mut out = String::new();
    writeln!(out, "### `hookbus-bench consumers`\n")?;
    writeln!(
        out,
        "{} orders ({} SKUs, 1 line each) · {} batches of up to {} at once · {} rounds (median shown) · {} · {} cores\n",
        args.events,
        args.skus,
        args.concurrency,
        args.batch_size,
        args.rounds,
        nats_version,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    writeln!(
        out,
        "| run | events/s | / R_raw | / R_runtime | CPU-s per 1,000 events | peak RSS MiB |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    for (label, run) in &medians {
        writeln!(
            out,
            "| {label} | {:.0} | {:.3} | {:.3} | {:.3} | {} |",
            run.rate,
            run.rate / r_raw,
            run.rate / r_runtime,
            run.cpu / args.events as f64 * 1000.0,
            run.peak_kib
                .map_or("–".into(), |k| format!("{:.0}", k as f64 / 1024.0))
        )?;
    }
    // The targets of issue 14, each against R_raw of this run.
    writeln!(out)?;
    for (prefix, target) in [
        ("consumer runtime, batches", 0.5),
        ("inventory, SQLite", 0.15),
        ("inventory, PostgreSQL", 0.10),
        ("analytics", 0.2),
        ("notifications", 0.15),
    ] {
        if let Some((label, run)) = medians.iter().find(|(l, _)| l.starts_with(prefix)) {
            let ratio = run.rate / r_raw;
            let verdict = if ratio >= target { "met" } else { "not met" };
            writeln!(
                out,
                "{label}: {ratio:.3} of R_raw (target ≥ {target:.2}, {verdict})  "
            )?;
        }
    }
    drop(server);
    Ok(out)
}

/// Publishes `args.events` orders with pipelined acks; returns the first and the last one's
/// stream sequence.
async fn preload(js: &jetstream::Context, args: &Args) -> anyhow::Result<(u64, u64)> {
    let mut in_flight = FuturesUnordered::new();
    let (mut first, mut last) = (u64::MAX, 0);
    let source = SourceName::parse("bench")?;
    let event_type = EventType::parse("order.created")?;
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
        let Built { event, .. } = EventBuilder::new(&source, &event_type, order.encode_to_vec())
            .content_type(hookbus_proto::content_type_for::<OrderCreated>())
            .build();
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

/// The consumer runtime with a handler that only acks: in batches with plain acks (`batched`),
/// or one message at a time with confirmed acks (the runtime's defaults for `run_consumer`).
async fn runtime_noop(
    client: &async_nats::Client,
    js: &jetstream::Context,
    args: &Args,
    name: &str,
    start: StartPosition,
    last_sequence: u64,
    batched: bool,
) -> anyhow::Result<f64> {
    let shutdown = CancellationToken::new();
    let handle = if batched {
        let spec = ConsumerSpec::new(name, &[SUBJECT])
            .start(start)
            .concurrency(args.concurrency)
            .batch_size(args.batch_size)
            .confirm_acks(false);
        tokio::spawn(hookbus_bus::run_batch_consumer(
            client.clone(),
            spec,
            |batch: Vec<hookbus_bus::Delivery>| async move { vec![Outcome::Ack; batch.len()] },
            shutdown.clone(),
        ))
    } else {
        // As many handlers as the batches hold messages, the way it ran before batches.
        let spec = ConsumerSpec::new(name, &[SUBJECT])
            .start(start)
            .concurrency(8);
        tokio::spawn(hookbus_bus::run_consumer(
            client.clone(),
            spec,
            |_| async { Outcome::Ack },
            shutdown.clone(),
        ))
    };
    let rate = until_acked(js, name, args.events, last_sequence).await;
    shutdown.cancel();
    handle.await??;
    rate
}

/// One scenario's figures: its rate, the CPU time its process spent, and the peak RSS of a
/// service's own process.
#[derive(Clone, Copy)]
struct Run {
    rate: f64,
    cpu: f64,
    peak_kib: Option<u64>,
}

/// `hookbus <service>` with `config` as its own process, until its consumer `name` has acked
/// every order; the CPU time is all its process spent, start-up included.
async fn consume_in(
    service: &'static str,
    config: &str,
    js: &jetstream::Context,
    name: &str,
    events: usize,
    last_sequence: u64,
) -> anyhow::Result<Run> {
    let process = Service::start(service, config).await?;
    let rate = until_acked(js, name, events, last_sequence).await;
    // Its start-up is counted too.
    let usage = process.usage();
    process.stop().await?;
    let (rate, usage) = (rate?, usage?);
    Ok(Run {
        rate,
        cpu: usage.cpu,
        peak_kib: Some(usage.peak_kib),
    })
}

/// Every order was applied, once: each took one unit of stock from SKUs that had none.
async fn check_stock(database_url: &str, events: usize) -> anyhow::Result<()> {
    let store =
        hookbus_store::Store::open(database_url, hookbus_inventory::store::migrations()).await?;
    let (total,): (i64,) =
        hookbus_store::sqlx::query_as("SELECT CAST(COALESCE(SUM(level), 0) AS BIGINT) FROM stock")
            .fetch_one(store.pool())
            .await?;
    // Closed before the caller drops a Postgres database under it.
    store.pool().close().await;
    anyhow::ensure!(
        total == -(events as i64),
        "the inventory on {database_url} holds {total} units, expected -{events}"
    );
    Ok(())
}
