//! `hookbus`: every service, `hookbus dev` (all of them in one process) and `hookbus dlq`. The
//! benchmarks are their own binary, `hookbus-bench`.

#![forbid(unsafe_code)]

mod dev;
mod dlq;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the request path allocates small, short-lived
/// buffers from every worker thread, where glibc's malloc showed up at ~12% of the CPU profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "hookbus", version, about = "Webhook gateway on NATS JetStream")]
struct Cli {
    /// Configuration file (TOML); also `HOOKBUS_CONFIG`. The environment overrides it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process, with embedded defaults: starts a nats-server under ./data when
    /// nothing answers at NATS_URL, and a demo source whose signed `curl` it prints.
    Dev(dev::DevArgs),
    /// The ingress service (`POST /webhooks/{source}`).
    Ingress,
    /// The inventory service (stock per SKU from order events, `/v1/stock`).
    Inventory,
    /// The analytics service (events per minute, revenue per hour, `/v1/stats/…`).
    Analytics,
    /// The notifications service (rules: email over SMTP, chat webhook, log; `/v1/sent`).
    Notifications,
    /// The egress service (endpoint API, fan-out, signed delivery with retries; port 8081).
    Egress,
    /// Dead letters of every consumer: list, retry, purge.
    Dlq {
        #[command(subcommand)]
        action: dlq::Action,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    hookbus_service::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => dev::run(cli.config, args).await,
            Command::Ingress => Ok(hookbus_ingress::service_main(cli.config).await?),
            Command::Inventory => Ok(hookbus_inventory::service_main(cli.config).await?),
            Command::Analytics => Ok(hookbus_analytics::service_main(cli.config).await?),
            Command::Notifications => Ok(hookbus_notifications::service_main(cli.config).await?),
            Command::Egress => Ok(hookbus_egress::service_main(cli.config).await?),
            Command::Dlq { action } => dlq::run(cli.config, action).await,
        }
    })
}
