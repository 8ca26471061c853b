//! `hookbus dlq list|retry|purge`: every consumer's dead letters.

use std::path::PathBuf;

use anyhow::Context;
use hookbus_bus::NatsConfig;
use hookbus_bus::dlq;
use hookbus_config::Loader;

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// List dead letters, oldest first.
    List {
        /// Only this consumer's.
        #[arg(long)]
        consumer: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Publish dead letters again on their original subjects (same event id, fresh message id),
    /// then remove them from the DLQ.
    Retry {
        #[arg(long)]
        consumer: Option<String>,
        /// DLQ sequences to retry; all (of the consumer) when none are given.
        sequences: Vec<u64>,
    },
    /// Delete dead letters without retrying them.
    Purge {
        #[arg(long)]
        consumer: Option<String>,
        /// Confirm: without it nothing is deleted.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(config_path: Option<PathBuf>, action: Action) -> anyhow::Result<()> {
    let loader = Loader::new(Loader::path_from_env(config_path).as_deref())?;
    let nats: NatsConfig = loader.section("nats")?;
    let client = hookbus_bus::connect(&nats, "hookbus-dlq").await?;
    let js = async_nats::jetstream::new(client);
    match action {
        Action::List { consumer, limit } => {
            let letters = dlq::list(&js, consumer.as_deref(), limit)
                .await
                .context("read the DLQ stream")?;
            println!(
                "{:>8}  {:<20} {:<40} {:>8}  {:<36}  reason",
                "seq", "consumer", "subject", "attempts", "event id"
            );
            for l in &letters {
                println!(
                    "{:>8}  {:<20} {:<40} {:>8}  {:<36}  {}",
                    l.sequence,
                    l.consumer,
                    l.subject,
                    l.attempts,
                    l.event_id.as_deref().unwrap_or("-"),
                    l.reason
                );
            }
            println!("{} dead letter(s)", letters.len());
        }
        Action::Retry {
            consumer,
            sequences,
        } => {
            let letters = dlq::list(&js, consumer.as_deref(), usize::MAX).await?;
            let mut retried = 0;
            for letter in letters
                .iter()
                .filter(|l| sequences.is_empty() || sequences.contains(&l.sequence))
            {
                dlq::retry(&js, letter)
                    .await
                    .with_context(|| format!("retry DLQ message {}", letter.sequence))?;
                retried += 1;
            }
            println!("retried {retried} dead letter(s)");
        }
        Action::Purge { consumer, yes } => {
            anyhow::ensure!(
                yes,
                "purge deletes dead letters for good; add --yes to confirm"
            );
            let purged = dlq::purge(&js, consumer.as_deref()).await?;
            println!("purged {purged} dead letter(s)");
        }
    }
    Ok(())
}
