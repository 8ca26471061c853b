//! What the process tests of this package share: service processes that stop cleanly and show
//! their log when a test fails, and `deploy/docker-compose.yml` read as a user's docker would.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookbus_signature::{Outgoing, Scheme, sign_as_provider};
use serde_json::{Value, json};

/// A child process: stopped with SIGINT when dropped (killed if it does not stop), its output kept
/// in a file whose tail is printed when the test is failing.
pub struct Process {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `command`, its stdout and stderr going to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, mut command: Command, log_dir: &Path) -> Self {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = command
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, signal: &str) {
        Command::new("kill")
            .args([&format!("-{signal}"), &self.id().to_string()])
            .status()
            .unwrap();
    }

    /// Sends `signal` to the process group the process leads, as a terminal's Ctrl-C does.
    pub fn signal_group(&self, signal: &str) {
        Command::new("kill")
            .args([&format!("-{signal}"), "--", &format!("-{}", self.id())])
            .status()
            .unwrap();
    }

    /// Sends `signal` and waits for the exit status (at most `within`).
    pub fn stop_with(&mut self, signal: &str, within: Duration) -> ExitStatus {
        self.signal(signal);
        self.wait_exit(&format!("SIG{signal}"), within)
    }

    /// The exit status, which must come within `within` of `what`.
    pub fn wait_exit(&mut self, what: &str, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not stop within {within:?} of {what}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT, then the exit status within 20 s.
    pub fn stop(mut self) -> ExitStatus {
        self.stop_with("INT", Duration::from_secs(20))
    }

    /// The exit status, if the process has already ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let kept = std::env::temp_dir().join(format!("hookbus-test-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&kept);
            let copy = kept.join(self.log.file_name().unwrap());
            let _ = std::fs::copy(&self.log, &copy);
            eprintln!("the whole log of {} is in {}", self.name, copy.display());
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of {} ---", self.name);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A binary of the workspace, next to this package's own (the test command builds them all).
pub fn workspace_binary(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_hookbus"))
        .parent()
        .unwrap()
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: build the whole workspace first (scripts/test does)",
        path.display()
    );
    path
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One service of the compose file.
#[derive(Debug, Clone, Default)]
pub struct ComposeService {
    pub name: String,
    /// Built from this repository (a hookbus service), not a third-party image.
    pub built_here: bool,
    pub command: Vec<String>,
    /// Interpolated as compose does when none of the variables is set.
    pub environment: BTreeMap<String, String>,
    pub healthcheck: Vec<String>,
    pub depends_on: Vec<String>,
}

impl ComposeService {
    /// The URL path and port its healthcheck asks (`curl … http://127.0.0.1:PORT/PATH`).
    pub fn health_route(&self) -> (u16, String) {
        let url = self
            .healthcheck
            .iter()
            .find(|part| part.starts_with("http://"))
            .unwrap_or_else(|| panic!("{}: no URL in its healthcheck", self.name));
        let rest = url.trim_start_matches("http://");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let port = authority
            .rsplit_once(':')
            .expect("a port")
            .1
            .parse()
            .unwrap();
        (port, format!("/{path}"))
    }

    /// The section of the configuration the service reads (`hookbus-ingress` → `ingress`).
    pub fn section(&self) -> &str {
        self.command[0].trim_start_matches("hookbus-")
    }
}

/// `deploy/docker-compose.yml`, with merge keys applied and values interpolated.
pub fn compose() -> BTreeMap<String, ComposeService> {
    let path = repo_root().join("deploy/docker-compose.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
    value.apply_merge().unwrap();
    let services = value["services"].as_mapping().expect("a services map");
    let strings = |value: &serde_yaml_ng::Value| -> Vec<String> {
        match value {
            serde_yaml_ng::Value::Sequence(items) => items
                .iter()
                .map(|i| i.as_str().expect("a string").to_owned())
                .collect(),
            serde_yaml_ng::Value::Mapping(map) => map
                .keys()
                .map(|k| k.as_str().expect("a name").to_owned())
                .collect(),
            serde_yaml_ng::Value::Null => Vec::new(),
            other => panic!("expected a list, got {other:?}"),
        }
    };
    services
        .iter()
        .map(|(name, service)| {
            let name = name.as_str().unwrap().to_owned();
            let environment = match &service["environment"] {
                serde_yaml_ng::Value::Mapping(map) => map
                    .iter()
                    .map(|(k, v)| {
                        let value = match v {
                            serde_yaml_ng::Value::String(s) => s.clone(),
                            serde_yaml_ng::Value::Null => String::new(),
                            other => serde_yaml_ng::to_string(other).unwrap().trim().to_owned(),
                        };
                        (k.as_str().unwrap().to_owned(), interpolate(&value))
                    })
                    .collect(),
                serde_yaml_ng::Value::Null => BTreeMap::new(),
                other => panic!("{name}: environment must be a map, got {other:?}"),
            };
            let service = ComposeService {
                built_here: !service["build"].is_null(),
                command: strings(&service["command"]),
                environment,
                healthcheck: strings(&service["healthcheck"]["test"]),
                depends_on: strings(&service["depends_on"]),
                name: name.clone(),
            };
            (name, service)
        })
        .collect()
}

/// Compose's `${VAR:-default}` and `${VAR}` with no variable set: the default, or nothing.
pub fn interpolate(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("a closing brace") + start;
        let inner = &rest[start + 2..end];
        if let Some((_, default)) = inner.split_once(":-") {
            out.push_str(default);
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// hookbus services as processes, each its compose container's binary and environment with what
/// points at the compose network replaced: the broker, the listen address (a free port), a fresh
/// PostgreSQL database for a `DATABASE_URL`, and `extra` (such as the SMTP server). The egress may
/// reach private networks: the tests' subscribers run on 127.0.0.1.
pub struct Stack {
    pub services: BTreeMap<String, (Command, Process)>,
    urls: BTreeMap<String, String>,
    /// Each service's compose healthcheck route, on the port the test gave it.
    health: BTreeMap<String, String>,
    databases: Vec<String>,
    logs: PathBuf,
}

impl Stack {
    /// Starts `names` and waits until each one's compose healthcheck route answers 200.
    pub async fn start(
        compose: &BTreeMap<String, ComposeService>,
        names: &[&str],
        nats_url: &str,
        extra: &[(&str, &str)],
        logs: &Path,
    ) -> Self {
        let mut stack = Self {
            services: BTreeMap::new(),
            urls: BTreeMap::new(),
            health: BTreeMap::new(),
            databases: Vec::new(),
            logs: logs.to_owned(),
        };
        for name in names {
            let service = &compose[*name];
            let port = hookbus_testkit::free_port();
            let section = service.section().to_ascii_uppercase();
            let mut command = Command::new(workspace_binary(&service.command[0]));
            command
                .env_clear()
                .envs(&service.environment)
                .env("NATS_URL", nats_url)
                .env(
                    format!("HOOKBUS_{section}__LISTEN"),
                    format!("127.0.0.1:{port}"),
                );
            if service.environment.contains_key("DATABASE_URL") {
                let database = hookbus_store::testing::fresh_postgres_database()
                    .await
                    .expect("a PostgreSQL server (HOOKBUS_TEST_POSTGRES)");
                command.env("DATABASE_URL", &database);
                stack.databases.push(database);
            }
            if *name == "egress" {
                command.env("HOOKBUS_EGRESS__ALLOW_PRIVATE_NETWORKS", "true");
            }
            for (key, value) in extra {
                let own = key.starts_with(&format!("HOOKBUS_{section}__"));
                if own || !key.starts_with("HOOKBUS_") || key.starts_with("HOOKBUS_NATS__") {
                    command.env(key, value);
                }
            }
            let url = format!("http://127.0.0.1:{port}");
            let health = format!("{url}{}", service.health_route().1);
            stack.health.insert(name.to_string(), health);
            stack.urls.insert(name.to_string(), url);
            let process = Process::spawn(name, clone_command(&command), logs);
            stack.services.insert(name.to_string(), (command, process));
        }
        for name in names {
            stack.wait_healthy(name).await;
        }
        stack
    }

    /// Waits until `name`'s compose healthcheck route answers 200.
    async fn wait_healthy(&self, name: &str) {
        let url = &self.health[name];
        let http = http_client();
        wait_for(&format!("{name}'s healthcheck {url}"), async || {
            let r = http.get(url).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    pub fn url(&self, name: &str) -> String {
        self.urls[name].clone()
    }

    /// Stops `name` with `signal`, starts it again on the same port and database, and waits
    /// until it is healthy; the exit status of the stopped process.
    pub async fn restart(&mut self, name: &str, signal: &str) -> ExitStatus {
        let (command, process) = self.services.get_mut(name).expect("a service");
        let status = process.stop_with(signal, Duration::from_secs(30));
        *process = Process::spawn(name, clone_command(command), &self.logs);
        self.wait_healthy(name).await;
        status
    }

    /// Stops every service with SIGINT (each must exit 0) and drops the databases.
    pub async fn stop(self) {
        for (name, (_, process)) in self.services {
            let status = process.stop();
            assert!(status.success(), "{name} exited with {status:?}");
        }
        for database in self.databases {
            hookbus_store::testing::drop_postgres_database(&database)
                .await
                .unwrap();
        }
    }
}

/// A copy of `command` (program, arguments, environment) to spawn again.
fn clone_command(command: &Command) -> Command {
    let mut copy = Command::new(command.get_program());
    copy.args(command.get_args()).env_clear();
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            copy.env(key, value);
        }
    }
    copy
}

/// Polls `check` until it gives a value (at most 30 s).
pub async fn wait_for<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    hookbus_testkit::wait_for(Duration::from_secs(30), what, check).await
}

/// Every service of the compose file, as the process tests start them.
pub const SERVICES: &[&str] = &[
    "ingress",
    "inventory",
    "notifications",
    "analytics",
    "egress",
];

/// The durable consumers of the services, which must exist before events that start at `new`.
pub const CONSUMERS: &[&str] = &[
    "inventory",
    "notifications",
    "analytics",
    "egress-dispatcher",
];

pub async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

/// A Shopify webhook, signed as Shopify signs it, to the ingress's `shop` source: the status and
/// the JSON answer.
pub async fn post_shopify(
    (http, secret): (&reqwest::Client, &str),
    ingress: &str,
    topic: &str,
    id: &str,
    body: &Value,
) -> Result<(u16, Value), reqwest::Error> {
    let body = serde_json::to_vec(body).unwrap();
    let headers = sign_as_provider(
        &Scheme::Shopify,
        secret,
        Outgoing {
            body: &body,
            delivery_id: id,
            event_type: topic,
            timestamp: 0,
        },
    );
    let mut request = http
        .post(format!("{ingress}/webhooks/shop"))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or_default()))
}

/// A Shopify `orders/create` body with one line.
pub fn order(
    id: u64,
    email: &str,
    (sku, quantity): (&str, i64),
    price: &str,
    total: &str,
) -> Value {
    json!({
        "id": id,
        "email": email,
        "currency": "EUR",
        "total_price": total,
        "created_at": "2026-11-28T10:00:00Z",
        "line_items": [{"sku": sku, "quantity": quantity, "price": price}],
    })
}

pub type Seen = Arc<Mutex<Vec<(http::HeaderMap, bytes::Bytes)>>>;

/// A subscriber endpoint on 127.0.0.1 that records what it gets and answers 200.
pub async fn receiver() -> (String, Seen) {
    let seen: Seen = Seen::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |headers: http::HeaderMap, body: bytes::Bytes| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push((headers, body));
            "ok"
        }
    });
    (format!("{}/hook", serve(app).await), seen)
}

/// Serves `app` on a free port of 127.0.0.1 for the rest of the test: its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// An HTTP client for the test (reqwest needs the process's rustls provider first).
pub fn http_client() -> reqwest::Client {
    hookbus_service::install_crypto_provider();
    reqwest::Client::new()
}

/// What the compose file gives a caller of the system: the `shop` source's secret and the API
/// tokens of the inventory and the egress.
pub struct Credentials {
    pub shop_secret: String,
    pub inventory_token: String,
    pub egress_token: String,
}

pub fn credentials(compose: &BTreeMap<String, ComposeService>) -> Credentials {
    let env = |service: &str, key: &str| compose[service].environment[key].clone();
    let secrets: Vec<String> =
        serde_json::from_str(&env("ingress", "HOOKBUS_INGRESS__SOURCES__SHOP__SECRETS")).unwrap();
    Credentials {
        shop_secret: secrets[0].clone(),
        inventory_token: env("inventory", "HOOKBUS_INVENTORY__API_TOKEN"),
        egress_token: env("egress", "HOOKBUS_EGRESS__API_TOKEN"),
    }
}

/// A client of the servers `nats_url` lists (comma separated, as `NATS_URL` takes them).
pub async fn nats_client(nats_url: &str) -> async_nats::Client {
    let servers: Vec<&str> = nats_url.split(',').collect();
    async_nats::connect(servers.as_slice()).await.unwrap()
}

/// Waits until the durable consumers `names` exist on `EVENTS` (they start at `new`: events
/// published before would not reach them).
pub async fn wait_for_consumers(nats_url: &str, names: &[&str]) {
    let client = nats_client(nats_url).await;
    let js = async_nats::jetstream::new(client);
    for name in names {
        wait_for(&format!("consumer {name}"), async || {
            let stream = js.get_stream("EVENTS").await.ok()?;
            stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(name)
                .await
                .ok()
        })
        .await;
    }
}

/// Sets the stock of `SKU-0` … `SKU-<skus - 1>` to `level` through the inventory API.
pub async fn set_stock(
    http: &reqwest::Client,
    (inventory, token): (&str, &str),
    skus: u64,
    level: i64,
) {
    for sku in 0..skus {
        let put = http
            .put(format!("{inventory}/v1/stock/SKU-{sku}"))
            .bearer_auth(token)
            .json(&json!({"level": level}))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
    }
}

/// A receiver subscribed through the egress API to the `shop` source's orders.
pub async fn subscribe_to_orders(http: &reqwest::Client, (egress, token): (&str, &str)) -> Seen {
    let (subscriber, seen) = receiver().await;
    let created = http
        .post(format!("{egress}/v1/endpoints"))
        .bearer_auth(token)
        .json(&json!({"url": subscriber, "event_types": ["orders.*"], "sources": ["shop"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    seen
}

/// Sends order `id` (one unit of `SKU-<id % skus>`, 1.00 EUR, to `customer-<id>@example.com`) to
/// the ingress until it is answered 200, as a provider retries; the number of other answers.
pub async fn send_until_stored(
    (http, secret): (&reqwest::Client, &str),
    ingress: &str,
    id: u64,
    skus: u64,
) -> usize {
    let sku = format!("SKU-{}", id % skus);
    let body = order(
        id,
        &format!("customer-{id}@example.com"),
        (&sku, 1),
        "1.00",
        "1.00",
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut refused = 0;
    loop {
        let sent = post_shopify(
            (http, secret),
            ingress,
            "orders/create",
            &format!("order-{id}"),
            &body,
        )
        .await;
        if matches!(sent, Ok((200, _))) {
            return refused;
        }
        refused += 1;
        assert!(
            Instant::now() < deadline,
            "order {id} never stored: {sent:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the stock of each SKU has fallen by exactly its `orders` (as `send_until_stored`
/// made them) from `start`; a level below that is an order applied twice.
pub async fn expect_stock(
    http: &reqwest::Client,
    inventory: &str,
    orders: &std::collections::BTreeSet<u64>,
    (skus, start): (u64, i64),
) {
    for sku in 0..skus {
        let want = start - orders.iter().filter(|id| *id % skus == sku).count() as i64;
        let url = format!("{inventory}/v1/stock/SKU-{sku}");
        hookbus_testkit::wait_for(
            Duration::from_secs(90),
            &format!("SKU-{sku} at {want}"),
            async || {
                let level = get_json(http, &url).await?["level"].as_i64()?;
                assert!(
                    level >= want,
                    "SKU-{sku} fell below {want}: {level} (an order applied twice)"
                );
                (level == want).then_some(())
            },
        )
        .await;
    }
}

/// Waits until each of `orders` reached the subscriber, and checks that every delivery of an
/// order carried the same `webhook-id`; the number of deliveries.
pub async fn expect_orders_at_subscriber(
    seen: &Seen,
    orders: &std::collections::BTreeSet<u64>,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(90);
    let (count, ids) = loop {
        let seen = seen.lock().unwrap().clone();
        let mut ids: BTreeMap<u64, std::collections::BTreeSet<String>> = BTreeMap::new();
        for (headers, body) in &seen {
            let order: Value = serde_json::from_slice(body).unwrap();
            let webhook = headers["webhook-id"].to_str().unwrap().to_owned();
            ids.entry(order["id"].as_u64().unwrap())
                .or_default()
                .insert(webhook);
        }
        if ids.keys().eq(orders.iter()) {
            break (seen.len(), ids);
        }
        if Instant::now() > deadline {
            let missing: Vec<&u64> = orders.iter().filter(|o| !ids.contains_key(o)).collect();
            panic!(
                "{} of {} orders never reached the subscriber within 90 s: {missing:?}",
                missing.len(),
                orders.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (order, webhooks) in &ids {
        assert_eq!(
            webhooks.len(),
            1,
            "order {order} came with several webhook-ids: {webhooks:?}"
        );
    }
    count
}
