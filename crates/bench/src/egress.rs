//! `hookbus-bench egress`: deliveries per second through the egress (dispatch, the partitions,
//! signing, the SSRF-guarded client, the attempt log) into a local sink that answers after 0 ms
//! and after 50 ms, and a fan-out of events to 1,000 endpoints. Each is measured beside a
//! baseline in the same run: plain HTTP POSTs of the same body from a pooled client at the same
//! concurrency into the same sink. A scenario's clock runs from the first publish to the sink's
//! last request.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hookbus_bus::{Built, EventBuilder, EventType, SourceName};
use hookbus_bus::{NatsConfig, Publisher, StartPosition};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events per round into the sink that answers at once.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Events per round into the sink that answers after 50 ms.
    #[arg(long, default_value_t = 2_000)]
    slow_events: usize,
    /// Endpoints of the fan-out scenario.
    #[arg(long, default_value_t = 1_000)]
    fanout_endpoints: usize,
    /// Events per round of the fan-out scenario (each to every endpoint).
    #[arg(long, default_value_t = 5)]
    fanout_events: usize,
    /// Requests in flight: the endpoint's `max_in_flight` and the baseline's concurrency.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Rounds; the median round of each scenario is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Use this nats-server instead of starting a temporary one.
    #[arg(long)]
    nats_url: Option<String>,
    /// Instead of the scenarios above: the egress at scale with this many endpoints, as its own
    /// process (the create rate, a fan-out to all of them, restart to ready, consumers, peak RSS,
    /// and the API path).
    #[arg(long)]
    pub endpoints: Option<usize>,
    /// Messages of the API path, with `--endpoints`.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
}

pub(super) const TOKEN: &str = "bench-token-0123456789";
pub(super) const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// A sink on 127.0.0.1 that counts requests and answers 200 after `delay`.
pub(super) struct Sink {
    pub url: String,
    pub count: Arc<AtomicU64>,
}

pub(super) async fn sink(delay: Duration) -> anyhow::Result<Sink> {
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            counter.fetch_add(1, Ordering::Relaxed);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Sink { url, count })
}

impl Sink {
    pub async fn reach(&self, target: u64, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while self.count.load(Ordering::Relaxed) < target {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the sink got {} of {target} requests within {within:?}",
                self.count.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }
}

pub(super) fn body(i: usize) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"order": i, "total": {"currency": "EUR", "amount_minor": 2500}, "note": "bench"}),
    )
    .unwrap_or_default()
}

/// Plain POSTs of the same bodies, `concurrency` at a time; requests per second.
pub(super) async fn raw_http(
    client: &reqwest::Client,
    sink: &Sink,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let results: Vec<Result<reqwest::Response, reqwest::Error>> = futures_util::stream::iter(0..n)
        .map(|i| {
            client
                .post(&sink.url)
                .header("content-type", "application/json")
                .body(body(i))
                .send()
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    anyhow::ensure!(failed == 0, "{failed} baseline requests failed");
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// Publishes `n` events of `event_type` and waits until the sink has `deliveries` more requests;
/// deliveries per second.
async fn through_egress(
    publisher: &Publisher,
    event_type: &str,
    n: usize,
    sink: &Sink,
    deliveries: u64,
) -> anyhow::Result<f64> {
    let target = sink.count.load(Ordering::Relaxed) + deliveries;
    let source = &SourceName::parse("bench")?;
    let event_type = &EventType::parse(event_type)?;
    let started = Instant::now();
    let published: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            let Built { subject, event } = EventBuilder::new(source, event_type, body(i)).build();
            publisher
                .publish_event(
                    subject,
                    &event,
                    &event.id,
                    tokio::time::Instant::now() + Duration::from_secs(10),
                    &Default::default(),
                )
                .await?;
            Ok(())
        })
        .buffer_unordered(256)
        .collect()
        .await;
    published.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    sink.reach(target, Duration::from_secs(600)).await?;
    Ok(deliveries as f64 / started.elapsed().as_secs_f64())
}

/// The scenarios (without `--endpoints`; with it, [`super::scale`] runs instead).
pub async fn run(args: Args) -> anyhow::Result<String> {
    anyhow::ensure!(
        args.rounds > 0 && args.concurrency > 0 && args.events > 0,
        "--rounds, --concurrency and --events must be more than 0"
    );
    let (server, nats_url, nats_version) = super::nats(args.nats_url.as_deref()).await?;
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();

    let settings = hookbus_egress::EgressConfig {
        api_token: Some(TOKEN.into()),
        encryption_key: Some(KEY.into()),
        allow_private_networks: true,
        start: StartPosition::New,
        dispatcher: format!("bench-dispatcher-{run_id}"),
        default_max_in_flight: args.concurrency as u32,
        ..Default::default()
    };
    let config = hookbus_egress::Config {
        nats: NatsConfig {
            url: nats_url.clone(),
            ..NatsConfig::default()
        },
        telemetry: Default::default(),
        service: settings,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let egress = tokio::spawn(hookbus_egress::run(config, listener, shutdown.clone()));
    hookbus_service::install_crypto_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(64))
        .timeout(Duration::from_secs(30))
        .build()?;
    wait_ready(&client, &api).await?;
    let create = |body: serde_json::Value| {
        let (client, api) = (client.clone(), api.clone());
        async move {
            let response = client
                .post(format!("{api}/v1/endpoints"))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(
                response.status() == 201,
                "create endpoint: {}",
                response.text().await?
            );
            Ok::<_, anyhow::Error>(())
        }
    };

    let fast = sink(Duration::ZERO).await?;
    let slow = sink(Duration::from_millis(50)).await?;
    let fan = sink(Duration::ZERO).await?;
    let fast_type = format!("fast.r{run_id}");
    let slow_type = format!("slow.r{run_id}");
    let fan_type = format!("fanout.r{run_id}");
    create(json!({"url": fast.url, "event_types": [fast_type], "max_in_flight": args.concurrency}))
        .await?;
    create(json!({"url": slow.url, "event_types": [slow_type], "max_in_flight": args.concurrency}))
        .await?;
    let fan_started = Instant::now();
    futures_util::stream::iter(0..args.fanout_endpoints)
        .map(|_| create(json!({"url": fan.url, "event_types": [fan_type], "max_in_flight": args.concurrency})))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    eprintln!(
        "created {} fan-out endpoints in {:.1} s",
        args.fanout_endpoints,
        fan_started.elapsed().as_secs_f64()
    );
    // Let every partition be pulled before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let nats_client = async_nats::connect(&nats_url).await?;
    let publisher = Publisher::new(nats_client, 256);
    let fan_deliveries = (args.fanout_endpoints * args.fanout_events) as u64;
    let mut rows: Vec<(String, Vec<f64>, Vec<f64>)> = vec![
        (
            format!("sink answers at once ({} events)", args.events),
            Vec::new(),
            Vec::new(),
        ),
        (
            format!("sink answers after 50 ms ({} events)", args.slow_events),
            Vec::new(),
            Vec::new(),
        ),
        (
            format!(
                "fan-out: {} events × {} endpoints",
                args.fanout_events, args.fanout_endpoints
            ),
            Vec::new(),
            Vec::new(),
        ),
    ];
    for round in 1..=args.rounds {
        let results = [
            (
                through_egress(
                    &publisher,
                    &fast_type,
                    args.events,
                    &fast,
                    args.events as u64,
                )
                .await?,
                raw_http(&client, &fast, args.events, args.concurrency).await?,
            ),
            (
                through_egress(
                    &publisher,
                    &slow_type,
                    args.slow_events,
                    &slow,
                    args.slow_events as u64,
                )
                .await?,
                raw_http(&client, &slow, args.slow_events, args.concurrency).await?,
            ),
            (
                through_egress(
                    &publisher,
                    &fan_type,
                    args.fanout_events,
                    &fan,
                    fan_deliveries,
                )
                .await?,
                raw_http(&client, &fan, fan_deliveries as usize, args.concurrency).await?,
            ),
        ];
        eprintln!(
            "round {round}/{}: {}",
            args.rounds,
            results
                .iter()
                .map(|(egress, raw)| format!("{egress:.0}/s vs raw {raw:.0}/s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for ((_, egress, raw), (e, r)) in rows.iter_mut().zip(results) {
            egress.push(e);
            raw.push(r);
        }
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), egress).await;

    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let mut out = String::new();
    writeln!(out, "### `hookbus-bench egress`\n")?;
    writeln!(
        out,
        "concurrency {} (the endpoint's max_in_flight and the baseline's) · {} rounds (median shown) · {} · {} cores\n",
        args.concurrency,
        args.rounds,
        nats_version,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    writeln!(
        out,
        "| scenario | egress deliveries/s | raw HTTP POSTs/s | egress / raw |"
    )?;
    writeln!(out, "|---|---:|---:|---:|")?;
    for (label, egress, raw) in rows {
        let (egress, raw) = (median(egress), median(raw));
        writeln!(
            out,
            "| {label} | {egress:.0} | {raw:.0} | {:.3} |",
            egress / raw
        )?;
    }
    drop(server);
    Ok(out)
}

/// Waits until the egress at `api` answers `/readyz` with 200, for 30 s at most.
pub(super) async fn wait_ready(client: &reqwest::Client, api: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client
        .get(format!("{api}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        anyhow::ensure!(Instant::now() < deadline, "the egress did not get ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
