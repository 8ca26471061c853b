//! `hookbus-bench e2e`: signed webhooks through the ingress, to a consumer on the consumer runtime
//! and out through the egress to a subscriber, on one nats-server. The ingress and the egress run
//! as their own processes, as deployed; the load generator, the consumer and the subscriber run
//! in this one.
//!
//! - The ingress alone first (the closed-loop load generator, nothing consuming), then the same
//!   load with the consumer and the egress running: the end-to-end rate is the events accepted
//!   over the time until the last one's consumer effect, and until its delivery.
//! - Then open-loop load at fractions of the highest end-to-end rate: each request's latency to
//!   the consumer's handler and to the subscriber, from the moment it was sent.
//! - CPU-seconds per 1,000 events and peak RSS of each process: the ingress, the egress, the
//!   nats-server, and this one, from the egress's start to the end of the last load.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hookbus_bus::{ConsumerSpec, NatsConfig, Outcome, StartPosition};
use hookbus_testkit::NatsServer;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::ingress::{SOURCE, SchemeArg, ingress_config, requests};
use super::loadgen;
use super::process::{Service, Usage};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Length of each measured run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Connections of the closed-loop load generator.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Fractions of the highest end-to-end rate at which latency is measured.
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.75")]
    loads: Vec<f64>,
    /// Use this nats-server instead of starting a temporary one.
    #[arg(long)]
    nats_url: Option<String>,
    /// With `--nats-url`: that server's process id, to report its CPU and memory too.
    #[arg(long, requires = "nats_url")]
    nats_pid: Option<u32>,
}

const TOKEN: &str = "bench-token-0123456789";
const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// When each event (by its provider delivery id) reached the consumer and the subscriber.
#[derive(Default)]
struct Arrivals {
    consumed: HashMap<String, Instant>,
    /// Delivery id → event id, as the consumer saw them.
    ids: HashMap<String, String>,
    /// By event id (the subscriber's `webhook-id`).
    delivered: HashMap<String, Instant>,
}

impl Arrivals {
    fn delivered(&self, delivery_id: &str) -> Option<Instant> {
        self.delivered.get(self.ids.get(delivery_id)?).copied()
    }
}

type Shared = Arc<Mutex<Arrivals>>;

pub async fn run(args: Args) -> anyhow::Result<String> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be more than 0");
    let (server, nats_url, nats_version) = super::nats(args.nats_url.as_deref()).await?;
    let nats_pid = args.nats_pid.or(server.as_ref().and_then(NatsServer::pid));
    let shutdown = CancellationToken::new();
    let ingress = Service::start("ingress", &ingress_config(&nats_url, SchemeArg::Github)).await?;
    let ingress_addr = ingress.addr;
    let nats_config = NatsConfig {
        url: nats_url.clone(),
        ..NatsConfig::default()
    };
    let client = hookbus_bus::connect(&nats_config, "bench-e2e").await?;
    let mut run = 0u64;
    let mut next = || {
        run += 1;
        run
    };

    // Closed-loop load on the ingress for `duration`, with delivery ids of run `run`.
    let load = |duration: Duration, run: u64| {
        loadgen::run(
            ingress_addr,
            args.concurrency,
            duration,
            requests(SchemeArg::Github, 1024, run),
        )
    };

    // The ingress alone, after a second of warm-up.
    load(Duration::from_secs(1), next()).await?;
    let alone = load(args.duration, next()).await?;

    // The consumer and the egress, both starting at `new`.
    let arrivals = Shared::default();
    let record = arrivals.clone();
    let spec = ConsumerSpec::new(
        format!("bench-e2e-{}", std::process::id()),
        &["events.bench.>"],
    )
    .start(StartPosition::New)
    .concurrency(4)
    .batch_size(64)
    // Its record keeps the first arrival: a delivery again after a lost ack is harmless.
    .confirm_acks(false);
    let consumer = tokio::spawn(hookbus_bus::run_batch_consumer(
        client.clone(),
        spec,
        move |batch: Vec<hookbus_bus::Delivery>| {
            let record = record.clone();
            async move {
                let now = Instant::now();
                let mut arrivals = record.lock().expect("not poisoned");
                for delivery in &batch {
                    let id = delivery.event.delivery_id.clone();
                    arrivals.consumed.entry(id.clone()).or_insert(now);
                    arrivals.ids.insert(id, delivery.event.id.clone());
                }
                vec![Outcome::Ack; batch.len()]
            }
        },
        shutdown.clone(),
    ));
    let (egress, sink) = start_egress(&nats_url, arrivals.clone()).await?;
    let processes = [
        ("ingress", ingress.pid()),
        ("egress", egress.pid()),
        ("nats-server", nats_pid),
        (
            "this process: load generator, consumer and subscriber",
            Some(std::process::id()),
        ),
    ];
    let before = processes.map(|(_, pid)| pid.and_then(Usage::of));
    // Both consumers exist before the load starts (they start at `new`).
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(hookbus_bus::EVENTS_STREAM).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while stream.consumer_names().collect::<Vec<_>>().await.len() < 2 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the consumer and the dispatcher did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Closed loop with everything running: accepted over the time to the last effect.
    let started = Instant::now();
    let loaded = load(args.duration, next()).await?;
    let accepted = loaded.ok as usize;
    let (to_consumer, to_subscriber) =
        wait_all(&arrivals, accepted, Duration::from_secs(120)).await?;
    let e2e_consumer = accepted as f64 / (to_consumer - started).as_secs_f64();
    let e2e_subscriber = accepted as f64 / (to_subscriber - started).as_secs_f64();
    let sustainable = e2e_consumer.min(e2e_subscriber);

    let mut out = String::new();
    writeln!(out, "### `hookbus-bench e2e`\n")?;
    writeln!(
        out,
        "github-signed 1 KiB webhooks · the ingress and the egress (one endpoint, a subscriber that answers at once) as their own processes, a batch consumer on the consumer runtime (4 batches of up to 64 at once, plain acks, its handler records the first arrival) in the bench's · {} · {} cores\n",
        nats_version,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    writeln!(out, "| run | events/s | / ingress alone |")?;
    writeln!(out, "|---|---:|---:|")?;
    let r_alone = alone.rate();
    writeln!(
        out,
        "| ingress alone, {} connections | {r_alone:.0} | 1.00 |",
        args.concurrency
    )?;
    writeln!(
        out,
        "| end to end, to the consumer's effect | {e2e_consumer:.0} | {:.2} |",
        e2e_consumer / r_alone
    )?;
    writeln!(
        out,
        "| end to end, to the subscriber | {e2e_subscriber:.0} | {:.2} |",
        e2e_subscriber / r_alone
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| load | offered /s | to the consumer p50 ms | p99 ms | to the subscriber p50 ms | p99 ms |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    let mut events = accepted;
    for fraction in &args.loads {
        let rate = sustainable * fraction;
        let sent = open_loop(ingress_addr, rate, args.duration, next()).await?;
        events += sent.len();
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut consumer, mut subscriber) = (Vec::new(), Vec::new());
        loop {
            {
                let arrivals = arrivals.lock().expect("not poisoned");
                let consumed = sent
                    .iter()
                    .filter(|(id, _)| arrivals.consumed.contains_key(id))
                    .count();
                let delivered = sent
                    .iter()
                    .filter(|(id, _)| arrivals.delivered(id).is_some())
                    .count();
                if (consumed == sent.len() && delivered == sent.len()) || Instant::now() > deadline
                {
                    for (id, at) in &sent {
                        if let Some(t) = arrivals.consumed.get(id) {
                            consumer.push(t.duration_since(*at));
                        }
                        if let Some(t) = arrivals.delivered(id) {
                            subscriber.push(t.duration_since(*at));
                        }
                    }
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::ensure!(
            consumer.len() == sent.len() && subscriber.len() == sent.len(),
            "at {:.0}/s, {} of {} events reached the consumer and {} the subscriber within 60 s",
            rate,
            consumer.len(),
            sent.len(),
            subscriber.len()
        );
        writeln!(
            out,
            "| {:.0} % | {rate:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            fraction * 100.0,
            quantile_ms(&mut consumer, 0.5),
            quantile_ms(&mut consumer, 0.99),
            quantile_ms(&mut subscriber, 0.5),
            quantile_ms(&mut subscriber, 0.99)
        )?;
    }
    // Read before anything stops.
    let after = processes.map(|(_, pid)| pid.and_then(Usage::of));
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), consumer).await;
    sink.abort();
    drop((ingress, egress));
    writeln!(out)?;
    writeln!(
        out,
        "| process | CPU-s per 1,000 events | CPU-s in all | peak RSS MiB |"
    )?;
    writeln!(out, "|---|---:|---:|---:|")?;
    for (((name, _), before), after) in processes.iter().zip(before).zip(after) {
        if let (Some(before), Some(after)) = (before, after) {
            let cpu = after.cpu - before.cpu;
            writeln!(
                out,
                "| {name} | {:.3} | {cpu:.1} | {:.0} |",
                cpu / events as f64 * 1000.0,
                after.peak_kib as f64 / 1024.0
            )?;
        }
    }
    writeln!(
        out,
        "\n{events} events in all, from the egress's start to the end of the last load."
    )?;
    drop(server);
    Ok(out)
}

/// Waits until `count` events reached both the consumer and the subscriber: when the last of
/// each arrived.
async fn wait_all(
    arrivals: &Shared,
    count: usize,
    within: Duration,
) -> anyhow::Result<(Instant, Instant)> {
    let deadline = Instant::now() + within;
    loop {
        {
            let arrivals = arrivals.lock().expect("not poisoned");
            if arrivals.consumed.len() >= count && arrivals.delivered.len() >= count {
                let last = |m: &HashMap<String, Instant>| m.values().max().copied();
                return Ok((
                    last(&arrivals.consumed).expect("some"),
                    last(&arrivals.delivered).expect("some"),
                ));
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} of {count} events reached the consumer and {} the subscriber",
                arrivals.consumed.len(),
                arrivals.delivered.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends at `rate` per second for `duration`, each request on its own; the delivery ids of the
/// requests answered 200, with when each was sent.
async fn open_loop(
    addr: std::net::SocketAddr,
    rate: f64,
    duration: Duration,
    run: u64,
) -> anyhow::Result<Vec<(String, Instant)>> {
    let make = requests(SchemeArg::Github, 1024, run);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let base = format!("http://{addr}");
    let started = Instant::now();
    let total = (rate * duration.as_secs_f64()) as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (path, headers, body) = make(0, n);
        let mut request = client
            .post(format!("{base}{path}"))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let id = format!("b{run}-0-{n}");
        tasks.spawn(async move {
            let sent = Instant::now();
            let ok = request
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            ok.then_some((id, sent))
        });
    }
    let mut sent = Vec::new();
    while let Some(result) = tasks.join_next().await {
        sent.extend(result?);
    }
    Ok(sent)
}

fn quantile_ms(values: &mut [Duration], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_unstable();
    let index = ((values.len() - 1) as f64 * q).round() as usize;
    values[index].as_secs_f64() * 1000.0
}

/// The egress as its own process with one endpoint: a subscriber in this process that records
/// each delivery's arrival.
async fn start_egress(
    nats_url: &str,
    arrivals: Shared,
) -> anyhow::Result<(Service, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let sink = axum::Router::new().fallback(move |headers: http::HeaderMap| {
        let arrivals = arrivals.clone();
        async move {
            let now = Instant::now();
            let mut arrivals = arrivals.lock().expect("not poisoned");
            if let Some(event_id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
                arrivals.delivered.insert(event_id.to_owned(), now);
            }
            "ok"
        }
    });
    let sink_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_url = format!("http://{}/hook", sink_listener.local_addr()?);
    let sink = tokio::spawn(async move { axum::serve(sink_listener, sink).await });

    let config = format!(
        "[nats]\nurl = {nats_url:?}\n\n[egress]\napi_token = {TOKEN:?}\nencryption_key = {KEY:?}\n\
         allow_private_networks = true\nstart = \"new\"\ndispatcher = \"bench-e2e-dispatcher-{}\"\n",
        std::process::id()
    );
    let egress = Service::start("egress", &config).await?;
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/endpoints", egress.addr))
        .bearer_auth(TOKEN)
        .json(&json!({"url": sink_url, "sources": [SOURCE], "max_in_flight": 64}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 201,
        "the egress did not take the endpoint: {} {}",
        response.status(),
        response.text().await.unwrap_or_default()
    );
    Ok((egress, sink))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_durations() {
        let mut values: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(&mut values, 0.5), 51.0);
        assert_eq!(quantile_ms(&mut values, 0.99), 99.0);
        assert!(quantile_ms(&mut [], 0.5).is_nan());
    }
}
