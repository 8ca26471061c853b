//! `hookbus dev`: the whole system in one process on embedded defaults, with a demo source in
//! and a demo endpoint out.

mod sink;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use hookbus_config::Loader;
use hookbus_nats_server::NatsServer;
use hookbus_signature::{Outgoing, Scheme, sign_as_provider};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where dev keeps its files (the nats-server store, the demo secret); overrides `dev.data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// The `[dev]` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DevConfig {
    data_dir: PathBuf,
    /// Start a nats-server when nothing answers at `nats.url`.
    embedded_nats: bool,
    /// Where the demo endpoint (a sink that logs what the egress delivers to it) listens.
    sink_listen: std::net::SocketAddr,
}

impl Default for DevConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            embedded_nats: true,
            sink_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8085)),
        }
    }
}

const DEMO_SOURCE: &str = "demo";

pub async fn run(config_path: Option<PathBuf>, args: DevArgs) -> anyhow::Result<()> {
    let path = Loader::path_from_env(config_path);
    let dev: DevConfig = Loader::new(path.as_deref())?.section("dev")?;
    let data_dir = args.data_dir.unwrap_or(dev.data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("create the data directory {}", data_dir.display()))?;
    let kept = |name: &str, make: fn() -> String| kept_file(&data_dir, name, make);
    let secret = kept("demo.secret", || hex::encode(rand::random::<[u8; 24]>()))?;
    let secret_file = data_dir.join("demo.secret");
    let api_token = kept("egress.token", || hex::encode(rand::random::<[u8; 24]>()))?;
    let encryption_key = kept("egress.key", || {
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    })?;
    let endpoint_secret = kept("demo-endpoint.secret", || {
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 24]>());
        format!("whsec_{key}")
    })?;

    // Embedded defaults sit beneath the file and the environment.
    let sqlite = |name: &str| format!("sqlite://{}", data_dir.join(name).display());
    let defaults = format!(
        "[ingress]\nlisten = \"127.0.0.1:8080\"\n\n[ingress.sources.{DEMO_SOURCE}]\nverifier = \"github\"\nsecrets_file = {:?}\n\n\
         [inventory]\nlisten = \"127.0.0.1:8082\"\ndatabase_url = {:?}\n\n\
         [analytics]\nlisten = \"127.0.0.1:8084\"\ndatabase_url = {:?}\n\n\
         [notifications]\nlisten = \"127.0.0.1:8083\"\ndatabase_url = {:?}\n\n\
         [egress]\nlisten = \"127.0.0.1:8081\"\napi_token = {api_token:?}\nencryption_key = {encryption_key:?}\n\
         allowed_subnets = [\"127.0.0.0/8\", \"::1/128\"]\n",
        secret_file.display().to_string(),
        sqlite("inventory.db"),
        sqlite("analytics.db"),
        sqlite("notifications.db"),
    );
    let loader = Loader::new(path.as_deref())?.with_defaults(&defaults);
    let mut config = hookbus_ingress::Config::load(&loader)?;
    let mut inventory = hookbus_inventory::Config::load(&loader)?;
    let mut analytics = hookbus_analytics::Config::load(&loader)?;
    let mut notifications = hookbus_notifications::Config::load(&loader)?;
    let mut egress = hookbus_egress::Config::load(&loader)?;
    let _telemetry = hookbus_telemetry::init("hookbus-dev", &config.telemetry)?;

    let mut nats = None;
    let port = match probe(&config.nats.url).await {
        Probe::Usable => None,
        Probe::Nothing => {
            anyhow::ensure!(
                dev.embedded_nats,
                "nothing answers at {} and dev.embedded_nats is false",
                config.nats.url
            );
            Some(local_port(&config.nats.url).with_context(|| {
                format!(
                    "nothing answers at {} and it is not a local address to start a nats-server on",
                    config.nats.url
                )
            })?)
        }
        // A machine-wide server that is too old (Debian ships 2.9): run our own beside it.
        Probe::TooOld(version) if dev.embedded_nats => {
            let port = hookbus_nats_server::free_port();
            tracing::warn!(
                url = %config.nats.url,
                %version,
                "that nats-server is older than 2.12; starting one of our own on 127.0.0.1:{port}"
            );
            config.nats.url = format!("nats://127.0.0.1:{port}");
            Some(port)
        }
        Probe::TooOld(version) => anyhow::bail!(
            "the nats-server at {} is {version}; hookbus needs 2.12 or newer (or set dev.embedded_nats = true)",
            config.nats.url
        ),
    };
    if let Some(port) = port {
        let store = data_dir.join("nats");
        let server =
            tokio::task::spawn_blocking(move || NatsServer::start_in(&store, port)).await??;
        tracing::info!(binary = %server.binary().display(), port, "started nats-server");
        nats = Some(server);
    }

    inventory.nats = config.nats.clone();
    analytics.nats = config.nats.clone();
    notifications.nats = config.nats.clone();
    egress.nats = config.nats.clone();
    let bind = |addr: std::net::SocketAddr, key: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on {addr} ({key})"))
    };
    let listener = bind(config.service.listen, "ingress.listen").await?;
    let inventory_listener = bind(inventory.service.listen, "inventory.listen").await?;
    let analytics_listener = bind(analytics.service.listen, "analytics.listen").await?;
    let notifications_listener = bind(notifications.service.listen, "notifications.listen").await?;
    let egress_listener = bind(egress.service.listen, "egress.listen").await?;
    let sink_listener = bind(dev.sink_listen, "dev.sink_listen").await?;
    let addrs = Addrs {
        ingress: listener.local_addr()?,
        inventory: inventory_listener.local_addr()?,
        analytics: analytics_listener.local_addr()?,
        notifications: notifications_listener.local_addr()?,
        egress: egress_listener.local_addr()?,
        sink: sink_listener.local_addr()?,
    };
    let api_token = egress
        .service
        .api_token
        .as_ref()
        .map(|t| t.expose_secret().to_owned())
        .unwrap_or_default();
    let nats_url = config.nats.url.clone();

    let shutdown = CancellationToken::new();
    tokio::spawn(hookbus_service::stop_on_signal(shutdown.clone()));
    // Every service in this process; when one stops (an error, or the signal), all stop.
    let mut services = tokio::task::JoinSet::new();
    let stop_all = |result: anyhow::Result<()>, token: CancellationToken| {
        token.cancel();
        result
    };
    let token = shutdown.clone();
    services.spawn(async move {
        let result = hookbus_ingress::run(config, listener, token.clone()).await;
        stop_all(result.map_err(Into::into), token)
    });
    let token = shutdown.clone();
    services.spawn(async move {
        let result = hookbus_inventory::run(inventory, inventory_listener, token.clone()).await;
        stop_all(result.map_err(Into::into), token)
    });
    let token = shutdown.clone();
    services.spawn(async move {
        let result = hookbus_analytics::run(analytics, analytics_listener, token.clone()).await;
        stop_all(result.map_err(Into::into), token)
    });
    let token = shutdown.clone();
    services.spawn(async move {
        let result =
            hookbus_notifications::run(notifications, notifications_listener, token.clone()).await;
        stop_all(result.map_err(Into::into), token)
    });
    let token = shutdown.clone();
    services.spawn(async move {
        let result = hookbus_egress::run(egress, egress_listener, token.clone()).await;
        stop_all(result.map_err(Into::into), token)
    });
    let token = shutdown.clone();
    let sink = sink::router(&endpoint_secret)?;
    services.spawn(async move {
        let result = axum::serve(sink_listener, sink)
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .await;
        stop_all(result.context("the demo endpoint"), token)
    });
    // The banner once the services answer and the demo endpoint is subscribed, so its curl works
    // when printed.
    let ready = async {
        for addr in [
            addrs.ingress,
            addrs.inventory,
            addrs.analytics,
            addrs.notifications,
            addrs.egress,
        ] {
            wait_until_ready(addr).await;
        }
        demo_endpoint(&data_dir, &addrs, &api_token, &endpoint_secret).await
    };
    tokio::select! {
        () = shutdown.cancelled() => {}
        endpoint = ready => match endpoint {
            Ok(endpoint) => print_banner(&nats_url, &addrs, &Demo {
                secret: &secret,
                api_token: &api_token,
                endpoint: &endpoint,
            }, nats.is_some()),
            Err(e) => {
                tracing::error!(error = %e, "cannot subscribe the demo endpoint");
                shutdown.cancel();
            }
        },
    }
    let mut result = Ok(());
    while let Some(stopped) = services.join_next().await {
        if let Err(e) = stopped? {
            tracing::error!(error = %e, "a service stopped with an error");
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    if let Some(mut server) = nats {
        tokio::task::spawn_blocking(move || server.stop()).await?;
        tracing::info!("stopped nats-server");
    }
    result
}

/// Where the services listen.
struct Addrs {
    ingress: std::net::SocketAddr,
    inventory: std::net::SocketAddr,
    analytics: std::net::SocketAddr,
    notifications: std::net::SocketAddr,
    egress: std::net::SocketAddr,
    sink: std::net::SocketAddr,
}

/// What the banner tells about the demo source and endpoint.
struct Demo<'a> {
    secret: &'a str,
    api_token: &'a str,
    endpoint: &'a str,
}

/// The id of the demo endpoint, subscribed through the egress API to every event (but
/// `hookbus.*`) with the kept secret and pointed at the sink; made once, then kept in the data
/// directory and re-pointed at the sink on each start.
async fn demo_endpoint(
    data_dir: &Path,
    addrs: &Addrs,
    token: &str,
    secret: &str,
) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let api = format!("http://{}/v1/endpoints", local(addrs.egress));
    let url = format!("http://{}/", local(addrs.sink));
    let id_file = data_dir.join("demo-endpoint.id");
    if let Ok(id) = std::fs::read_to_string(&id_file) {
        let id = id.trim();
        let patched = http
            .patch(format!("{api}/{id}"))
            .bearer_auth(token)
            .json(&serde_json::json!({"url": url, "disabled": false}))
            .send()
            .await?;
        if patched.status().is_success() {
            return Ok(id.to_owned());
        }
    }
    let created = http
        .post(&api)
        .bearer_auth(token)
        .json(&serde_json::json!({
            "url": url,
            "description": "hookbus dev: the demo endpoint",
            "secret": secret,
        }))
        .send()
        .await?;
    let status = created.status();
    let body: serde_json::Value = created.json().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "the egress answered {status}: {body}");
    let id = body["id"]
        .as_str()
        .context("the egress's answer has no endpoint id")?
        .to_owned();
    std::fs::write(&id_file, &id).with_context(|| format!("write {}", id_file.display()))?;
    Ok(id)
}

/// `addr` as a client reaches it (`0.0.0.0` becomes `127.0.0.1`).
fn local(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// Returns once `GET /readyz` answers 200 (the ingress has connected and provisioned).
pub(crate) async fn wait_until_ready(addr: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            let mut response = Vec::new();
            let asked = stream
                .write_all(b"GET /readyz HTTP/1.1\r\nhost: dev\r\nconnection: close\r\n\r\n")
                .await;
            if asked.is_ok()
                && stream.read_to_end(&mut response).await.is_ok()
                && response.starts_with(b"HTTP/1.1 200")
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The contents of `name` in the data directory, written by `make` the first time.
fn kept_file(data_dir: &Path, name: &str, make: fn() -> String) -> anyhow::Result<String> {
    let path = data_dir.join(name);
    if !path.exists() {
        std::fs::write(&path, make()).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("read {}", path.display()))?
        .trim()
        .to_owned())
}

enum Probe {
    Nothing,
    Usable,
    TooOld(String),
}

/// What answers at the first address of `url`: nothing, a recent enough nats-server, or an old
/// one (read from the `INFO` line a server sends first).
async fn probe(url: &str) -> Probe {
    use tokio::io::AsyncBufReadExt;
    let addr = url
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .trim_start_matches("nats://")
        .trim_start_matches("tls://");
    let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await
    else {
        return Probe::Nothing;
    };
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(stream);
    let _ = tokio::time::timeout(Duration::from_secs(1), reader.read_line(&mut line)).await;
    let version = line
        .strip_prefix("INFO ")
        .and_then(|info| serde_json::from_str::<serde_json::Value>(info).ok())
        .and_then(|info| info["version"].as_str().map(str::to_owned));
    match version {
        Some(version) if !hookbus_bus::supports_version(&version) => Probe::TooOld(version),
        // Anything else that answers is left for the real connection to judge.
        _ => Probe::Usable,
    }
}

/// The port of a `nats://127.0.0.1:PORT` or `nats://localhost:PORT` URL.
fn local_port(url: &str) -> Option<u16> {
    let rest = url.trim().strip_prefix("nats://").unwrap_or(url.trim());
    let (host, port) = rest.rsplit_once(':')?;
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
        .then(|| port.trim_end_matches('/').parse().ok())
        .flatten()
}

fn print_banner(nats_url: &str, addrs: &Addrs, demo: &Demo<'_>, embedded: bool) {
    let body = r#"{"zen":"Design for failure.","hook_id":1}"#;
    let delivery_id = "6f1d4c5e-0000-4000-8000-000000000001";
    let headers = sign_as_provider(
        &Scheme::Github,
        demo.secret,
        Outgoing {
            body: body.as_bytes(),
            delivery_id,
            event_type: "ping",
            timestamp: 0,
        },
    );
    let header_args: String = headers
        .iter()
        .map(|(k, v)| format!(" \\\n  -H '{k}: {v}'"))
        .collect();
    let host = local(addrs.ingress);
    let egress = local(addrs.egress);
    let sink = local(addrs.sink);
    println!(
        "\nhookbus dev is running\n\
         \n  ingress       http://{host}  (POST /webhooks/{{source}}, /healthz, /readyz, /metrics)\
         \n  egress        http://{egress}  (/v1/endpoints, /v1/messages, …; /openapi.json)\
         \n  inventory     http://{}  (GET /v1/stock/{{sku}}, /v1/stock?below=N)\
         \n  analytics     http://{}  (GET /v1/stats/events, /v1/stats/revenue)\
         \n  notifications http://{}  (GET /v1/sent; rules write to the log until configured)\
         \n  nats          {nats_url}{}\
         \n  demo source   {DEMO_SOURCE} (verifier github), secret: {}\
         \n  demo endpoint {} → http://{sink}/ (logs each delivery; GET it for the latest)\
         \n  egress token  {}  (Authorization: Bearer …)\
         \n  console       http://{egress}/console/sign-in  (sign in with the egress token)\
         \n\nSend a signed test webhook (a second send is answered \"duplicate\": true):\n\
         \ncurl -sS -X POST http://{host}/webhooks/{DEMO_SOURCE}{header_args} \\\n  -H 'content-type: application/json' \\\n  --data-raw '{body}'\n\
         \nThe egress delivers it, signed, to the demo endpoint: curl -sS http://{sink}/\n\
         \nCtrl-C stops everything.\n",
        addrs.inventory,
        addrs.analytics,
        addrs.notifications,
        if embedded {
            " (started by hookbus dev, store under the data directory)"
        } else {
            ""
        },
        demo.secret,
        demo.endpoint,
        demo.api_token,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ports_come_from_local_urls_only() {
        assert_eq!(local_port("nats://127.0.0.1:4222"), Some(4222));
        assert_eq!(local_port("nats://localhost:14222"), Some(14222));
        assert_eq!(local_port("nats://nats.internal:4222"), None);
    }
}
