//! Free ports for servers a test is about to start.
//!
//! A port found free by binding `127.0.0.1:0` comes from the kernel's ephemeral range, and the
//! kernel may hand it out again (to another test's `bind(0)`, or as a client's source port) before
//! the server that was meant to have it binds it: "Address already in use". So ports are picked
//! below that range, where the kernel never assigns one by itself, and claimed by a file in the
//! temporary directory, so that two test processes running at once never pick the same one.

use std::collections::hash_map::RandomState;
use std::fs::OpenOptions;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Ports below this are left to the machine's own services.
const LOWEST: u16 = 10_000;

/// How long a claim keeps a port from other test processes. Long enough for a test that stops a
/// server and starts it again on the same port; a stale claim is taken over after it.
const CLAIM_LIFETIME: Duration = Duration::from_secs(600);

/// A TCP port on 127.0.0.1 that nothing listens on and no other test process has picked.
pub fn free_port() -> u16 {
    let highest = ephemeral_start().saturating_sub(1);
    if highest < LOWEST + 1_000 {
        return kernel_port();
    }
    let claims = std::env::temp_dir().join("hookbus-test-ports");
    std::fs::create_dir_all(&claims).expect("create the port claims directory");
    let span = u64::from(highest - LOWEST);
    for _ in 0..1_000 {
        let port = LOWEST + (random() % span) as u16;
        if claim(&claims.join(port.to_string())) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    kernel_port()
}

/// The first port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Creates the claim file, or takes over one older than [`CLAIM_LIFETIME`].
fn claim(path: &Path) -> bool {
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(_) => true,
        Err(_) => {
            let stale = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| SystemTime::now().duration_since(modified).ok())
                .is_some_and(|age| age > CLAIM_LIFETIME);
            // Touching it again renews the claim for this process.
            stale
                && OpenOptions::new()
                    .write(true)
                    .open(path)
                    .is_ok_and(|f| f.set_modified(SystemTime::now()).is_ok())
        }
    }
}

fn kernel_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A random number from the standard library's per-process hash keys, the clock and a counter.
fn random() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        assert!(
            ports
                .iter()
                .all(|p| (LOWEST..ephemeral_start()).contains(p)),
            "{ports:?}"
        );
    }
}
