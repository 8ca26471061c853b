//! A service the benchmarks run as its own process, as it is deployed: the `hookbus` binary
//! beside this one, with the service's subcommand and a configuration file, so that its CPU time and peak memory are its
//! own. Read from `/proc`, before it is stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

pub(super) struct Service {
    name: &'static str,
    pub addr: SocketAddr,
    child: tokio::process::Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Starts `hookbus <name>` with `config` (TOML; the service listens on a free port on
    /// 127.0.0.1, set through the environment) and waits until its `/readyz` answers 200.
    pub async fn start(name: &'static str, config: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        // Below the ephemeral range and claimed, so no other process's socket takes it meanwhile.
        let addr = SocketAddr::from(([127, 0, 0, 1], hookbus_testkit::free_port()));
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config)?;
        let log = dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(hookbus_binary()?)
            .arg("--config")
            .arg(&path)
            .arg(name)
            .env(
                format!("HOOKBUS_{}__LISTEN", name.to_uppercase()),
                addr.to_string(),
            )
            .current_dir(dir.path())
            // Only the configuration file says where the broker and the database are.
            .env_remove("NATS_URL")
            .env_remove("DATABASE_URL")
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start hookbus {name}"))?;
        let mut service = Self {
            name,
            addr,
            child,
            log,
            _dir: dir,
        };
        let ready = tokio::time::timeout(Duration::from_secs(30), wait_until_ready(addr));
        tokio::select! {
            ready = ready => if ready.is_err() {
                anyhow::bail!("hookbus {name} was not ready within 30 s:\n{}", service.log_tail());
            },
            exit = service.child.wait() => {
                anyhow::bail!("hookbus {name} exited ({:?}) before it was ready:\n{}", exit?, service.log_tail());
            }
        }
        Ok(service)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Its usage so far.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        self.pid()
            .and_then(Usage::of)
            .with_context(|| format!("hookbus {} is not running", self.name))
    }

    /// SIGTERM, and SIGKILL if it has not stopped within 10 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.pid() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => self.child.kill().await?,
        }
        Ok(())
    }

    /// The last lines the service logged.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// CPU time (user + system, seconds) and peak RSS (`VmHWM`, KiB) of one process.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Usage {
    pub cpu: f64,
    pub peak_kib: u64,
}

impl Usage {
    pub fn of(pid: u32) -> Option<Self> {
        Some(Self {
            cpu: cpu_seconds(pid)?,
            peak_kib: peak_kib(pid)?,
        })
    }
}

/// utime + stime from `/proc/<pid>/stat`, at the usual 100 ticks per second.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// `VmHWM` from `/proc/<pid>/status`.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `hookbus` binary built beside this one (`target/release/hookbus`).
fn hookbus_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let binary = me.with_file_name("hookbus");
    anyhow::ensure!(
        binary.is_file(),
        "{} is missing: the benchmarks run the services from it; build both with scripts/bench, \
         or `cargo build --release -p hookbus -p hookbus-bench`",
        binary.display()
    );
    Ok(binary)
}

/// Returns once `GET /readyz` at `addr` answers 200.
pub(super) async fn wait_until_ready(addr: SocketAddr) {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/readyz");
    loop {
        let ready = client.get(&url).send().await;
        if ready.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn cpu_time_and_peak_memory_are_read_from_proc() {
        let pid = std::process::id();
        let before = cpu_seconds(pid).unwrap();
        // Burn a little CPU: the reading moves (ticks are 10 ms).
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds(pid).unwrap() > before);
        assert!(
            peak_kib(pid).unwrap() > 1024,
            "more than 1 MiB resident at its peak"
        );
        assert!(Usage::of(u32::MAX).is_none());
    }
}
