//! `hookbus bench …`: each scenario is measured beside its baselines in the same run, and printed
//! with the ratios, as medians of latency and rates over a fixed duration.

mod ingress;
mod loadgen;
mod stats;

#[derive(Debug, clap::Subcommand)]
pub enum Which {
    /// The ingress against raw JetStream publishing and an empty HTTP handler.
    Ingress(ingress::Args),
}

pub async fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Ingress(args) => ingress::run(args).await,
    }
}
