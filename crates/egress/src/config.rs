//! `[egress]`, with `[nats]` and `[telemetry]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hookbus_bus::StartPosition;
use hookbus_config::{ConfigError, Loader, Section, ServiceConfig, duration};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::schedule::RetrySchedule;

/// The egress's whole configuration: `[nats]`, `[telemetry]` and `[egress]`.
pub type Config = ServiceConfig<EgressConfig>;

/// A source of the ingress as the console shows it: every setting whose name does not mention a
/// secret (`secrets`, `secrets_file` are left out when it is read).
pub type SourceView = BTreeMap<String, serde_json::Value>;

#[derive(Deserialize, Default)]
#[serde(default)]
struct IngressView {
    sources: BTreeMap<String, SourceView>,
}

impl Section for EgressConfig {
    const NAME: &'static str = "egress";

    fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Reads the secret files, validates, and takes the view of `[ingress.sources]` the
    /// console's sources page shows.
    fn prepare(&mut self, loader: &Loader) -> Result<(), ConfigError> {
        self.sources = loader
            .section::<IngressView>("ingress")
            .map(|ingress| ingress.sources)
            .unwrap_or_default();
        for source in self.sources.values_mut() {
            source.retain(|key, _| !key.contains("secret"));
        }
        self.read_secret_files()?;
        self.validate()
    }
}

/// The `[egress]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    pub listen: SocketAddr,
    /// The ingress's sources, when the egress reads the same file: each one's settings but its
    /// secrets, for the console's sources page. Not a key of `[egress]`.
    #[serde(skip)]
    pub sources: BTreeMap<String, SourceView>,
    /// Bearer token of the management API (at least 16 characters). Set it through
    /// `HOOKBUS_EGRESS__API_TOKEN` or `api_token_file`.
    pub api_token: Option<SecretString>,
    pub api_token_file: Option<PathBuf>,
    /// The key that encrypts endpoint secrets at rest: 32 bytes, base64. Set it through
    /// `HOOKBUS_EGRESS__ENCRYPTION_KEY` or `encryption_key_file`; every replica needs the same.
    pub encryption_key: Option<SecretString>,
    pub encryption_key_file: Option<PathBuf>,
    /// Lets deliveries reach loopback and private addresses (development and tests only).
    pub allow_private_networks: bool,
    /// Ranges opened although they are private (an internal subscriber's network).
    pub allowed_subnets: Vec<IpNet>,
    /// Timeout of one delivery request.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Delays before the 2nd, 3rd, … attempt.
    #[serde(with = "duration::list")]
    pub retry_schedule: Vec<Duration>,
    /// Fraction each retry delay may move either way.
    pub retry_jitter: f64,
    /// An endpoint failing without a success for this long is disabled.
    #[serde(with = "duration")]
    pub disable_after: Duration,
    /// How long the old secret keeps signing after a rotation.
    #[serde(with = "duration")]
    pub rotation_overlap: Duration,
    /// How long delivery status records and attempts are kept.
    #[serde(with = "duration")]
    pub retention: Duration,
    /// Requests in flight at once from this replica, all endpoints together.
    pub max_concurrent_requests: usize,
    /// `max_in_flight` of an endpoint created without one.
    pub default_max_in_flight: u32,
    /// The dispatcher's durable consumer on `EVENTS`.
    pub dispatcher: String,
    /// Where the dispatcher starts when it is created for the first time.
    pub start: StartPosition,
    /// Events the dispatcher fans out at once.
    pub dispatch_concurrency: usize,
    /// Task partitions: each is one durable consumer on `EGRESS_TASKS`, owned by one replica at a
    /// time. Fixed once the stream exists (every endpoint's tasks are on its partition's subject).
    pub partitions: u16,
    /// Tasks of one endpoint that may wait at its owner beyond its `max_in_flight`; more are
    /// parked (acked and stored as a message schedule for when the endpoint has room).
    pub endpoint_buffer: u32,
    /// The server's limit on a partition's delivered, unsettled tasks (its `max_ack_pending`).
    pub partition_max_ack_pending: i64,
    /// A replica that has not shown itself alive for this long loses its partitions to the
    /// others: the lifetime of its entry in `egress_replicas` and its partitions' pin.
    #[serde(with = "duration")]
    pub replica_timeout: Duration,
    /// The web console and the tenant portal (`[egress.console]`).
    pub console: ConsoleConfig,
}

/// `[egress.console]`: the operator console and the tenant portal under `/console`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console and the portal.
    pub enabled: bool,
    /// The egress's address as browsers reach it (`https://hooks.example.com`): the base of
    /// portal links. Absent: the API request's `Host`, over `http`.
    pub public_url: Option<String>,
    /// How long an operator's session lasts.
    #[serde(with = "duration")]
    pub session_ttl: Duration,
    /// How long a portal link may wait to be opened (at most 24 h).
    #[serde(with = "duration")]
    pub portal_link_ttl: Duration,
    /// How long the session a portal link opens lasts.
    #[serde(with = "duration")]
    pub portal_session_ttl: Duration,
    /// Origins that may show the portal in an iframe (CSP `frame-ancestors`), e.g.
    /// `https://app.example.com`. Empty: no page may be framed. A portal session is then sent
    /// in a `SameSite=None; Secure; Partitioned` cookie, so the egress must be served over https.
    pub frame_ancestors: Vec<String>,
    /// The name in the header of every page.
    pub brand_name: String,
    /// The accent colour of buttons and links, `#rrggbb`.
    pub accent_color: String,
    /// A logo (SVG or PNG) shown in the header, read at start-up and served from the egress.
    pub logo_file: Option<PathBuf>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            public_url: None,
            session_ttl: Duration::from_secs(12 * 3600),
            portal_link_ttl: Duration::from_secs(15 * 60),
            portal_session_ttl: Duration::from_secs(3600),
            frame_ancestors: Vec::new(),
            brand_name: "hookbus".into(),
            accent_color: "#2b59c3".into(),
            logo_file: None,
        }
    }
}

impl ConsoleConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("egress.console.{k}");
        if let Some(text) = &self.public_url {
            let url =
                url::Url::parse(text).map_err(|e| ConfigError::invalid(key("public_url"), e))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(ConfigError::invalid(
                    key("public_url"),
                    "must be an http or https URL",
                ));
            }
        }
        for (name, value) in [
            ("session_ttl", self.session_ttl),
            ("portal_link_ttl", self.portal_link_ttl),
            ("portal_session_ttl", self.portal_session_ttl),
        ] {
            if value < Duration::from_secs(60) {
                return Err(ConfigError::invalid(key(name), "must be at least 1m"));
            }
        }
        if self.portal_link_ttl > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::invalid(
                key("portal_link_ttl"),
                "must be at most 24h",
            ));
        }
        for origin in &self.frame_ancestors {
            let parsed = url::Url::parse(origin).ok();
            let is_origin = parsed.as_ref().is_some_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.path() == "/"
                    && u.query().is_none()
                    && !origin.ends_with('/')
            });
            if !is_origin {
                return Err(ConfigError::invalid(
                    key("frame_ancestors"),
                    format!("{origin:?} is not an origin like https://app.example.com"),
                ));
            }
        }
        let hex = self.accent_color.strip_prefix('#').unwrap_or_default();
        if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ConfigError::invalid(key("accent_color"), "must be #rrggbb"));
        }
        if self.brand_name.trim().is_empty() || self.brand_name.len() > 64 {
            return Err(ConfigError::invalid(
                key("brand_name"),
                "must be 1 to 64 characters",
            ));
        }
        if let Some(path) = &self.logo_file {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default();
            if !matches!(ext, "svg" | "png") {
                return Err(ConfigError::invalid(
                    key("logo_file"),
                    "must be an .svg or .png file",
                ));
            }
        }
        Ok(())
    }
}

impl Default for EgressConfig {
    fn default() -> Self {
        let schedule = RetrySchedule::default();
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            sources: BTreeMap::new(),
            api_token: None,
            api_token_file: None,
            encryption_key: None,
            encryption_key_file: None,
            allow_private_networks: false,
            allowed_subnets: Vec::new(),
            request_timeout: Duration::from_secs(15),
            retry_schedule: schedule.delays,
            retry_jitter: schedule.jitter,
            disable_after: Duration::from_secs(5 * 24 * 3600),
            rotation_overlap: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(30 * 24 * 3600),
            max_concurrent_requests: 512,
            default_max_in_flight: 16,
            dispatcher: "egress-dispatcher".into(),
            start: StartPosition::New,
            dispatch_concurrency: 128,
            partitions: 64,
            endpoint_buffer: 8,
            partition_max_ack_pending: 4096,
            replica_timeout: Duration::from_secs(10),
            console: ConsoleConfig::default(),
        }
    }
}

fn read_file(key: &str, path: &PathBuf) -> Result<SecretString, ConfigError> {
    std::fs::read_to_string(path)
        .map(|text| SecretString::from(text.trim().to_owned()))
        .map_err(|e| ConfigError::invalid(key, format!("{}: {e}", path.display())))
}

impl EgressConfig {
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.api_token_file {
            self.api_token = Some(read_file("egress.api_token_file", path)?);
        }
        if let Some(path) = &self.encryption_key_file {
            self.encryption_key = Some(read_file("egress.encryption_key_file", path)?);
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match &self.api_token {
            None => {
                return Err(ConfigError::invalid(
                    "egress.api_token",
                    "is required (the management API's bearer token)",
                ));
            }
            Some(token) if token.expose_secret().len() < 16 => {
                return Err(ConfigError::invalid(
                    "egress.api_token",
                    "must be at least 16 characters",
                ));
            }
            Some(_) => {}
        }
        match &self.encryption_key {
            None => {
                return Err(ConfigError::invalid(
                    "egress.encryption_key",
                    "is required (32 bytes, base64; e.g. `openssl rand -base64 32`)",
                ));
            }
            Some(key) => {
                crate::crypto::SecretBox::from_base64(key.expose_secret())
                    .map_err(|e| ConfigError::invalid("egress.encryption_key", e))?;
            }
        }
        if self.retry_schedule.iter().any(Duration::is_zero) {
            return Err(ConfigError::invalid(
                "egress.retry_schedule",
                "delays must be more than 0",
            ));
        }
        if !(0.0..1.0).contains(&self.retry_jitter) {
            return Err(ConfigError::invalid(
                "egress.retry_jitter",
                "must be at least 0 and below 1",
            ));
        }
        for (key, value) in [
            (
                "egress.max_concurrent_requests",
                self.max_concurrent_requests,
            ),
            (
                "egress.default_max_in_flight",
                self.default_max_in_flight as usize,
            ),
            ("egress.dispatch_concurrency", self.dispatch_concurrency),
            ("egress.partitions", usize::from(self.partitions)),
            (
                "egress.partition_max_ack_pending",
                self.partition_max_ack_pending.max(0) as usize,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be more than 0"));
            }
        }
        if self.partitions > 1024 {
            return Err(ConfigError::invalid(
                "egress.partitions",
                "must be at most 1024",
            ));
        }
        if self.replica_timeout < Duration::from_secs(2) {
            return Err(ConfigError::invalid(
                "egress.replica_timeout",
                "must be at least 2s",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "egress.request_timeout",
                "must be more than 0",
            ));
        }
        self.console.validate()
    }

    pub fn schedule(&self) -> RetrySchedule {
        RetrySchedule {
            delays: self.retry_schedule.clone(),
            jitter: self.retry_jitter,
        }
    }

    pub fn policy(&self) -> crate::AddressPolicy {
        crate::AddressPolicy {
            allow_private_networks: self.allow_private_networks,
            allowed_subnets: self.allowed_subnets.clone(),
        }
    }

    /// How long one pull of a partition's tasks lasts: well inside `replica_timeout`, the pin's
    /// lifetime without a pull.
    pub fn pull_expiry(&self) -> Duration {
        (self.replica_timeout / 4).max(Duration::from_millis(500))
    }

    /// The broker's ack deadline for a delivery task: always longer than the request, so a slow
    /// endpoint is never sent a duplicate because of it.
    pub fn task_ack_wait(&self) -> Duration {
        self.request_timeout * 2 + Duration::from_secs(10)
    }
}
