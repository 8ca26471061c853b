//! `hookbus-bench all`: every scenario with its default settings, each beside its baselines, then
//! the broker-bound ones again against a nats-server that syncs every write to disk
//! (`sync_interval: always`). The reports replace the part of `docs/benchmarks.md` between its
//! two markers; the analysis around them is left alone.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The page whose measured section is rewritten.
    #[arg(long, default_value = "docs/benchmarks.md")]
    doc: PathBuf,
    /// Print the reports only; leave the page as it is.
    #[arg(long)]
    no_write: bool,
}

pub const BEGIN: &str = "<!-- hookbus-bench all: begin -->";
pub const END: &str = "<!-- hookbus-bench all: end -->";

/// A scenario's arguments as its command line would give them.
#[derive(Parser)]
struct Given<A: clap::Args> {
    #[command(flatten)]
    args: A,
}

fn given<A: clap::Args + clap::FromArgMatches>(line: &[&str]) -> anyhow::Result<A> {
    Ok(Given::<A>::try_parse_from(std::iter::once("bench").chain(line.iter().copied()))?.args)
}

pub async fn run(args: Args) -> anyhow::Result<String> {
    if !args.no_write {
        // Fail before spending a quarter of an hour, not after.
        let page = std::fs::read_to_string(&args.doc)
            .map_err(|e| anyhow::anyhow!("read {}: {e}", args.doc.display()))?;
        splice(&page, "")?;
    }
    let started = Instant::now();
    let mut out = String::new();

    eprintln!("bench all: ingress");
    out.push_str(&super::ingress::run(given(&[])?).await?);
    out.push('\n');
    eprintln!("bench all: consumers");
    out.push_str(&super::consumers::run(given(&[])?).await?);
    out.push('\n');
    eprintln!("bench all: egress");
    out.push_str(&super::egress::run(given(&[])?).await?);
    out.push('\n');
    eprintln!("bench all: e2e");
    out.push_str(&super::e2e::run(given(&[])?).await?);
    out.push('\n');

    // The same broker-bound scenarios, each on a new server that syncs every write (a server
    // shared between them kept the egress bench's 1,000 endpoints, whose workers then ran
    // during the next scenario).
    writeln!(
        out,
        "\n### With `sync_interval: always`\n\nThe same scenarios, each against a new nats-server \
         whose JetStream syncs every write to disk before it acknowledges it (see \
         [operations.md](operations.md) for the trade-off).\n"
    )?;
    // The end to end run gets a smaller load: every acknowledgement is synced too, and a
    // consumer's backlog from a 5 s closed-loop run at 64 connections did not drain within the
    // bench's two minutes.
    let e2e_load = ["--duration", "500ms", "--concurrency", "8"];
    for (name, extra) in [
        ("ingress", &[][..]),
        ("egress", &[][..]),
        ("e2e", &e2e_load[..]),
    ] {
        eprintln!("bench all: {name}, sync_interval always");
        let server = tokio::task::spawn_blocking(|| {
            hookbus_testkit::NatsServer::start_with_jetstream("sync_interval: always")
        })
        .await?;
        let url = server.url();
        let pid = server.pid().map(|p| p.to_string());
        let mut line = vec!["--nats-url", url.as_str()];
        if let ("e2e", Some(pid)) = (name, &pid) {
            line.extend(["--nats-pid", pid.as_str()]);
        }
        line.extend_from_slice(extra);
        let report = match name {
            "ingress" => super::ingress::run(given(&line)?).await?,
            "egress" => super::egress::run(given(&line)?).await?,
            _ => super::e2e::run(given(&line)?).await?,
        };
        // The reports name a server they did not start by its URL; name it by what matters.
        out.push_str(&report.replace(
            &format!("nats-server at {url}"),
            "nats-server with `sync_interval: always`",
        ));
        out.push('\n');
    }

    let took = started.elapsed();
    let machine = format!(
        "{} cores ({})",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model().unwrap_or_else(|| "CPU model unknown".into())
    );
    let date = time::OffsetDateTime::now_utc().date();
    let section = format!(
        "Measured {date} on {machine} by `hookbus-bench all` in {:.1} min. Each table is the \
         median round of its scenario; every figure stands beside the baseline measured in the \
         same run.\n\n{out}",
        took.as_secs_f64() / 60.0
    );
    if !args.no_write {
        let page = std::fs::read_to_string(&args.doc)?;
        std::fs::write(&args.doc, splice(&page, &section)?)?;
        eprintln!("bench all: wrote {}", args.doc.display());
    }
    Ok(section)
}

/// `page` with what lies between the markers replaced by `section`.
fn splice(page: &str, section: &str) -> anyhow::Result<String> {
    let (Some(begin), Some(end)) = (page.find(BEGIN), page.find(END)) else {
        anyhow::bail!("the page has no {BEGIN} … {END} markers to write between");
    };
    anyhow::ensure!(begin < end, "{END} comes before {BEGIN}");
    Ok(format!(
        "{}\n\n{}\n{}",
        &page[..begin + BEGIN.len()],
        section.trim(),
        &page[end..]
    ))
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_between_the_markers_is_replaced_and_the_rest_kept() {
        let page = format!("# B\n\nintro\n\n{BEGIN}\n\nold\n\n{END}\n\n## analysis\n");
        let new = splice(&page, "new table\n").unwrap();
        assert_eq!(
            new,
            format!("# B\n\nintro\n\n{BEGIN}\n\nnew table\n{END}\n\n## analysis\n")
        );
        assert_eq!(splice(&new, "again").unwrap().matches(BEGIN).count(), 1);
        assert!(splice("no markers", "x").is_err());
    }

    #[test]
    fn every_scenario_takes_its_defaults_and_a_nats_url() {
        given::<super::super::ingress::Args>(&["--nats-url", "nats://127.0.0.1:1"]).unwrap();
        given::<super::super::consumers::Args>(&[]).unwrap();
        given::<super::super::egress::Args>(&["--nats-url", "nats://127.0.0.1:1"]).unwrap();
        given::<super::super::e2e::Args>(&["--nats-url", "nats://127.0.0.1:1"]).unwrap();
    }
}
