//! `hookbus-bench egress --endpoints N`: the egress at scale, run as its own process on its own
//! nats-server. N endpoints are created through the API (the create rate), one event is fanned out
//! to all of them, the egress is restarted (the time to ready, its directory loaded), and then
//! messages go the way users send them: `POST /v1/messages` from 32 concurrent clients, timed
//! until the sink has every delivery, beside plain HTTP POSTs at the same concurrency. Printed
//! with the JetStream consumer count, the peak RSS of the egress and of nats-server, and their
//! CPU time per 1,000 deliveries on the API path.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

use super::egress::{KEY, Sink, TOKEN, body, raw_http, sink};
use super::process::{Service, Usage};

pub struct Scale {
    pub endpoints: usize,
    /// Messages through `POST /v1/messages`.
    pub messages: usize,
    /// Concurrent API clients, and the API endpoint's `max_in_flight`.
    pub concurrency: usize,
}

fn config(nats_url: &str, concurrency: usize) -> String {
    format!(
        "[nats]\nurl = \"{nats_url}\"\n\n[egress]\napi_token = \"{TOKEN}\"\nencryption_key = \"{KEY}\"\n\
         allow_private_networks = true\nstart = \"new\"\ndefault_max_in_flight = {concurrency}\n"
    )
}

/// An HTTP client for the API.
fn api_client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(64))
        .timeout(Duration::from_secs(60))
        .build()?)
}

async fn post(
    client: &reqwest::Client,
    url: String,
    body: serde_json::Value,
    status: u16,
) -> anyhow::Result<()> {
    let response = client
        .post(url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == status,
        "{}: {}",
        response.status(),
        response.text().await?
    );
    Ok(())
}

pub async fn run(scale: Scale) -> anyhow::Result<String> {
    anyhow::ensure!(scale.endpoints > 0, "--endpoints must be more than 0");
    let nats = tokio::task::spawn_blocking(hookbus_testkit::NatsServer::start).await?;
    let nats_pid = nats
        .pid()
        .ok_or_else(|| anyhow::anyhow!("nats-server has no pid"))?;
    let version = hookbus_testkit::version_of(nats.binary())
        .map(|(a, b)| format!("nats-server {a}.{b}"))
        .unwrap_or_default();
    let config = config(&nats.url(), scale.concurrency);
    hookbus_service::install_crypto_provider();
    let client = api_client(scale.concurrency)?;

    let egress = Service::start("egress", &config).await?;
    let api = format!("http://{}", egress.addr);
    let fan = sink(Duration::ZERO).await?;
    let direct = sink(Duration::ZERO).await?;
    post(
        &client,
        format!("{api}/v1/endpoints"),
        json!({"url": direct.url, "event_types": ["api.path"], "max_in_flight": scale.concurrency}),
        201,
    )
    .await?;
    let created = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..scale.endpoints)
        .map(|i| {
            let (client, api, url, created) =
                (client.clone(), api.clone(), fan.url.clone(), created.clone());
            async move {
                post(
                    &client,
                    format!("{api}/v1/endpoints"),
                    json!({"url": url, "event_types": ["fan.out"], "description": format!("bench {i}")}),
                    201,
                )
                .await?;
                let n = created.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 10_000 == 0 {
                    eprintln!("{n} endpoints created");
                }
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let create_rate = scale.endpoints as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "created {} endpoints at {create_rate:.0}/s",
        scale.endpoints
    );

    let fanout = fan_out(&client, &api, &fan, scale.endpoints).await?;
    eprintln!(
        "fan-out to {} endpoints: {fanout:.0} deliveries/s",
        scale.endpoints
    );
    let first = egress.usage()?;
    egress.stop().await?;

    let restarted = Instant::now();
    let egress = Service::start("egress", &config).await?;
    let ready = restarted.elapsed();
    eprintln!("restart to ready: {:.2} s", ready.as_secs_f64());
    let api = format!("http://{}", egress.addr);
    let consumers = consumer_count(&nats.url()).await?;

    let before = (egress.usage()?, Usage::of(nats_pid).unwrap_or_default());
    let path = api_path(&client, &api, &direct, scale.messages, scale.concurrency).await?;
    let after = (egress.usage()?, Usage::of(nats_pid).unwrap_or_default());
    let raw = raw_http(&client, &direct, scale.messages, scale.concurrency).await?;
    let per_1000 = |(b, a): (Usage, Usage)| (a.cpu - b.cpu) * 1000.0 / scale.messages as f64;
    let egress_cpu = per_1000((before.0, after.0));
    let nats_cpu = per_1000((before.1, after.1));
    let (egress_peak, restarted_peak) = (first.peak_kib, after.0.peak_kib);
    let nats_peak = Usage::of(nats_pid).unwrap_or_default().peak_kib;
    egress.stop().await?;
    drop(nats);

    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut out = String::new();
    writeln!(
        out,
        "### `hookbus-bench egress --endpoints {}`\n",
        scale.endpoints
    )?;
    writeln!(
        out,
        "the egress as its own process · {} · {} cores · API path: {} messages from {} clients\n",
        version,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        scale.messages,
        scale.concurrency
    )?;
    writeln!(out, "| figure | value |")?;
    writeln!(out, "|---|---:|")?;
    writeln!(
        out,
        "| endpoints created through the API | {create_rate:.0}/s |"
    )?;
    writeln!(
        out,
        "| fan-out of one event to all {} | {fanout:.0} deliveries/s |",
        scale.endpoints
    )?;
    writeln!(
        out,
        "| egress restart to ready | {:.2} s |",
        ready.as_secs_f64()
    )?;
    writeln!(out, "| JetStream consumers | {consumers} |")?;
    writeln!(
        out,
        "| egress peak RSS: creates and fan-out | {:.0} MiB |",
        mib(egress_peak)
    )?;
    writeln!(
        out,
        "| egress peak RSS: restarted, then the API path | {:.0} MiB |",
        mib(restarted_peak)
    )?;
    writeln!(out, "| nats-server peak RSS | {:.0} MiB |", mib(nats_peak))?;
    writeln!(out, "| API path | {path:.0} deliveries/s |")?;
    writeln!(
        out,
        "| raw HTTP POSTs at the same concurrency | {raw:.0}/s |"
    )?;
    writeln!(out, "| API path / raw | {:.3} |", path / raw)?;
    writeln!(
        out,
        "| CPU-s per 1,000 deliveries on the API path: egress + nats-server | {:.3} ({egress_cpu:.3} + {nats_cpu:.3}) |",
        egress_cpu + nats_cpu
    )?;
    Ok(out)
}

/// One event to every endpoint; deliveries per second, from the publish to the last request.
async fn fan_out(
    client: &reqwest::Client,
    api: &str,
    fan: &Sink,
    endpoints: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    post(
        client,
        format!("{api}/v1/messages"),
        json!({"event_type": "fan.out", "payload": {"fan": "out"}}),
        202,
    )
    .await?;
    fan.reach(endpoints as u64, Duration::from_secs(1800))
        .await?;
    Ok(endpoints as f64 / started.elapsed().as_secs_f64())
}

/// `n` messages through `POST /v1/messages`, `concurrency` at a time, to the one endpoint of
/// `api.path`; deliveries per second until the sink has them all.
async fn api_path(
    client: &reqwest::Client,
    api: &str,
    sink: &Sink,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let target = sink.count.load(Ordering::Relaxed) + n as u64;
    let started = Instant::now();
    let sent: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let payload: serde_json::Value = serde_json::from_slice(&body(i)).unwrap_or_default();
            post(
                client,
                format!("{api}/v1/messages"),
                json!({"event_type": "api.path", "payload": payload}),
                202,
            )
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    sent.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    sink.reach(target, Duration::from_secs(600)).await?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Consumers in the JetStream account.
async fn consumer_count(nats_url: &str) -> anyhow::Result<usize> {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await?);
    Ok(js.query_account().await?.consumers)
}
