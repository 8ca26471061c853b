//! `hookbus-bench ingress`: the ingress beside its two physical limits, measured in the same run:
//! raw JetStream publishing of the same events with pipelined acks (`R_js`), and the same load
//! generator against an empty HTTP handler (`R_http`). The ingress cannot beat
//! `L = 1 / (1/R_http + 1/R_js)`, the rate it would reach if it cost nothing beyond those two.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, message::PublishMessage};
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hookbus_bus::{Built, EventBuilder, EventType, SourceName};
use hookbus_signature::{Outgoing, Scheme, sign_as_provider};
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::loadgen::{self, MakeRequest};
use super::stats::RunStats;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SchemeArg {
    Github,
    Stripe,
    StandardWebhooks,
    Shopify,
    Slack,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The signature scheme of every request.
    #[arg(long, value_enum, default_value = "github")]
    scheme: SchemeArg,
    /// Request body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// Connections of the load generator, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Length of each measured run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured run before the first round of each scenario.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Rounds of the three runs, interleaved; the median round of each is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// PubAcks in flight for the raw JetStream baseline.
    #[arg(long, default_value_t = 1000)]
    js_in_flight: usize,
    /// Use this nats-server instead of starting a temporary one.
    #[arg(long)]
    nats_url: Option<String>,
}

pub(super) const SOURCE: &str = "bench";

pub(super) fn scheme_and_secret(arg: SchemeArg) -> (Scheme, String) {
    match arg {
        SchemeArg::Github => (Scheme::Github, "bench-secret".into()),
        SchemeArg::Stripe => (Scheme::Stripe, "whsec_bench".into()),
        SchemeArg::StandardWebhooks => (
            Scheme::StandardWebhooks,
            format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode([7u8; 32])
            ),
        ),
        SchemeArg::Shopify => (Scheme::Shopify, "shpss_bench".into()),
        SchemeArg::Slack => (Scheme::Slack, "slack-bench".into()),
    }
}

fn verifier_name(arg: SchemeArg) -> &'static str {
    match arg {
        SchemeArg::Github => "github",
        SchemeArg::Stripe => "stripe",
        SchemeArg::StandardWebhooks => "standard-webhooks",
        SchemeArg::Shopify => "shopify",
        SchemeArg::Slack => "slack",
    }
}

/// A JSON body of exactly `size` bytes (or the smallest the scheme allows) for delivery `id`.
fn body(arg: SchemeArg, id: &str, size: usize) -> Vec<u8> {
    let head = match arg {
        SchemeArg::Github => r#"{"action":"opened","pad":""#.to_owned(),
        SchemeArg::Stripe => format!(r#"{{"id":"{id}","type":"charge.succeeded","pad":""#),
        SchemeArg::StandardWebhooks => r#"{"type":"bench.event","pad":""#.to_owned(),
        SchemeArg::Shopify => r#"{"id":1,"pad":""#.to_owned(),
        SchemeArg::Slack => format!(
            r#"{{"type":"event_callback","event_id":"{id}","event":{{"type":"message"}},"pad":""#
        ),
    };
    let mut body = head.into_bytes();
    let pad = size.saturating_sub(body.len() + 2);
    body.extend(std::iter::repeat_n(b'x', pad));
    body.extend_from_slice(b"\"}");
    body
}

use hookbus_bus::unix_seconds as unix_now;

/// Signed requests, each with a delivery id unique to this run.
pub(super) fn requests(arg: SchemeArg, body_size: usize, run: u64) -> Arc<MakeRequest> {
    let (scheme, secret) = scheme_and_secret(arg);
    let path = format!("/webhooks/{SOURCE}");
    Arc::new(move |worker, n| {
        let delivery_id = format!("b{run}-{worker}-{n}");
        let body = body(arg, &delivery_id, body_size);
        let headers = sign_as_provider(
            &scheme,
            &secret,
            Outgoing {
                body: &body,
                delivery_id: &delivery_id,
                event_type: "orders/create",
                timestamp: unix_now(),
            },
        );
        (path.clone(), headers, Bytes::from(body))
    })
}

pub async fn run(args: Args) -> anyhow::Result<String> {
    anyhow::ensure!(
        args.rounds > 0 && args.concurrency > 0,
        "--rounds and --concurrency must be more than 0"
    );
    let (_server, nats_url) = match &args.nats_url {
        Some(url) => (None, url.clone()),
        None => {
            let server = tokio::task::spawn_blocking(hookbus_testkit::NatsServer::start).await?;
            let url = server.url();
            (Some(server), url)
        }
    };
    let nats_version = match &_server {
        Some(s) => hookbus_testkit::version_of(s.binary())
            .map(|(a, b)| format!("nats-server {a}.{b}"))
            .unwrap_or_default(),
        None => format!("nats-server at {nats_url}"),
    };

    let shutdown = CancellationToken::new();
    let (ingress_addr, ingress, nats_config) =
        start_ingress(&nats_url, args.scheme, shutdown.clone()).await?;

    let empty_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let empty_addr = empty_listener.local_addr()?;
    let empty = axum::Router::new().route(
        "/webhooks/{source}",
        axum::routing::post(|_body: Bytes| async {
            axum::Json(serde_json::json!({"id": "00000000-0000-0000-0000-000000000000", "duplicate": false}))
        }),
    );
    let empty_shutdown = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(empty_listener, empty)
            .with_graceful_shutdown(empty_shutdown.cancelled_owned())
            .await
    });

    let client = hookbus_bus::connect(&nats_config, "hookbus-bench").await?;
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(args.js_in_flight)
        .build(client);

    let mut run_id = 0u64;
    let mut next_run = || {
        run_id += 1;
        run_id
    };
    // Warm-up of each, unmeasured.
    raw_publish(&js, &args, args.js_in_flight, next_run(), args.warmup).await?;
    loadgen::run(
        empty_addr,
        args.concurrency,
        args.warmup,
        requests(args.scheme, args.body_size, next_run()),
    )
    .await?;
    loadgen::run(
        ingress_addr,
        args.concurrency,
        args.warmup,
        requests(args.scheme, args.body_size, next_run()),
    )
    .await?;

    let (mut raw, mut raw_shallow, mut http, mut ing) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        purge(&js).await?;
        raw.push(raw_publish(&js, &args, args.js_in_flight, next_run(), args.duration).await?);
        purge(&js).await?;
        raw_shallow
            .push(raw_publish(&js, &args, args.concurrency, next_run(), args.duration).await?);
        http.push(
            loadgen::run(
                empty_addr,
                args.concurrency,
                args.duration,
                requests(args.scheme, args.body_size, next_run()),
            )
            .await?,
        );
        purge(&js).await?;
        ing.push(
            loadgen::run(
                ingress_addr,
                args.concurrency,
                args.duration,
                requests(args.scheme, args.body_size, next_run()),
            )
            .await?,
        );
        eprintln!(
            "round {round}/{}: raw JetStream {:.0}/s ({:.0}/s at {} in flight), empty handler {:.0}/s, ingress {:.0}/s",
            args.rounds,
            raw[round - 1].rate(),
            raw_shallow[round - 1].rate(),
            args.concurrency,
            http[round - 1].rate(),
            ing[round - 1].rate()
        );
    }
    shutdown.cancel();
    ingress.await??;

    let mut raw = median(raw);
    let mut raw_shallow = median(raw_shallow);
    let mut http = median(http);
    let mut ing = median(ing);
    let (r_js, r_http, r_ing) = (raw.rate(), http.rate(), ing.rate());
    let limit = 1.0 / (1.0 / r_http + 1.0 / r_js);
    let mut out = String::new();
    writeln!(out, "### `hookbus-bench ingress`\n")?;
    writeln!(
        out,
        "scheme {} · body {} B · concurrency {} · {} rounds of {:?} (median round shown) · {} · {} cores\n",
        verifier_name(args.scheme),
        args.body_size,
        args.concurrency,
        args.rounds,
        args.duration,
        nats_version,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    writeln!(
        out,
        "| run | rate (/s) | p50 ms | p99 ms | max ms | errors |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    writeln!(
        out,
        "{}",
        raw.row(&format!(
            "raw JetStream publish, {} acks in flight (R_js)",
            args.js_in_flight
        ))
    )?;
    writeln!(
        out,
        "{}",
        raw_shallow.row(&format!(
            "raw JetStream publish, {} acks in flight, the most the ingress has (R_js,{})",
            args.concurrency, args.concurrency
        ))
    )?;
    writeln!(out, "{}", http.row("empty HTTP handler (R_http)"))?;
    writeln!(out, "{}", ing.row("ingress"))?;
    writeln!(out)?;
    writeln!(out, "L = 1/(1/R_http + 1/R_js) = {limit:.0}/s  ")?;
    writeln!(out, "ingress / L = {:.2} (target ≥ 0.70)  ", r_ing / limit)?;
    writeln!(
        out,
        "ingress / R_http = {:.2}, ingress / R_js = {:.2}  ",
        r_ing / r_http,
        r_ing / r_js
    )?;
    let shallow_limit = 1.0 / (1.0 / r_http + 1.0 / raw_shallow.rate());
    writeln!(
        out,
        "At the ingress's depth: L_{} = 1/(1/R_http + 1/R_js,{}) = {shallow_limit:.0}/s, ingress / L_{} = {:.2}",
        args.concurrency,
        args.concurrency,
        args.concurrency,
        r_ing / shallow_limit
    )?;
    Ok(out)
}

/// The ingress, configured as a user would with one source `bench` of `scheme`, in this process
/// until `shutdown`: its address, its task and its `[nats]` section.
pub(super) async fn start_ingress(
    nats_url: &str,
    scheme: SchemeArg,
    shutdown: CancellationToken,
) -> anyhow::Result<(
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), hookbus_service::ServiceError>>,
    hookbus_bus::NatsConfig,
)> {
    let config_file = tempfile::NamedTempFile::new()?;
    std::fs::write(config_file.path(), ingress_config(nats_url, scheme))?;
    let loader = hookbus_config::Loader::with_env(Some(config_file.path()), std::iter::empty())?;
    let config = hookbus_ingress::Config::load(&loader)?;
    let nats_config = config.nats.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let ingress = tokio::spawn(hookbus_ingress::run(config, listener, shutdown));
    tokio::time::timeout(
        Duration::from_secs(20),
        super::process::wait_until_ready(addr),
    )
    .await
    .context("the ingress did not become ready within 20 s")?;
    Ok((addr, ingress, nats_config))
}

/// The ingress's configuration file, as a user would write it: one source `bench` of `scheme`.
pub(super) fn ingress_config(nats_url: &str, scheme: SchemeArg) -> String {
    let (_, secret) = scheme_and_secret(scheme);
    format!(
        "[nats]\nurl = {nats_url:?}\n\n[ingress.sources.{SOURCE}]\nverifier = {:?}\nsecrets = [{secret:?}]\n",
        verifier_name(scheme)
    )
}

/// The run with the median rate.
fn median(mut runs: Vec<RunStats>) -> RunStats {
    runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    runs.swap_remove(runs.len() / 2)
}

async fn purge(js: &jetstream::Context) -> anyhow::Result<()> {
    js.get_stream(hookbus_bus::EVENTS_STREAM)
        .await?
        .purge()
        .await
        .context("purge EVENTS between runs")?;
    Ok(())
}

/// Publishes events like the ingress's (same envelope, body size and headers) straight to
/// JetStream, keeping `depth` PubAcks outstanding.
async fn raw_publish(
    js: &jetstream::Context,
    args: &Args,
    depth: usize,
    run: u64,
    duration: Duration,
) -> anyhow::Result<RunStats> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut in_flight = FuturesUnordered::new();
    let mut stats = RunStats::default();
    let mut n = 0u64;
    let mut record = |result: (
        Instant,
        Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    )| {
        match result.1 {
            Ok(_) => {
                stats.ok += 1;
                stats
                    .latencies_us
                    .push(result.0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            Err(_) => stats.errors += 1,
        }
    };
    let source = SourceName::parse(SOURCE)?;
    let event_type = EventType::parse("orders.create")?;
    while Instant::now() < deadline {
        let delivery_id = format!("r{run}-{n}");
        n += 1;
        let Built { subject, event } = EventBuilder::new(
            &source,
            &event_type,
            body(args.scheme, &delivery_id, args.body_size),
        )
        .provider(verifier_name(args.scheme))
        .delivery_id(delivery_id.clone())
        .build();
        let message = PublishMessage::build()
            .payload(event.encode_to_vec().into())
            .headers(hookbus_bus::event_headers(
                &event,
                &hookbus_telemetry::outgoing_context(&Default::default()),
            ))
            .message_id(format!("{SOURCE}:{delivery_id}"));
        let sent = Instant::now();
        let ack = js.send_publish(subject, message).await?;
        in_flight.push(async move { (sent, ack.await) });
        while in_flight.len() >= depth {
            if let Some(result) = in_flight.next().await {
                record(result);
            }
        }
    }
    while let Some(result) = in_flight.next().await {
        record(result);
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}
