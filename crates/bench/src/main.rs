//! `hookbus-bench …`: each scenario is measured beside its baselines in the same run, and printed
//! with the ratios, as medians of latency and rates over a fixed duration. The services run as
//! their own processes: the `hookbus` binary beside this one (`scripts/bench` builds both).

#![forbid(unsafe_code)]

mod all;
mod console;
mod consumers;
mod e2e;
mod egress;
mod ingress;
mod loadgen;
mod process;
mod scale;
mod stats;

use clap::Parser;

/// The same allocator as the `hookbus` binary: the in-process baselines and services allocate
/// as they do in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "hookbus-bench",
    version,
    about = "Benchmarks that print figures beside a baseline measured in the same run"
)]
struct Cli {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, clap::Subcommand)]
enum Which {
    /// The ingress against raw JetStream publishing and an empty HTTP handler.
    Ingress(ingress::Args),
    /// The inventory on SQLite and Postgres against raw pull-and-ack and the bare consumer runtime.
    Consumers(consumers::Args),
    /// The egress into a local sink (0 ms and 50 ms answers, a fan-out to 1,000 endpoints)
    /// against plain HTTP POSTs at the same concurrency.
    Egress(egress::Args),
    /// The console's pages over 10,000 endpoints and 100,000 attempts, beside the API routes
    /// that read the same pages.
    Console(console::Args),
    /// Webhooks through the ingress to a consumer and the egress: the end-to-end rate against
    /// the ingress alone, latency at fractions of it, CPU and peak memory.
    E2e(e2e::Args),
    /// Every scenario, then the broker-bound ones with `sync_interval: always`; rewrites the
    /// measured section of docs/benchmarks.md.
    All(all::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hookbus_service::install_crypto_provider();
    run(Cli::parse().which).await
}

async fn run(which: Which) -> anyhow::Result<()> {
    let _telemetry = hookbus_telemetry::init("hookbus-bench", &Default::default())?;
    let report = match which {
        Which::Ingress(args) => ingress::run(args).await?,
        Which::Consumers(args) => consumers::run(args).await?,
        Which::Egress(args) => match args.endpoints {
            Some(endpoints) => {
                scale::run(scale::Scale {
                    endpoints,
                    messages: args.messages,
                    concurrency: args.concurrency,
                })
                .await?
            }
            None => egress::run(args).await?,
        },
        Which::E2e(args) => e2e::run(args).await?,
        Which::Console(args) => console::run(args).await?,
        Which::All(args) => all::run(args).await?,
    };
    println!("{report}");
    Ok(())
}

/// The nats-server a bench runs against: `url` when given, else a temporary one it starts (and
/// stops when the returned server is dropped); with its URL and a label naming its version.
async fn nats(
    url: Option<&str>,
) -> anyhow::Result<(Option<hookbus_testkit::NatsServer>, String, String)> {
    Ok(match url {
        Some(url) => (None, url.to_owned(), format!("nats-server at {url}")),
        None => {
            let server = tokio::task::spawn_blocking(hookbus_testkit::NatsServer::start).await?;
            let url = server.url();
            let version = hookbus_testkit::version_of(server.binary())
                .map(|(a, b)| format!("nats-server {a}.{b}"))
                .unwrap_or_default();
            (Some(server), url, version)
        }
    })
}
