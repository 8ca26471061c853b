//! `hookbus-bench console`: how long the console's pages take on the server over 10,000
//! endpoints and an endpoint with 100,000 attempts, beside the API route that reads the same
//! page in the same run. The endpoints are created through the API; the attempts are written
//! straight into `EGRESS_ATTEMPTS` as the egress writes them (numbered, on their block's
//! subject), since delivering 100,000 requests would measure the deliveries, not the pages.
//! Each page is requested `--runs` times one after another over a kept-alive connection on
//! 127.0.0.1; the medians and the 99th percentiles are printed.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::StreamExt;
use hookbus_proto::egress::v1::DeliveryAttempt;
use hookbus_proto::egress::v1::delivery_attempt::{State, Status};
use prost::Message;
use reqwest::header;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::egress::{KEY, TOKEN};
use super::stats::RunStats;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Endpoints to create.
    #[arg(long, default_value_t = 10_000)]
    pub endpoints: usize,
    /// Attempts of the one endpoint whose page is read.
    #[arg(long, default_value_t = 100_000)]
    pub attempts: u64,
    /// Requests of each page.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// A nats-server to use instead of a temporary one.
    #[arg(long)]
    pub nats_url: Option<String>,
}

/// An operator's session cookie, signed in through the console's form.
async fn sign_in(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let page = client.get(format!("{base}/console/sign-in")).send().await?;
    let nonce = page
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("no sign-in cookie"))?
        .to_owned();
    let html = page.text().await?;
    let marker = "name=\"csrf\" value=\"";
    let start = html
        .find(marker)
        .ok_or_else(|| anyhow::anyhow!("no CSRF token on the sign-in page"))?
        + marker.len();
    let csrf = html[start..].split('"').next().unwrap_or_default();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("csrf", csrf), ("token", TOKEN)])
        .finish();
    let answer = client
        .post(format!("{base}/console/sign-in"))
        .header(header::COOKIE, nonce)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    answer
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("hookbus_session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("signing in gave no session ({})", answer.status()))
}

/// `runs` sequential GETs of `url`, each checked for 200.
async fn measure(
    client: &reqwest::Client,
    url: &str,
    cookie: Option<&str>,
    runs: usize,
) -> anyhow::Result<RunStats> {
    let mut stats = RunStats::default();
    let started = Instant::now();
    for _ in 0..runs {
        let mut request = client.get(url);
        request = match cookie {
            Some(cookie) => request.header(header::COOKIE, cookie),
            None => request.bearer_auth(TOKEN),
        };
        let at = Instant::now();
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        anyhow::ensure!(status == 200, "{url}: {status}");
        anyhow::ensure!(!body.is_empty(), "{url}: empty");
        stats.ok += 1;
        stats.latencies_us.push(at.elapsed().as_micros() as u32);
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

pub async fn run(args: Args) -> anyhow::Result<String> {
    let (_server, nats_url, version) = super::nats(args.nats_url.as_deref()).await?;
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let config = hookbus_egress::Config {
        nats: hookbus_bus::NatsConfig {
            url: nats_url.clone(),
            ..Default::default()
        },
        telemetry: Default::default(),
        service: hookbus_egress::EgressConfig {
            api_token: Some(TOKEN.into()),
            encryption_key: Some(KEY.into()),
            allow_private_networks: true,
            dispatcher: format!("bench-console-{run_id}"),
            ..Default::default()
        },
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let egress = tokio::spawn(hookbus_egress::run(config, listener, shutdown.clone()));
    hookbus_service::install_crypto_provider();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(60))
        .build()?;
    super::egress::wait_ready(&client, &base).await?;

    // The endpoints: one in ten is a tenant's; URLs that a filter can tell apart.
    let started = Instant::now();
    let created: Vec<anyhow::Result<String>> = futures_util::stream::iter(0..args.endpoints)
        .map(|i| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let mut body = json!({
                    "url": format!("http://127.0.0.1:9/hooks/{i:06}"),
                    "description": format!("bench endpoint {i}"),
                    "event_types": ["bench.*"],
                });
                if i % 10 == 0 {
                    body["tenant"] = json!(format!("tenant-{}", i / 10 % 100));
                }
                let response = client
                    .post(format!("{base}/v1/endpoints"))
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await?;
                anyhow::ensure!(response.status() == 201, "create: {}", response.status());
                let created: serde_json::Value = response.json().await?;
                Ok(created["id"].as_str().unwrap_or_default().to_owned())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let ids = created.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "created {} endpoints in {:.1} s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    let big = ids
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("--endpoints must be more than 0"))?;

    // The attempts of one endpoint, as the egress stores them: numbered from 0, on the subject
    // of their block.
    let started = Instant::now();
    let js = async_nats::jetstream::new(async_nats::connect(&nats_url).await?);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let mut pending = Vec::with_capacity(1024);
    for number in 0..args.attempts {
        let event = uuid::Uuid::now_v7().to_string();
        let failed = number % 7 == 0;
        let record = DeliveryAttempt {
            id: uuid::Uuid::now_v7().to_string(),
            event_id: event.clone(),
            endpoint_id: big.clone(),
            attempt: 1,
            status: if failed {
                Status::Failed
            } else {
                Status::Succeeded
            } as i32,
            response_status: if failed { 500 } else { 200 },
            latency_ms: 3,
            response_body: if failed { "boom".into() } else { "ok".into() },
            attempted_at: Some(hookbus_proto::Timestamp {
                seconds: now,
                nanos: 0,
            }),
            state: if failed {
                State::Failed
            } else {
                State::Delivered
            } as i32,
            event_type: "bench.page".into(),
            stream_sequence: number + 1,
            queued_at: Some(hookbus_proto::Timestamp {
                seconds: now,
                nanos: 0,
            }),
            number,
            ..Default::default()
        };
        pending.push(
            js.publish(
                hookbus_egress::attempt_log::subject(&big, number, &event),
                record.encode_to_vec().into(),
            )
            .await?,
        );
        if pending.len() == 1024 {
            for ack in pending.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in pending.drain(..) {
        ack.await?;
    }
    eprintln!(
        "stored {} attempts in {:.1} s",
        args.attempts,
        started.elapsed().as_secs_f64()
    );

    let cookie = sign_in(&client, &base).await?;
    // A page in the middle of the attempts, by its iterator (`attempts:<block>:<sequence>`).
    let middle = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "attempts:{}:{}",
        args.attempts / 2 / hookbus_egress::attempt_log::BLOCK,
        u64::MAX
    ));
    let pages = [
        (
            "endpoints, first page",
            "/console/endpoints".to_owned(),
            "/v1/endpoints".to_owned(),
        ),
        (
            "endpoints, a URL filter that matches none (scans all)",
            "/console/endpoints?url=no-such-hook".to_owned(),
            "/v1/endpoints?url_contains=no-such-hook".to_owned(),
        ),
        (
            "endpoints of one tenant",
            "/console/endpoints?tenant=tenant-7".to_owned(),
            "/v1/endpoints?tenant=tenant-7".to_owned(),
        ),
        (
            "endpoint with its attempts, newest page",
            format!("/console/endpoints/{big}"),
            format!("/v1/endpoints/{big}/attempts"),
        ),
        (
            "endpoint with its attempts, a middle page",
            format!("/console/endpoints/{big}?iterator={middle}"),
            format!("/v1/endpoints/{big}/attempts?iterator={middle}"),
        ),
        (
            "overview",
            "/console/overview".to_owned(),
            "/v1/dead-letters".to_owned(),
        ),
    ];
    let mut report = String::new();
    writeln!(
        report,
        "## hookbus-bench console ({version}; {} endpoints, {} attempts of one, {} requests of each page)\n",
        ids.len(),
        args.attempts,
        args.runs
    )?;
    writeln!(
        report,
        "| page | console p50 ms | console p99 ms | API p50 ms | API p99 ms | console / API (p50) |"
    )?;
    writeln!(report, "|---|---|---|---|---|---|")?;
    for (name, console, api) in pages {
        let mut page = measure(
            &client,
            &format!("{base}{console}"),
            Some(&cookie),
            args.runs,
        )
        .await?;
        let mut route = measure(&client, &format!("{base}{api}"), None, args.runs).await?;
        let (p50, a50) = (page.quantile_ms(0.5), route.quantile_ms(0.5));
        writeln!(
            report,
            "| {name} | {p50:.2} | {:.2} | {a50:.2} | {:.2} | {:.2} |",
            page.quantile_ms(0.99),
            route.quantile_ms(0.99),
            p50 / a50
        )?;
    }
    writeln!(
        report,
        "\nTarget: every page under 200 ms on the server. The overview's API column is the \
         dead-letter list (the overview has no API twin; it reads the broker's counts)."
    )?;
    shutdown.cancel();
    egress.await??;
    Ok(report)
}
